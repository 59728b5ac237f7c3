//go:build interop

package iscsitarget

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/internal/peertest"
)

// coreSuites is the subset of libiscsi's ALL family the deploy path needs
// (shared/reference/iscsi.md §3.2); gotgt v0.2.2 passes 97 of its 111
// tests.
var coreSuites = []string{"Inquiry", "Mandatory", "TestUnitReady", "ReadCapacity10", "ReadCapacity16", "Read6", "Read10",
	"Read12", "Read16", "Write10", "Write12", "Write16", "WriteVerify10", "WriteVerify12", "WriteVerify16", "Verify10",
	"Verify12", "Verify16", "Prefetch10", "Prefetch16", "ModeSense6", "NoMedia", "StartStopUnit", "iSCSIcmdsn", "iSCSITMF"}

// startFile runs a target over a new zero-filled file of size bytes.
func startFile(t *testing.T, size int64, mod func(c *Config)) (*Target, string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Listen: "127.0.0.1:0", IQN: "iqn.2024-01.dev.ingot.interop:disk", Device: img,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if mod != nil {
		mod(&cfg)
	}
	tg, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Stop() })
	return tg, img
}

func url(tg *Target, auth string) string {
	if auth != "" {
		auth += "@"
	}
	return fmt.Sprintf("iscsi://%s%s/%s/1", auth, tg.Addr(), tg.cfg.IQN)
}

// run runs a peer program under a timeout and returns its combined output.
func runPeer(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v: %w", name, timeout, ctx.Err())
	}
	return string(out), err
}

func TestInteropLibiscsiSmoke(t *testing.T) {
	ls := peertest.Binary(t, "iscsi-ls", "libiscsi-bin")
	inq := peertest.Binary(t, "iscsi-inq", "libiscsi-bin")
	rc16 := peertest.Binary(t, "iscsi-readcapacity16", "libiscsi-bin")
	tg, _ := startFile(t, 64<<20, nil)
	portal := "iscsi://" + tg.Addr().String()
	out, err := runPeer(t, 30*time.Second, ls, "-s", portal)
	if err != nil || !strings.Contains(out, "Target:"+tg.cfg.IQN) || !strings.Contains(out, "Lun:1") || strings.Contains(out, "Lun:0") {
		t.Fatalf("iscsi-ls (REPORT LUNS must list LUN 1 only): %v\n%s", err, out)
	}
	out, err = runPeer(t, 30*time.Second, inq, url(tg, ""))
	if err != nil || !strings.Contains(out, "Vendor:INGOT") || !strings.Contains(out, "DIRECT_ACCESS") {
		t.Fatalf("iscsi-inq: %v\n%s", err, out)
	}
	out, err = runPeer(t, 30*time.Second, rc16, url(tg, ""))
	if err != nil || !strings.Contains(out, "Total size:67108864") {
		t.Fatalf("iscsi-readcapacity16: %v\n%s", err, out)
	}

	chap, _ := startFile(t, 4<<20, func(c *Config) { c.CHAPUser, c.CHAPSecret = "ingot", "per-deploy-secret-1" })
	if out, err := runPeer(t, 30*time.Second, inq, url(chap, "ingot%per-deploy-secret-1")); err != nil || !strings.Contains(out, "Vendor:INGOT") {
		t.Fatalf("iscsi-inq with CHAP: %v\n%s", err, out)
	}
	for _, bad := range []string{"", "ingot%wrong-secret-value", "eve%per-deploy-secret-1"} {
		if out, err := runPeer(t, 30*time.Second, inq, url(chap, bad)); err == nil {
			t.Fatalf("iscsi-inq with credentials %q logged in:\n%s", bad, out)
		}
	}
	if st := chap.Stats(); st.Sessions != 1 || st.Panics != 0 {
		t.Fatalf("stats %+v: want exactly the one CHAP session", st)
	}
}

