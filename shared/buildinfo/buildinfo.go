// Package buildinfo reports the version and commit of the running binary
// from the Go build information, for logs, the agent's heartbeat and
// User-Agent strings.
package buildinfo

import (
	"runtime/debug"
)

// Version returns the module version, or the VCS revision for a
// development build, or "devel".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// UserAgent returns the User-Agent for a program of Ingot's.
func UserAgent(program string) string { return "ingot-" + program + "/" + Version() }
