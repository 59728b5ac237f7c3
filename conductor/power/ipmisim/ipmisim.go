// Package ipmisim runs OpenIPMI's BMC simulator, ipmi_sim, for tests: one
// simulated node's BMC on a free loopback UDP port, with the project's own
// lan.conf and emulator commands, and a chassis_control hook that keeps
// the node's power and boot device in a directory (or starts and stops a
// QEMU VM when that directory holds a "vm" program, for end-to-end tests).
//
// Start skips the test when ipmi_sim is not installed (fails under
// CI=true) and stops the simulator, and anything it started, when the test
// ends. The package is imported only from tests; scripts/ipmi-sim.sh runs
// the same configuration by hand.
package ipmisim

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/internal/peertest"
)

//go:embed testdata/lan.conf.tmpl testdata/bmc.emu testdata/chassis-control.sh
var files embed.FS

// Default credentials of the administrator user.
const (
	DefaultUser     = "admin"
	DefaultPassword = "password"
)

// CipherSuite is the strongest lanplus cipher suite ipmi_sim offers (it has
// no 17); pin it, or each session costs ~10 s of negotiation.
const CipherSuite = 3

// Options configure a simulator. Zero values pick the defaults.
type Options struct {
	// User and Password of the administrator (admin / password).
	User, Password string
	// NodeDir holds the node's state (see testdata/chassis-control.sh);
	// a fresh temporary directory by default. Put a "vm" program there to
	// have power on start a VM.
	NodeDir string
	// On starts the node powered on.
	On bool
}

// Sim is a running ipmi_sim.
type Sim struct {
	Addr     string
	Port     int
	User     string
	Password string
	// NodeDir is the node's state directory, StateDir ipmi_sim's own.
	NodeDir  string
	StateDir string

	t      testing.TB
	cmd    *exec.Cmd
	logf   string
	waited chan struct{}
	stop   sync.Once
}

