//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/internal/vmrig"
)

// imageServer serves one image on the provisioning network with Range
// support, and can misbehave: drop the first response's connection after
// dropAfter bytes, throttle to rate bytes/s, and report the first request.
type imageServer struct {
	data      []byte
	dropAfter int64
	rate      int64
	drops     atomic.Int32
	ranges    atomic.Int32
	requested chan struct{}
	once      atomic.Bool
	url       string
	sum       string
}

func (e *env) serveImage(data []byte, dropAfter, rate int64) *imageServer {
	e.t.Helper()
	s := &imageServer{data: data, dropAfter: dropAfter, rate: rate, requested: make(chan struct{})}
	sum := sha256.Sum256(data)
	s.sum = hex.EncodeToString(sum[:])
	l, err := e.rig.Listen("tcp", e.rig.ServerIP+":0")
	if err != nil {
		e.t.Fatal(err)
	}
	srv := &http.Server{Handler: s}
	go srv.Serve(l)
	e.t.Cleanup(func() { srv.Close() })
	s.url = fmt.Sprintf("http://%s/image.raw.zst", l.Addr())
	return s
}

func (s *imageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.once.CompareAndSwap(false, true) {
		close(s.requested)
	}
	w.Header().Set("ETag", `"ingot-e2e-image"`)
	if r.Header.Get("Range") != "" {
		s.ranges.Add(1)
	}
	if s.dropAfter > 0 && r.Header.Get("Range") == "" && s.drops.Add(1) == 1 {
		w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
		w.WriteHeader(http.StatusOK)
		w.Write(s.data[:s.dropAfter])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection drops mid-body
	}
	http.ServeContent(w, r, "image.raw.zst", time.Unix(1700000000, 0), &throttled{ReadSeeker: bytes.NewReader(s.data), rate: s.rate})
}

// throttled reads at most rate bytes per second (no limit when 0).
type throttled struct {
	io.ReadSeeker
	rate int64
}

func (t *throttled) Read(p []byte) (int, error) {
	if t.rate > 0 {
		if int64(len(p)) > t.rate/10 {
			p = p[:t.rate/10]
		}
		time.Sleep(100 * time.Millisecond)
	}
	return t.ReadSeeker.Read(p)
}

