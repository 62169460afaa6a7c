// Package version holds the build identity of Sendense binaries, injected at link time.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version and Commit are set with
// -ldflags "-X github.com/sendense/sendense/shared/version.Version=v1.2.3 -X ...Commit=abc123".
var (
	Version = "dev"
	Commit  = ""
)

// Info describes the running binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"go_version"`
}

// Get returns the version of the running binary. When Commit was not injected it falls back to
// the VCS revision that the Go toolchain stamped into the binary, if any.
func Get() Info {
	commit := Commit
	if commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					commit = s.Value[:12]
				}
			}
		}
	}
	return Info{Version: Version, Commit: commit, GoVersion: runtime.Version()}
}

// String formats the version for `version` subcommands: "sendense-hub v1.2.3 (abc123, go1.26.8)".
func (i Info) String() string {
	if i.Commit == "" {
		return fmt.Sprintf("%s (%s)", i.Version, i.GoVersion)
	}
	return fmt.Sprintf("%s (%s, %s)", i.Version, i.Commit, i.GoVersion)
}