// Start runs ipmi_sim on a free loopback port and waits until it answers
// an RMCP ping.
func Start(t testing.TB, o Options) *Sim {
	t.Helper()
	bin := peertest.Binary(t, "ipmi_sim", "openipmi")
	if o.User == "" {
		o.User = DefaultUser
	}
	if o.Password == "" {
		o.Password = DefaultPassword
	}
	if o.NodeDir == "" {
		o.NodeDir = t.TempDir()
	}
	stateDir := t.TempDir()
	for _, p := range []string{o.NodeDir, stateDir} {
		if strings.ContainsAny(p, " \t\"") {
			t.Fatalf("ipmisim: path %q has blanks or quotes, which ipmi_sim's config cannot carry", p)
		}
	}
	if err := os.MkdirAll(o.NodeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.On {
		if err := os.WriteFile(filepath.Join(o.NodeDir, "power"), []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hook := filepath.Join(stateDir, "chassis-control.sh")
	emu := filepath.Join(stateDir, "bmc.emu")
	for src, dst := range map[string]string{"testdata/chassis-control.sh": hook, "testdata/bmc.emu": emu} {
		b, err := files.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	var lastErr error
	for range 5 { // the free port may be taken between probe and bind
		port, err := freeUDPPort()
		if err != nil {
			t.Fatal(err)
		}
		s := &Sim{Addr: "127.0.0.1", Port: port, User: o.User, Password: o.Password, NodeDir: o.NodeDir, StateDir: stateDir, t: t}
		if lastErr = s.start(bin, hook, emu); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("ipmisim: start ipmi_sim: %v", lastErr)
	return nil
}

func (s *Sim) start(bin, hook, emu string) error {
	conf, err := files.ReadFile("testdata/lan.conf.tmpl")
	if err != nil {
		return err
	}
	lan := strings.NewReplacer("@ADDR@", s.Addr, "@PORT@", strconv.Itoa(s.Port), "@HOOK@", hook,
		"@NODE_DIR@", s.NodeDir, "@USER@", s.User, "@PASSWORD@", s.Password).Replace(string(conf))
	lanPath := filepath.Join(s.StateDir, "lan.conf")
	if err := os.WriteFile(lanPath, []byte(lan), 0o600); err != nil {
		return err
	}
	s.logf = filepath.Join(s.StateDir, "ipmi_sim.log")
	logw, err := os.Create(s.logf)
	if err != nil {
		return err
	}
	defer logw.Close()
	// -n: no console on stdin; ipmi_sim logs to syslog, so its output
	// file only shows start-up errors.
	cmd := exec.Command(bin, "-c", lanPath, "-f", emu, "-s", s.StateDir, "-n")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, logw, logw
	cmd.Dir = s.StateDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Stop ends the hook's children too
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	s.waited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.waited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-s.waited:
			return fmt.Errorf("ipmi_sim exited at start: %s", s.output())
		default:
		}
		if ping(s.Addr, s.Port, 100*time.Millisecond) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("ipmi_sim did not answer an RMCP ping on %s:%d within 10s: %s", s.Addr, s.Port, s.output())
		}
	}
}

// Stop ends the simulator and any VM its hook started; the port then
// refuses packets. Safe to call more than once.
func (s *Sim) Stop() {
	s.stop.Do(func() {
		s.kill()
		if s.t.Failed() {
			s.t.Logf("ipmi_sim output: %s\nchassis hook calls:\n%s", s.output(), strings.Join(s.HookCalls(), "\n"))
		}
	})
}

func (s *Sim) kill() {
	if p, err := os.ReadFile(filepath.Join(s.NodeDir, "vm.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(p))); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGCONT) // in case it was paused
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.waited:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.waited
	}
}

// Pause freezes the simulator (SIGSTOP), as a hung BMC; resume thaws it.
func (s *Sim) Pause() (resume func()) {
	_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGSTOP)
	return func() { _ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGCONT) }
}

// DriverInfo is the node driver_info reaching this BMC as the
// administrator, with the cipher suite pinned.
func (s *Sim) DriverInfo() map[string]any {
	return map[string]any{
		"ipmi_address":      s.Addr,
		"ipmi_port":         float64(s.Port),
		"ipmi_username":     s.User,
		"ipmi_password":     s.Password,
		"ipmi_cipher_suite": float64(CipherSuite),
	}
}

// On reports the node's power as the hook records it (no VM).
func (s *Sim) On() bool {
	b, _ := os.ReadFile(filepath.Join(s.NodeDir, "power"))
	return strings.TrimSpace(string(b)) == "1"
}

// IgnoreACPI makes the node ignore soft power off.
func (s *Sim) IgnoreACPI(ignore bool) {
	p := filepath.Join(s.NodeDir, "ignore-acpi")
	if ignore {
		_ = os.WriteFile(p, nil, 0o644)
	} else {
		_ = os.Remove(p)
	}
}

// HookCalls returns the chassis_control invocations so far ("get power",
// "set boot pxe").
func (s *Sim) HookCalls() []string {
	b, _ := os.ReadFile(filepath.Join(s.NodeDir, "calls.log"))
	return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
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

func (s *Sim) output() string {
	b, _ := os.ReadFile(s.logf)
	return strings.TrimSpace(string(b))
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// ping sends an RMCP/ASF presence ping and waits for the pong.
func ping(addr string, port int, wait time.Duration) error {
	c, err := net.Dial("udp4", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	defer c.Close()
	// RMCP v1.0, seq 0xff (no ack), class ASF; IANA 4542, type 0x80 ping.
	if _, err := c.Write([]byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x00, 0x00, 0x00}); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			time.Sleep(wait) // not bound yet; don't spin
		}
		return err
	}
	if n < 9 || !bytes.Equal(buf[:4], []byte{0x06, 0x00, 0xff, 0x06}) || buf[8] != 0x40 {
		return fmt.Errorf("not an RMCP pong: % x", buf[:n])
	}
	return nil
}
