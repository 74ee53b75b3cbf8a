// Package distconsts gives the engine the locations of the lab's host layout.
// The engine runs as a host process, so its helpers live where `scripts/lab` installs them.
package distconsts

const (
	EngineContainerName    = "dagger-engine-lab"
	DefaultEngineSockAddr  = "unix:///run/dagger/engine.sock"
	EngineDefaultStateDir  = "/var/lib/dagger"
	EngineCustomCACertsDir = "/usr/local/share/ca-certificates"

	EngineContainerBuiltinContentDir   = "/usr/local/share/dagger/content"
	GoSDKManifestDigestEnvName         = "DAGGER_GO_SDK_MANIFEST_DIGEST"
	PythonSDKManifestDigestEnvName     = "DAGGER_PYTHON_SDK_MANIFEST_DIGEST"
	TypescriptSDKManifestDigestEnvName = "DAGGER_TYPESCRIPT_SDK_MANIFEST_DIGEST"

	RuncPath       = "/usr/local/bin/runc"
	DaggerInitPath = "/usr/local/bin/dagger-init"

	OCIVersionAnnotation = "org.opencontainers.image.version"

	// Images the engine names for its terminal and tests; the lab seeds no Alpine,
	// so they point at the lab's busybox and Debian images.
	AlpineVersion = "3.22.1"
	AlpineImage   = "busybox:1.36"
	BusyboxImage  = "busybox:1.36"
	GolangImage   = "golang:1.25-bookworm"
)
