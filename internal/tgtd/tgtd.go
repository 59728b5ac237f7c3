// Package tgtd runs a private Linux tgtd (Debian package tgt) for tests
// and benchmarks: a loopback portal on a free port, a private control port
// (-C N) so concurrent test packages never share a daemon, targets and
// file-backed LUNs configured with tgtadm, every call under a timeout, and
// the clean shutdown sequence tgtd needs (SIGTERM alone does not stop it).
//
// It is test support: only _test.go files import it. Missing programs or
// privileges skip the test, or fail it under CI=true (internal/peertest).
package tgtd

import (
	"bytes"
	"context"
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

// Daemon is one running tgtd.
type Daemon struct {
	// Portal is the loopback host:port tgtd listens on.
	Portal string
	// Control is the private control port number (-C).
	Control int
	dir     string
	tgtd    string
	tgtadm  string

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	extra []string
}

// Start runs tgtd as root with a loopback portal; extra are additional
// tgtd arguments. The daemon is stopped when tb's test ends unless the
// caller stops it first.
func Start(tb testing.TB, extra ...string) *Daemon {
	tb.Helper()
	d := New(tb, extra...)
	tb.Cleanup(d.Stop)
	return d
}

// New is Start without the cleanup registration (for TestMain-scoped
// daemons); call Stop.
func New(tb testing.TB, extra ...string) *Daemon {
	tb.Helper()
	tgtdPath := peertest.Binary(tb, "tgtd", "tgt")
	tgtadm := peertest.Binary(tb, "tgtadm", "tgt")
	peertest.Root(tb, "tgtd needs root")
	dir, err := os.MkdirTemp("", "ingot-tgtd-")
	if err != nil {
		tb.Fatal(err)
	}
	d := &Daemon{dir: dir, tgtd: tgtdPath, tgtadm: tgtadm}
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	// The control port only names tgtd's management socket (tgtd accepts
	// 0..32767); derive it from the portal's free TCP port, which is unique
	// among running daemons.
	d.Control = 1 + port%32767
	d.Portal = "127.0.0.1:" + strconv.Itoa(port)
	if err := d.start(extra); err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("start tgtd: %v", err)
	}
	return d
}

// Dir is a scratch directory removed with the daemon.
func (d *Daemon) Dir() string { return d.dir }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (d *Daemon) start(extra []string) error {
	d.extra = extra
	args := append([]string{"-f", "-C", strconv.Itoa(d.Control), "--iscsi", "portal=" + d.Portal}, extra...)
	cmd := exec.Command(d.tgtd, args...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("tgtd exited at start: %s", log.String())
		default:
		}
		if _, err := d.adm("--op", "show", "--mode", "system"); err == nil {
			if c, err := net.DialTimeout("tcp", d.Portal, time.Second); err == nil {
				c.Close()
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.kill()
	return fmt.Errorf("tgtd did not come up on %s: %s", d.Portal, log.String())
}

// adm runs tgtadm against this daemon with a timeout.
func (d *Daemon) adm(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"-C", strconv.Itoa(d.Control)}, args...)
	out, err := exec.CommandContext(ctx, d.tgtadm, full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("tgtadm %s: %v: %s", strings.Join(full, " "), err, out)
	}
	return string(out), nil
}

