// The lab's own stand-in for github.com/dagger/dagger/engine/distconsts, which the Go
// module proxy does not serve. It holds only the paths and names the lab's engine uses.
module github.com/dagger/dagger/engine/distconsts

go 1.24
