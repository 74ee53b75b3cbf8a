// Command backend is a tiny HTTP/1.0 server with /healthz and /version.
//
// It uses the package net rather than net/http so that a cold cross-compile
// stays short; it only needs the Go 1.19 standard library.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"runtime"
	"strings"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func versionLine() string {
	return fmt.Sprintf("backend %s %s/%s", version, runtime.GOOS, runtime.GOARCH)
}

func respond(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	request, err := r.ReadString('\n')
	if err != nil {
		return
	}
	// Read the headers up to the blank line so closing does not reset the client.
	for {
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(line) == "" {
			break
		}
	}
	status, body := "404 Not Found", "not found\n"
	if f := strings.Fields(request); len(f) >= 2 {
		switch f[1] {
		case "/healthz":
			status, body = "200 OK", "ok\n"
		case "/version":
			status, body = "200 OK", versionLine()+"\n"
		}
	}
	fmt.Fprintf(c, "HTTP/1.0 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, len(body), body)
}

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	listen := flag.String("listen", ":8082", "address to listen on")
	flag.Parse()
	if *showVersion {
		fmt.Println(versionLine())
		return
	}
	// Secrets are runtime configuration: read from the environment, never built in.
	jwt := "unset"
	if os.Getenv("JWT_SECRET") != "" {
		jwt = "set"
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("%s listening on %s (JWT_SECRET %s)", versionLine(), *listen, jwt)
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go respond(c)
	}
}
