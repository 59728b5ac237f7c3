// Package vmrig is the virtual-node rig: a network namespace with a
// bridge (the provisioning network, with no uplink, so nothing a test does
// leaves it), the real conductor binary serving DHCP, TFTP, boot HTTP and
// its API on that bridge, and virtual nodes: a QEMU VM on a tap device
// with a virtio disk file, powered and boot-steered by its own ipmi_sim
// BMC, whose chassis hook starts and stops the VM. The conductor drives
// the nodes exactly as it drives physical machines: IPMI, PXE, the agent.
//
// The end-to-end tests (package e2e) and `make demo` (internal/cmd/demo)
// build on it. It needs root, iproute2, QEMU (always -accel tcg -cpu max
// here: the machines' /dev/kvm is a broken nested backend; Options.Accel
// picks KVM on real hardware), ipmi_sim, netcat, and OVMF for UEFI nodes.
package vmrig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ingot-dev/ingot/internal/netns"
)

// Options configure a rig.
type Options struct {
	// Dir is the rig's work directory (node disks, logs, conductor state);
	// it may not contain blanks or quotes.
	Dir string
	// Name prefixes the namespace's name ("ingot-vm").
	Name string
	// Net is the provisioning network's first three octets ("10.99.0"):
	// the bridge is .1, DHCP hands out .100-.199.
	Net string
	// Accel is QEMU's accelerator: "tcg" (default) or "kvm".
	Accel string
	Log   *slog.Logger
}

// Rig is a running namespace and what runs in it.
type Rig struct {
	NS       string // the namespace's name
	Dir      string
	ServerIP string // the bridge's address, where the conductor listens
	Bridge   string
	net      string
	accel    string
	log      *slog.Logger

	mu     sync.Mutex
	procs  []*Process
	nodes  []*Node
	closed bool
}

// Required lists the programs a rig needs, with the Debian packages that
// have them.
var Required = []struct{ Program, Package string }{
	{"ip", "iproute2"}, {"qemu-system-x86_64", "qemu-system-x86"}, {"ipmi_sim", "openipmi"},
	{"nc", "netcat-openbsd"},
}

// Missing returns the required programs (and packages) not installed,
// as "program (package)".
func Missing(uefi bool) []string {
	var out []string
	for _, r := range Required {
		if _, err := exec.LookPath(r.Program); err != nil {
			out = append(out, r.Program+" ("+r.Package+")")
		}
	}
	for _, f := range []string{"/usr/lib/ipxe/qemu/efi-virtio.rom"} {
		if _, err := os.Stat(f); err != nil {
			out = append(out, f+" (ipxe-qemu)")
		}
	}
	if uefi {
		for _, f := range []string{OVMFCode, OVMFVars} {
			if _, err := os.Stat(f); err != nil {
				out = append(out, f+" (ovmf)")
			}
		}
	}
	return out
}

// New creates the namespace with its bridge. Close removes everything.
func New(ctx context.Context, o Options) (*Rig, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("vmrig: network namespaces, tap devices and the DHCP port need root")
	}
	if o.Dir == "" || strings.ContainsAny(o.Dir, " \t\"'\n") {
		return nil, fmt.Errorf("vmrig: work directory %q is empty or has blanks or quotes", o.Dir)
	}
	if o.Name == "" {
		o.Name = "ingot-vm"
	}
	if o.Net == "" {
		o.Net = "10.99.0"
	}
	if ip := net.ParseIP(o.Net + ".1").To4(); ip == nil {
		return nil, fmt.Errorf("vmrig: network %q is not three IPv4 octets", o.Net)
	}
	if o.Accel == "" {
		o.Accel = "tcg"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &Rig{NS: fmt.Sprintf("%s-%d", o.Name, os.Getpid()), Dir: dir, ServerIP: o.Net + ".1", Bridge: "br0",
		net: o.Net, accel: o.Accel, log: o.Log}
	if err := r.run(ctx, "ip", "netns", "add", r.NS); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", r.Bridge, "type", "bridge"},
		{"addr", "add", r.ServerIP + "/24", "dev", r.Bridge},
		{"link", "set", r.Bridge, "up"},
	}
	for _, s := range steps {
		if err := r.run(ctx, "ip", append([]string{"-n", r.NS}, s...)...); err != nil {
			r.Close()
			return nil, err
		}
	}
	// No duplicate address detection: nothing else is on this network,
	// and iPXE's IPv6 configuration need not wait for it.
	_ = r.Command(ctx, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0").Run()
	r.log.Info("network namespace ready", "ns", r.NS, "bridge", r.Bridge, "address", r.ServerIP)
	return r, nil
}

func (r *Rig) run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Command returns a command that runs inside the namespace.
func (r *Rig) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", r.NS, name}, args...)...)
}

// Wrap is the command prefix that runs a program inside the namespace.
func (r *Rig) Wrap() []string { return []string{"ip", "netns", "exec", r.NS} }

// DialContext opens a connection from inside the namespace; the socket
// stays there whichever goroutine then uses it.
func (r *Rig) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := r.inNS(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen opens a listener inside the namespace (for servers a test runs
// on the provisioning network, like a faulty image server).
func (r *Rig) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := r.inNS(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// inNS runs f on an OS thread that entered the namespace.
func (r *Rig) inNS(f func() error) error { return netns.Do(r.NS, f) }

// HTTPClient returns a client whose connections start inside the
// namespace, to reach the conductor there.
func (r *Rig) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: r.DialContext, MaxIdleConnsPerHost: 4}}
}

// Process is a program the rig started.
type Process struct {
	Name string
	Log  string // its output
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the process's exit error, once Done.
func (p *Process) Err() error { return p.err }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Start runs argv inside the namespace with output to dir/name.log.
func (r *Rig) Start(name string, argv []string) (*Process, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("vmrig: closed")
	}
	logPath := filepath.Join(r.Dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", r.NS}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	r.procs = append(r.procs, p)
	return p, nil
}

// stop ends p: SIGTERM, then SIGKILL to its process group after grace.
func (p *Process) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Close stops the nodes, the processes (last started first) and whatever
// else still runs in the namespace, then deletes it. Safe to call twice.
func (r *Rig) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	nodes, procs := r.nodes, r.procs
	r.mu.Unlock()
	for _, n := range nodes {
		n.stop()
	}
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(15 * time.Second)
	}
	if out, err := exec.Command("ip", "netns", "pids", r.NS).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	var err error
	for range 20 { // the kernel frees the namespace's devices asynchronously
		if err = r.run(context.Background(), "ip", "netns", "del", r.NS); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.log.Info("network namespace removed", "ns", r.NS)
	return err
}
