//go:build tools

// Keeps the binaries the lab builds in this module's dependency graph.
package lab

import (
	_ "github.com/dagger/dagger/cmd/codegen"
	_ "github.com/dagger/dagger/cmd/dagger"
	_ "github.com/dagger/dagger/cmd/dialstdio"
	_ "github.com/dagger/dagger/cmd/dnsname"
	_ "github.com/dagger/dagger/cmd/engine"
	_ "github.com/dagger/dagger/cmd/init"
)
