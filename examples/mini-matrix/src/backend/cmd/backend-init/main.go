// Command backend-init stands in for the database initialisation job:
// it prints what it would do and exits.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	line := fmt.Sprintf("backend-init %s %s/%s", version, runtime.GOOS, runtime.GOARCH)
	if *showVersion {
		fmt.Println(line)
		return
	}
	host := os.Getenv("POSTGRES_HOST")
	if host == "" {
		host = "postgres"
	}
	fmt.Printf("%s: would initialise database on %s; nothing to do\n", line, host)
}
