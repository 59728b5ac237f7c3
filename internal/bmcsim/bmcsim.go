// Package bmcsim runs OpenIPMI's BMC simulator, ipmi_sim, as one
// simulated node's BMC: lanplus with cipher suite 3, an administrator
// user, and a chassis_control hook (chassis-control.sh) that keeps the
// node's power and boot device in a node directory, or starts and stops
// a QEMU VM when that directory holds a "vm" program.
//
// Tests use it through conductor/power/ipmisim (which picks ports and
// cleans up per test); the virtual-node rig (internal/vmrig) runs it
// inside a network namespace, next to the VM it powers; scripts/ipmi-sim.sh
// runs the same files by hand.
package bmcsim

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
	"time"
)

//go:embed lan.conf.tmpl bmc.emu chassis-control.sh
var files embed.FS

// Default credentials of the administrator user.
const (
	DefaultUser     = "admin"
	DefaultPassword = "password"
)

// CipherSuite is the strongest lanplus cipher suite ipmi_sim offers (it has
// no 17); pin it, or each session costs ~10 s of negotiation.
const CipherSuite = 3

// DialFunc opens a connection, e.g. from inside a network namespace.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Options configure a simulator.
type Options struct {
	// Binary is ipmi_sim's path ("ipmi_sim" on PATH if empty).
	Binary string
	// Addr and Port the BMC listens on (UDP).
	Addr string
	Port int
	// User and Password of the administrator (admin / password).
	User, Password string
	// NodeDir holds the node's state (see chassis-control.sh); StateDir
	// ipmi_sim's own files. Neither may contain blanks or quotes.
	NodeDir, StateDir string
	// On starts the node powered on (when it has no vm program).
	On bool
	// Wrap prefixes the command line, e.g. "ip netns exec NS".
	Wrap []string
	// Dial reaches the BMC for the readiness ping (net.Dialer by default).
	Dial DialFunc
}

// Sim is a running ipmi_sim.
type Sim struct {
	Addr     string
	Port     int
	User     string
	Password string
	NodeDir  string
	StateDir string

	cmd    *exec.Cmd
	logf   string
	waited chan struct{}
	stop   sync.Once
}

// Start writes the configuration and runs ipmi_sim, and returns once it
// answers an RMCP ping (or fails within 10 s).
func Start(ctx context.Context, o Options) (*Sim, error) {
	if o.Binary == "" {
		o.Binary = "ipmi_sim"
	}
	if o.User == "" {
		o.User = DefaultUser
	}
	if o.Password == "" {
		o.Password = DefaultPassword
	}
	if o.Dial == nil {
		o.Dial = (&net.Dialer{}).DialContext
	}
	for _, p := range []string{o.NodeDir, o.StateDir} {
		if p == "" || strings.ContainsAny(p, " \t\"\n") {
			return nil, fmt.Errorf("bmcsim: directory %q is empty or has blanks or quotes, which ipmi_sim's config cannot carry", p)
		}
	}
	for _, v := range []string{o.User, o.Password} {
		if strings.ContainsAny(v, " \t\"\n") {
			return nil, errors.New("bmcsim: user and password may not contain blanks or quotes")
		}
	}
	for _, d := range []string{o.NodeDir, o.StateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if o.On {
		if err := os.WriteFile(filepath.Join(o.NodeDir, "power"), []byte("1\n"), 0o644); err != nil {
			return nil, err
		}
	}
	hook := filepath.Join(o.StateDir, "chassis-control.sh")
	emu := filepath.Join(o.StateDir, "bmc.emu")
	for src, dst := range map[string]string{"chassis-control.sh": hook, "bmc.emu": emu} {
		b, err := files.ReadFile(src)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return nil, err
		}
	}
	conf, err := files.ReadFile("lan.conf.tmpl")
	if err != nil {
		return nil, err
	}
	lan := strings.NewReplacer("@ADDR@", o.Addr, "@PORT@", strconv.Itoa(o.Port), "@HOOK@", hook,
		"@NODE_DIR@", o.NodeDir, "@USER@", o.User, "@PASSWORD@", o.Password).Replace(string(conf))
	lanPath := filepath.Join(o.StateDir, "lan.conf")
	if err := os.WriteFile(lanPath, []byte(lan), 0o600); err != nil {
		return nil, err
	}
	s := &Sim{Addr: o.Addr, Port: o.Port, User: o.User, Password: o.Password, NodeDir: o.NodeDir, StateDir: o.StateDir,
		logf: filepath.Join(o.StateDir, "ipmi_sim.log")}
	logw, err := os.Create(s.logf)
	if err != nil {
		return nil, err
	}
	defer logw.Close()
	// -n: no console on stdin; ipmi_sim logs to syslog, so its output
	// file only shows start-up errors.
	argv := append(append([]string{}, o.Wrap...), o.Binary, "-c", lanPath, "-f", emu, "-s", o.StateDir, "-n")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, logw, logw
	cmd.Dir = o.StateDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Stop ends the hook's children too
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bmcsim: start ipmi_sim: %w", err)
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
			return nil, fmt.Errorf("bmcsim: ipmi_sim exited at start: %s", s.Output())
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		default:
		}
		if Ping(ctx, o.Dial, s.Addr, s.Port, 100*time.Millisecond) == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("bmcsim: ipmi_sim did not answer an RMCP ping on %s:%d within 10s: %s", s.Addr, s.Port, s.Output())
		}
	}
}

// Stop ends the simulator and any VM its hook started; the port then
// refuses packets. Safe to call more than once.
func (s *Sim) Stop() {
	s.stop.Do(func() {
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
	})
}

// Done is closed when ipmi_sim has exited.
func (s *Sim) Done() <-chan struct{} { return s.waited }

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

// Output is what ipmi_sim printed (start-up errors only).
func (s *Sim) Output() string {
	b, _ := os.ReadFile(s.logf)
	return strings.TrimSpace(string(b))
}

// Ping sends an RMCP/ASF presence ping and waits for the pong.
func Ping(ctx context.Context, dial DialFunc, addr string, port int, wait time.Duration) error {
	c, err := dial(ctx, "udp4", net.JoinHostPort(addr, strconv.Itoa(port)))
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