func runSuites(t *testing.T, tg *Target, suites []string) cuResult {
	cu := peertest.Binary(t, "iscsi-test-cu", "libiscsi-bin")
	res := cuResult{}
	for _, s := range suites {
		// One suite per process under a timeout, so a hang or a crash
		// costs one suite.
		out, err := runPeer(t, 120*time.Second, "stdbuf", "-o0", "-e0", cu, "-d", "--test=ALL."+s, url(tg, ""))
		before := len(res)
		parseCU(s, out, res)
		if len(res) == before {
			t.Errorf("suite %s produced no verdicts (%v):\n%s", s, err, out)
		}
	}
	return res
}

func loadExpectations(t *testing.T, path string) cuResult {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res := cuResult{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("%s: bad line %q", path, line)
		}
		res[f[0]] = f[1]
	}
	return res
}

func writeExpectations(t *testing.T, path, header string, res cuResult) {
	var b bytes.Buffer
	b.WriteString(header)
	names := make([]string, 0, len(res))
	for n := range res {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%-40s %s\n", n, res[n])
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func count(res cuResult, verdict string) int {
	n := 0
	for _, v := range res {
		if v == verdict {
			n++
		}
	}
	return n
}

const expectationsHeader = `# iscsi-test-cu (libiscsi 1.19.0, Debian libiscsi-bin) against agent/iscsitarget,
# one suite per process, 64 MiB file-backed LUN 1. Verdicts: pass, skip
# (CUnit "passed" with a [SKIPPED] note), fail, none (no verdict).
# Regenerate: INGOT_ISCSI_UPDATE=1 go test -tags interop -run %s ./agent/iscsitarget
`

// TestInteropConformanceCore runs the core suites and compares every
// verdict with the pinned expectations; the target must pass at least
// what gotgt v0.2.2 passes there (97 of 111).
func TestInteropConformanceCore(t *testing.T) {
	conformance(t, "TestInteropConformanceCore", coreSuites, "testdata/conformance-core.txt", 97)
}

// TestInteropConformanceAll runs the whole ALL family (230 tests) on
// demand: INGOT_ISCSI_FULL=1.
func TestInteropConformanceAll(t *testing.T) {
	if os.Getenv("INGOT_ISCSI_FULL") == "" && os.Getenv("INGOT_ISCSI_UPDATE") == "" {
		t.Skip("set INGOT_ISCSI_FULL=1 to run all 51 suites")
	}
	cu := peertest.Binary(t, "iscsi-test-cu", "libiscsi-bin")
	out, _ := runPeer(t, 30*time.Second, cu, "-l")
	var suites []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Split(strings.TrimSpace(line), "."); len(f) == 2 && f[0] == "ALL" {
			suites = append(suites, f[1])
		}
	}
	conformance(t, "TestInteropConformanceAll", suites, "testdata/conformance-all.txt", 111)
}

func conformance(t *testing.T, name string, suites []string, path string, minPass int) {
	tg, _ := startFile(t, 64<<20, nil)
	got := runSuites(t, tg, suites)
	if st := tg.Stats(); st.Panics != 0 {
		t.Errorf("the target contained %d panics during the run (last: %s)", st.Panics, st.LastPanic)
	}
	t.Logf("%d tests: %d pass, %d skip, %d fail, %d without verdict", len(got), count(got, "pass"), count(got, "skip"),
		count(got, "fail"), count(got, "none"))
	if os.Getenv("INGOT_ISCSI_UPDATE") != "" {
		writeExpectations(t, path, fmt.Sprintf(expectationsHeader, name), got)
		return
	}
	want := loadExpectations(t, path)
	for n, w := range want {
		if g, ok := got[n]; !ok || g != w {
			t.Errorf("%s: got %q, pinned %q", n, g, w)
		}
	}
	for n, g := range got {
		if _, ok := want[n]; !ok {
			t.Errorf("%s: %q is not in %s", n, g, path)
		}
	}
	if p := count(got, "pass"); p < minPass {
		t.Errorf("%d passes, want at least %d", p, minPass)
	}
}

// TestInteropOrWriteNeverKillsTheTarget runs the test that crashes gotgt
// v0.2.2 (ORWRITE) and checks the target still serves without a panic.
func TestInteropOrWriteNeverKillsTheTarget(t *testing.T) {
	tg, _ := startFile(t, 16<<20, nil)
	res := runSuites(t, tg, []string{"OrWrite"})
	if res["OrWrite.Simple"] != "pass" {
		t.Errorf("OrWrite.Simple: %q", res["OrWrite.Simple"])
	}
	if st := tg.Stats(); st.Panics != 0 {
		t.Fatalf("panics: %+v", st)
	}
	inq := peertest.Binary(t, "iscsi-inq", "libiscsi-bin")
	if out, err := runPeer(t, 30*time.Second, inq, url(tg, "")); err != nil {
		t.Fatalf("the target stopped serving after ORWRITE: %v\n%s", err, out)
	}
}

func fileSum(t *testing.T, path string, n int64) [32]byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// TestInteropQemuImgWrites writes an image with qemu-img (libiscsi) into
// the target, over a file and over a loop block device.
func TestInteropQemuImgWrites(t *testing.T) {
	qemu := peertest.Binary(t, "qemu-img", "qemu-utils qemu-block-extra")
	img := make([]byte, 24<<20+1000)
	if _, err := io.ReadFull(patternReader{}, img); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "image.raw")
	if err := os.WriteFile(src, img, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("file", func(t *testing.T) {
		tg, disk := startFile(t, 32<<20, nil)
		if out, err := runPeer(t, 60*time.Second, qemu, "convert", "-n", "-f", "raw", "-O", "raw", src, url(tg, "")); err != nil {
			t.Fatalf("qemu-img: %v\n%s", err, out)
		}
		if err := tg.Stop(); err != nil {
			t.Fatal(err)
		}
		if fileSum(t, disk, int64(len(img))) != sha256.Sum256(img) {
			t.Fatal("backing file differs from the image")
		}
	})
	t.Run("loop block device", func(t *testing.T) {
		losetup := peertest.Binary(t, "losetup", "mount")
		peertest.Root(t, "losetup needs root")
		backing := filepath.Join(t.TempDir(), "loop.img")
		if err := os.WriteFile(backing, make([]byte, 32<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := runPeer(t, 10*time.Second, losetup, "--find", "--show", backing)
		if err != nil {
			t.Fatalf("losetup: %v %s", err, out)
		}
		dev := strings.TrimSpace(out)
		t.Cleanup(func() { _, _ = runPeer(t, 10*time.Second, losetup, "-d", dev) })
		tg, _ := startFile(t, 512, func(c *Config) { c.Device = dev })
		if out, err := runPeer(t, 60*time.Second, qemu, "convert", "-n", "-f", "raw", "-O", "raw", src, url(tg, "")); err != nil {
			t.Fatalf("qemu-img: %v\n%s", err, out)
		}
		if err := tg.Stop(); err != nil {
			t.Fatal(err)
		}
		if fileSum(t, dev, int64(len(img))) != sha256.Sum256(img) {
			t.Fatal("block device differs from the image")
		}
	})
}

// TestInteropStopWhileLoggedIn stops the target under a running libiscsi
// reader: Stop returns promptly, every connection and the port close.
// (libiscsi then retries the login forever; the test ends it.)
func TestInteropStopWhileLoggedIn(t *testing.T) {
	perf := peertest.Binary(t, "iscsi-perf", "libiscsi-bin")
	tg, _ := startFile(t, 16<<20, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, perf, "-m", "4", "-b", "64", "-t", "30", url(tg, ""))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for tg.Stats().Sessions == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if tg.Stats().Connections == 0 {
		t.Fatal("iscsi-perf never logged in")
	}
	time.Sleep(500 * time.Millisecond) // let it read for a while
	start := time.Now()
	if err := tg.Stop(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Stop took %v with a session open", el)
	}
	if st := tg.Stats(); st.Connections != 0 || st.Panics != 0 {
		t.Fatalf("after Stop: %+v", st)
	}
	if c, err := net.DialTimeout("tcp", tg.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the portal still accepts connections after Stop")
	}
}

type patternReader struct{}

func (patternReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i*7 + i>>8 + 13)
	}
	return len(p), nil
}
