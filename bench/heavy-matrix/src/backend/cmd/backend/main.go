// The heavy-matrix backend: an HTTP API on gin (as AI-Infra-Matrix's backend), with
// module downloads at build time from the Go module proxy.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"

	"github.com/gin-gonic/gin"
	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"
)

var version = "dev"

type info struct {
	Version  string `json:"version" yaml:"version"`
	Platform string `json:"platform" yaml:"platform"`
}

func main() {
	listen := flag.String("listen", ":8082", "address to listen on")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	me := info{Version: version, Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if *showVersion {
		out, _ := yaml.Marshal(me)
		fmt.Print(string(out))
		return
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	r.GET("/version", func(c *gin.Context) { c.JSON(http.StatusOK, me) })
	logrus.WithField("listen", *listen).Info("backend starting")
	if err := r.Run(*listen); err != nil {
		logrus.Error(err)
		os.Exit(1)
	}
}