func (e *env) setImage(uuid, url, sum string) {
	e.t.Helper()
	if err := e.cond.Client.Patch(e.t.Context(), uuid,
		map[string]any{"op": "add", "path": "/instance_info/image_source", "value": url},
		map[string]any{"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
		map[string]any{"op": "add", "path": "/instance_info/image_os_hash_value", "value": sum}); err != nil {
		e.t.Fatal(err)
	}
}

// available enrolls a node and makes it available without cleaning
// (the conductor runs with --automated-clean=false).
func (e *env) available(firmware string) (*vmrig.Node, string) {
	e.t.Helper()
	n, uuid := e.addNode(firmware)
	e.provision(uuid, "manage")
	e.wait(uuid, time.Minute, "manageable")
	e.provision(uuid, "provide")
	e.wait(uuid, time.Minute, "available")
	return n, uuid
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func zeroAt(t *testing.T, path string, off, n int64) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(b, make([]byte, n))
}

// TestE2ECorruptImage deploys an image whose bytes do not match the
// checksum the node was given: the deploy fails with a clear last_error,
// the node is powered off, and its disk holds nothing bootable.
func TestE2ECorruptImage(t *testing.T) {
	e := newEnv(t, "--automated-clean=false")
	n, uuid := e.available("bios")
	raw := readFile(t, e.a.imageRaw)
	raw[len(raw)/2] ^= 0xff // one flipped byte inside the ESP
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.raw")
	if err := os.WriteFile(bad, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := compressZstd(bad, bad+".zst"); err != nil {
		t.Fatal(err)
	}
	img := e.serveImage(readFile(t, bad+".zst"), 0, 0)
	e.setImage(uuid, img.url, e.a.imageSum) // the good image's checksum

	e.provision(uuid, "active")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	st, err := e.cond.Client.Wait(ctx, uuid, []string{"deploy failed"}, []string{"active"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg := st.Error(); !strings.Contains(msg, "checksum") || !strings.Contains(msg, e.a.imageSum) {
		t.Errorf("last_error %q does not say the checksum failed", msg)
	}
	if p := deref(st.PowerState); p != "power off" {
		t.Errorf("power state %q after a failed deploy, want power off", p)
	}
	size := int64(8 << 30)
	if !zeroAt(t, n.Disk, 0, 1<<20) || !zeroAt(t, n.Disk, size-(1<<20), 1<<20) {
		t.Error("the disk still has a partition table or boot code after the failed deploy")
	}
}

// TestE2EImageServerDrops drops the image download's connection part way:
// the agent resumes with a Range request and the node still reaches
// active, with the right image.
func TestE2EImageServerDrops(t *testing.T) {
	e := newEnv(t, "--automated-clean=false")
	n, uuid := e.available("bios")
	zst := readFile(t, e.a.imageZst)
	img := e.serveImage(zst, int64(len(zst))/3, 0)
	e.setImage(uuid, img.url, img.sum)
	e.provision(uuid, "active")
	st := e.wait(uuid, 3*time.Minute, "active")
	if img.drops.Load() < 1 || img.ranges.Load() < 1 {
		t.Errorf("drops %d, range requests %d: the download was not resumed", img.drops.Load(), img.ranges.Load())
	}
	t.Logf("deploy_progress after resume: %v", st.DriverInternalInfo["deploy_progress"])
	raw := readFile(t, e.a.imageRaw)
	f, err := os.Open(n.Disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(raw))
	if _, err := io.ReadFull(f, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, raw) {
		t.Error("the disk does not hold the image after a resumed download")
	}
}

// TestE2EResetDuringDeploy resets the VM through its BMC while the agent
// writes the image: the agent boots again and looks up again, and the
// conductor ends the deploy cleanly, naming what happened.
func TestE2EResetDuringDeploy(t *testing.T) {
	e := newEnv(t, "--automated-clean=false")
	n, uuid := e.available("bios")
	zst := readFile(t, e.a.imageZst)
	img := e.serveImage(zst, 0, 2<<20) // 2 MiB/s: the write takes several seconds
	e.setImage(uuid, img.url, img.sum)
	e.provision(uuid, "active")
	select {
	case <-img.requested:
	case <-time.After(2 * time.Minute):
		t.Fatal("the agent never fetched the image")
	}
	out, err := e.rig.Command(t.Context(), "ipmitool", "-I", "lanplus", "-C", "3", "-H", n.BMC.Addr,
		"-p", strconv.Itoa(n.BMC.Port), "-U", n.BMC.User, "-P", n.BMC.Password, "power", "reset").CombinedOutput()
	if err != nil {
		t.Fatalf("ipmitool power reset: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	st, err := e.cond.Client.Wait(ctx, uuid, []string{"deploy failed"}, []string{"active"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg := st.Error(); !strings.Contains(msg, "looked up again") {
		t.Errorf("last_error %q does not say the agent restarted", msg)
	}
	if p := deref(st.PowerState); p != "power off" {
		t.Errorf("power state %q after the failed deploy, want power off", p)
	}
}

// TestE2EBMCStopped stops the node's BMC: power requests fail with an
// error that names the BMC, and the node's state is kept.
func TestE2EBMCStopped(t *testing.T) {
	e := newEnv(t, "--automated-clean=false")
	n, uuid := e.available("bios")
	n.BMC.Stop()
	if err := e.cond.Client.Power(t.Context(), uuid, "power on"); err != nil {
		t.Fatalf("power on request refused at once: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for {
		st, err := e.cond.Client.Node(ctx, uuid)
		if err != nil {
			t.Fatal(err)
		}
		if msg := st.Error(); msg != "" {
			bmc := net.JoinHostPort(n.BMC.Addr, strconv.Itoa(n.BMC.Port))
			if !strings.Contains(msg, bmc) && !strings.Contains(msg, n.BMC.Addr) {
				t.Errorf("last_error %q does not name the BMC %s", msg, bmc)
			}
			if st.ProvisionState != "available" {
				t.Errorf("provision state %s, want available", st.ProvisionState)
			}
			t.Logf("last_error: %s", msg)
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("no power error reported")
		case <-time.After(500 * time.Millisecond):
		}
	}
}
