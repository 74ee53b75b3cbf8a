//go:build tools

// Keeps the cosign CLI in this module's dependency graph.
package lab

import (
	_ "github.com/sigstore/cosign/v2/cmd/cosign"
)
