// Package peertest decides what a test does when a real peer it needs (a
// program from a Debian package, a database, root privileges) is missing:
// skip on a developer's machine, fail under CI=true, so a missing install
// step in .ci/run can never pass silently.
package peertest

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test, or fails it under CI, explaining what is missing
// and which step installs it.
func Missing(t testing.TB, what, install string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true but %s is missing: %s", what, install)
	}
	t.Skipf("%s is missing (%s); skipping", what, install)
}

// Binary returns the path of a program, or skips/fails the test when it is
// not installed.
func Binary(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "program "+name, "apt-get install "+pkg+" (scripts/install-deps.sh)")
	}
	return p
}

// Root skips/fails the test unless it runs as root.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root privileges ("+why+")", "run the tests as root, as .ci/run does")
	}
}
