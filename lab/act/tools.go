//go:build tools

// Keeps the act CLI in this module's dependency graph.
package lab

import (
	_ "github.com/nektos/act"
)
