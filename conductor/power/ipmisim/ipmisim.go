// Package ipmisim runs OpenIPMI's BMC simulator, ipmi_sim, for tests: one
// simulated node's BMC on a free loopback UDP port, with the project's own
// configuration (package bmcsim), whose chassis_control hook keeps the
// node's power and boot device in a directory (or starts and stops a QEMU
// VM when that directory holds a "vm" program).
//
// Start skips the test when ipmi_sim is not installed (fails under
// CI=true) and stops the simulator, and anything it started, when the test
// ends. The package is imported only from tests.
package ipmisim

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/ingot-dev/ingot/internal/bmcsim"
	"github.com/ingot-dev/ingot/internal/peertest"
)

// Default credentials of the administrator user.
const (
	DefaultUser     = bmcsim.DefaultUser
	DefaultPassword = bmcsim.DefaultPassword
)

// CipherSuite is the strongest lanplus cipher suite ipmi_sim offers (it has
// no 17); pin it, or each session costs ~10 s of negotiation.
const CipherSuite = bmcsim.CipherSuite

// Options configure a simulator. Zero values pick the defaults.
type Options struct {
	// User and Password of the administrator (admin / password).
	User, Password string
	// NodeDir holds the node's state (see internal/bmcsim's
	// chassis-control.sh); a fresh temporary directory by default. Put a
	// "vm" program there to have power on start a VM.
	NodeDir string
	// On starts the node powered on.
	On bool
}

// Sim is a running ipmi_sim, stopped when the test ends.
type Sim struct {
	*bmcsim.Sim
	t testing.TB
}

// Start runs ipmi_sim on a free loopback port and waits until it answers
// an RMCP ping.
func Start(t testing.TB, o Options) *Sim {
	t.Helper()
	bin := peertest.Binary(t, "ipmi_sim", "openipmi")
	if o.NodeDir == "" {
		o.NodeDir = t.TempDir()
	}
	stateDir := t.TempDir()
	var lastErr error
	for range 5 { // the free port may be taken between probe and bind
		port, err := freeUDPPort()
		if err != nil {
			t.Fatal(err)
		}
		s, err := bmcsim.Start(context.Background(), bmcsim.Options{Binary: bin, Addr: "127.0.0.1", Port: port,
			User: o.User, Password: o.Password, NodeDir: o.NodeDir, StateDir: stateDir, On: o.On})
		if err == nil {
			sim := &Sim{Sim: s, t: t}
			t.Cleanup(sim.Stop)
			return sim
		}
		lastErr = err
	}
	t.Fatalf("ipmisim: %v", lastErr)
	return nil
}

// Stop ends the simulator and any VM its hook started, and logs what it
// saw when the test failed. Safe to call more than once.
func (s *Sim) Stop() {
	s.Sim.Stop()
	if s.t.Failed() {
		s.t.Logf("ipmi_sim output: %s\nchassis hook calls:\n%s", s.Output(), strings.Join(s.HookCalls(), "\n"))
	}
}

// Ipmitool runs ipmitool against this BMC (lanplus, cipher suite 3, the
// administrator) and returns its combined output.
func (s *Sim) Ipmitool(ctx context.Context, args ...string) (string, error) {
	s.t.Helper()
	bin := peertest.Binary(s.t, "ipmitool", "ipmitool")
	full := append([]string{"-I", "lanplus", "-C", strconv.Itoa(CipherSuite), "-H", s.Addr, "-p", strconv.Itoa(s.Port),
		"-U", s.User, "-E"}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+s.Password) // -E: not on the command line
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}