// Adm runs tgtadm and fails tb on error.
func (d *Daemon) Adm(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := d.adm(args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Target configures target tid named iqn, open to every initiator, with
// one new zero-filled file-backed LUN per size (LUN 1, 2, ...). It returns
// the backing file paths.
func (d *Daemon) Target(tb testing.TB, tid int, iqn string, sizes ...int64) []string {
	tb.Helper()
	var files []string
	for i, size := range sizes {
		f := filepath.Join(d.dir, fmt.Sprintf("t%d-lun%d.img", tid, i+1))
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.Truncate(f, size); err != nil {
			tb.Fatal(err)
		}
		files = append(files, f)
	}
	d.Attach(tb, tid, iqn, files...)
	return files
}

// Attach configures target tid named iqn over existing backing files
// (LUN 1, 2, ...), open to every initiator.
func (d *Daemon) Attach(tb testing.TB, tid int, iqn string, files ...string) {
	tb.Helper()
	t := strconv.Itoa(tid)
	d.Adm(tb, "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", t, "-T", iqn)
	for i, f := range files {
		d.Adm(tb, "--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", t, "--lun", strconv.Itoa(i+1), "-b", f)
	}
	d.Adm(tb, "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", t, "-I", "ALL")
}

// Update sets an iSCSI parameter of target tid (InitialR2T, MaxBurstLength, ...).
func (d *Daemon) Update(tb testing.TB, tid int, name, value string) {
	tb.Helper()
	d.Adm(tb, "--lld", "iscsi", "--op", "update", "--mode", "target", "--tid", strconv.Itoa(tid), "--name", name, "--value", value)
}

// SetNOP makes tgtd ping idle initiators every interval seconds and drop
// them after count unanswered pings.
func (d *Daemon) SetNOP(tb testing.TB, tid, interval, count int) {
	tb.Helper()
	t := strconv.Itoa(tid)
	d.Adm(tb, "--op", "update", "--mode", "target", "--tid", t, "-n", "nop_interval", "-v", strconv.Itoa(interval))
	d.Adm(tb, "--op", "update", "--mode", "target", "--tid", t, "-n", "nop_count", "-v", strconv.Itoa(count))
}

// CHAP requires CHAP login with user and password on target tid.
func (d *Daemon) CHAP(tb testing.TB, tid int, user, password string) {
	tb.Helper()
	d.Adm(tb, "--lld", "iscsi", "--op", "new", "--mode", "account", "--user", user, "--password", password)
	d.Adm(tb, "--lld", "iscsi", "--op", "bind", "--mode", "account", "--tid", strconv.Itoa(tid), "--user", user)
}

// Sessions lists the I_T nexus lines of target tid (empty when no
// initiator is logged in).
func (d *Daemon) Sessions(tb testing.TB, tid int) []string {
	tb.Helper()
	out := d.Adm(tb, "--lld", "iscsi", "--op", "show", "--mode", "target")
	var nexus []string
	in := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Target ") {
			in = strings.HasPrefix(line, fmt.Sprintf("Target %d:", tid))
		}
		if in && strings.Contains(line, "I_T nexus: ") {
			nexus = append(nexus, strings.TrimSpace(line))
		}
	}
	return nexus
}

// Kill stops tgtd abruptly (SIGKILL), as a crash would.
func (d *Daemon) Kill() { d.kill() }

func (d *Daemon) kill() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// Restart starts a fresh tgtd after Kill on the same portal; targets must
// be configured again (backing files in Dir survive).
func (d *Daemon) Restart(tb testing.TB) {
	tb.Helper()
	d.kill()
	if err := d.start(d.extra); err != nil {
		tb.Fatalf("restart tgtd: %v", err)
	}
}

// Stop shuts tgtd down cleanly: delete targets, go offline, delete the
// system; then SIGKILL if it is still running. It removes the scratch
// directory.
func (d *Daemon) Stop() {
	d.mu.Lock()
	running := d.cmd != nil
	d.mu.Unlock()
	if running {
		out, _ := d.adm("--lld", "iscsi", "--op", "show", "--mode", "target")
		for _, line := range strings.Split(out, "\n") {
			var tid int
			if _, err := fmt.Sscanf(line, "Target %d:", &tid); err == nil {
				_, _ = d.adm("--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", strconv.Itoa(tid), "--force")
			}
		}
		_, _ = d.adm("--op", "update", "--mode", "sys", "--name", "State", "-v", "offline")
		_, _ = d.adm("--op", "delete", "--mode", "system")
		d.mu.Lock()
		done := d.done
		d.mu.Unlock()
		select {
		case <-done:
			d.mu.Lock()
			d.cmd = nil
			d.mu.Unlock()
		case <-time.After(5 * time.Second):
		}
	}
	d.kill()
	os.RemoveAll(d.dir)
}
