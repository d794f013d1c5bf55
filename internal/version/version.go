// Package version holds the release a binary was built from. Release builds set it with
//
//	go build -ldflags "-X github.com/cachewire/cachewire/internal/version.Version=v0.2.0" ./cmd/...
//
// and every binary prints it with --version.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release, set at build time; "dev" for a build from a checkout.
var Version = "dev"

// String describes the build for cmd's --version: the release, the VCS revision when Go
// recorded one, and the Go version and platform.
func String(cmd string) string {
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" && dirty {
			rev += "-dirty"
		}
	}
	if rev != "" {
		rev = " (" + rev + ")"
	}
	return fmt.Sprintf("%s %s%s %s %s/%s", cmd, Version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
