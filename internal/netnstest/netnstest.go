// Package netnstest gives tests throw-away Linux network namespaces, so
// DHCP, TFTP and PXE tests can use real sockets, real interfaces and real
// peers (udhcpc, QEMU) without touching the host's network. A namespace
// has no uplink: nothing a test sends can leave it. It is removed when
// the test ends, with every process the test started inside it.
//
// Tests that use it need root and the ip command (iproute2); New skips or,
// under CI=true, fails the test when either is missing (package peertest).
// It is imported only from tests.
package netnstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ingot-dev/ingot/internal/netns"
	"github.com/ingot-dev/ingot/internal/peertest"
)

// NS is a network namespace created for one test.
type NS struct {
	Name string
	t    testing.TB
}

var seq atomic.Int64

// New creates a namespace named prefix-<pid>-<n> with its loopback up,
// and removes it when the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	peertest.Root(t, "network namespaces")
	peertest.Binary(t, "ip", "iproute2")
	ns := &NS{Name: fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1)), t: t}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", ns.Name, err, out)
	}
	t.Cleanup(ns.remove)
	ns.IP("link", "set", "lo", "up")
	return ns
}

// remove kills what still runs in the namespace, then deletes it.
func (ns *NS) remove() {
	if out, err := exec.Command("ip", "netns", "pids", ns.Name).Output(); err == nil {
		for _, pid := range strings.Fields(string(out)) {
			if pid != strconv.Itoa(os.Getpid()) { // threads of this test may still be inside
				exec.Command("kill", "-KILL", pid).Run()
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
		ns.t.Errorf("ip netns del %s: %v\n%s", ns.Name, err, out)
	}
}

// IP runs "ip -n <ns> args..." and fails the test on error.
func (ns *NS) IP(args ...string) string {
	ns.t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		ns.t.Fatalf("ip -n %s %s: %v\n%s", ns.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Sysctl sets a sysctl inside the namespace (net.* keys are per
// namespace).
func (ns *NS) Sysctl(key, value string) {
	ns.t.Helper()
	out, err := ns.Command(context.Background(), "sysctl", "-qw", key+"="+value).CombinedOutput()
	if err != nil {
		ns.t.Fatalf("sysctl %s=%s in %s: %v\n%s", key, value, ns.Name, err, out)
	}
}

// Command returns a command that runs inside the namespace (ip netns
// exec).
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Go runs f on a new goroutine whose OS thread has entered the
// namespace: sockets f opens belong to it, and stay in it when used from
// other goroutines. The thread is never switched back; it ends with f.
// The returned channel yields f's error.
func (ns *NS) Go(f func() error) <-chan error { return netns.Go(ns.Name, f) }

// Do runs f inside the namespace and waits for it.
func (ns *NS) Do(f func() error) error { return <-ns.Go(f) }

// Veth connects two namespaces with a veth pair: a in ns, b in other.
// Both ends are left down.
func (ns *NS) Veth(a string, other *NS, b string) {
	ns.t.Helper()
	ns.IP("link", "add", a, "type", "veth", "peer", "name", b, "netns", other.Name)
}
