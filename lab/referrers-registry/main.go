// A registry that serves the OCI 1.1 referrers API, beside the lab's distribution 2.x ones
// (which do not): go-containerregistry's registry with its referrers endpoint turned on, blobs
// on disk, manifests in memory (a restart empties it; the tests push what they read).
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", ":5448", "address to listen on")
	blobs := flag.String("blobs", "", "folder for the blobs")
	flag.Parse()
	if *blobs == "" {
		log.Fatal("-blobs is required")
	}
	if err := os.MkdirAll(*blobs, 0o755); err != nil {
		log.Fatal(err)
	}
	handler := registry.New(
		registry.WithReferrersSupport(true),
		registry.WithBlobHandler(registry.NewDiskBlobHandler(*blobs)),
	)
	server := &http.Server{Addr: *addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("serving the referrers API at %s, blobs in %s", *addr, *blobs)
	log.Fatal(server.ListenAndServe())
}
