//go:build interop

package iscsi

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/internal/peertest"
	"github.com/ingot-dev/ingot/internal/tgtd"
	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// One tgtd serves the package's interop tests (tests that kill a daemon
// start their own).
var shared struct {
	once sync.Once
	d    *tgtd.Daemon
	tid  atomic.Int32
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.d != nil {
		shared.d.Stop()
	}
	os.Exit(code)
}

func sharedTGTD(t *testing.T) *tgtd.Daemon {
	t.Helper()
	shared.once.Do(func() { shared.d = tgtd.New(t) })
	if shared.d == nil {
		peertest.Binary(t, "tgtd", "tgt")
		peertest.Root(t, "tgtd needs root")
		t.Fatal("tgtd did not start (see the first test's log)")
	}
	return shared.d
}

// newTarget adds a target with LUNs of the given sizes to the shared tgtd.
func newTarget(t *testing.T, sizes ...int64) (d *tgtd.Daemon, tid int, iqn string, files []string) {
	d = sharedTGTD(t)
	tid = int(shared.tid.Add(1))
	iqn = fmt.Sprintf("iqn.2024-01.dev.ingot.interop:t%d", tid)
	files = d.Target(t, tid, iqn, sizes...)
	t.Cleanup(func() {
		_, _ = exec.Command("tgtadm", "-C", fmt.Sprint(d.Control), "--lld", "iscsi", "--op", "delete", "--mode", "target",
			"--tid", fmt.Sprint(tid), "--force").CombinedOutput()
	})
	return d, tid, iqn, files
}

func fileSHA(t *testing.T, path string, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func TestInteropTGTDParameterMatrix(t *testing.T) {
	tests := []struct {
		name    string
		updates [][2]string
		cfg     func(c *Config)
		opts    WriterOptions
	}{
		{name: "tgtd defaults: R2T for everything, 8 KiB PDUs"},
		{name: "tuned: InitialR2T=No, large segments and bursts", updates: [][2]string{
			{"InitialR2T", "No"}, {"MaxRecvDataSegmentLength", "262144"}, {"MaxXmitDataSegmentLength", "262144"},
			{"FirstBurstLength", "262144"}, {"MaxBurstLength", "4194304"}}},
		{name: "ImmediateData=No", updates: [][2]string{{"ImmediateData", "No"}, {"InitialR2T", "No"}}},
		{name: "MaxBurstLength below the write size: several R2Ts per command", updates: [][2]string{{"MaxBurstLength", "16384"}, {"FirstBurstLength", "8192"}}},
		{name: "initiator asks for InitialR2T=Yes", updates: [][2]string{{"InitialR2T", "No"}}, cfg: func(c *Config) { c.InitialR2T = true }},
		{name: "depth 1", opts: WriterOptions{Depth: 1}},
		{name: "depth 32 with small chunks", opts: WriterOptions{Depth: 32, ChunkSize: 64 << 10}},
		{name: "CRC32C header and data digests", updates: [][2]string{{"HeaderDigest", "CRC32C"}, {"DataDigest", "CRC32C"}},
			cfg: func(c *Config) { c.HeaderDigest, c.DataDigest = true, true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, tid, iqn, files := newTarget(t, 16<<20)
			for _, u := range tt.updates {
				d.Update(t, tid, u[0], u[1])
			}
			cfg := Config{Portal: d.Portal, TargetIQN: iqn, Logger: testLogger(t)}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			opts := tt.opts
			opts.Verify = VerifyFull
			w, err := NewWriter(ctx, cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			img := randomImage(t, 5<<20+333) // not a multiple of the block size
			if err := writeImage(ctx, w, img, 65537); err != nil {
				t.Fatal(err)
			}
			p := w.sess.Params()
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got, want := fileSHA(t, files[0], int64(len(img))), sha256.Sum256(img); got != want {
				t.Fatalf("sha256 of the backing file %x, image %x", got, want)
			}
			if tt.name == "CRC32C header and data digests" && !(p.HeaderDigest && p.DataDigest) {
				t.Fatalf("digests not negotiated: %+v", p)
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(d.Sessions(t, tid)) > 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if n := d.Sessions(t, tid); len(n) > 0 {
				t.Fatalf("sessions left after logout: %v", n)
			}
			t.Logf("negotiated %+v", p)
		})
	}
}

func TestInteropTGTDCHAP(t *testing.T) {
	d, tid, iqn, _ := newTarget(t, 4<<20)
	d.CHAP(t, tid, "ingot-deploy", "chap-secret-for-this-deploy")
	tests := []struct {
		name    string
		creds   proto.Credentials
		wantErr error
	}{
		{"right secret", proto.Credentials{User: "ingot-deploy", Secret: "chap-secret-for-this-deploy"}, nil},
		{"wrong secret", proto.Credentials{User: "ingot-deploy", Secret: "not-the-right-secret"}, proto.LoginAuthFailure},
		{"unknown user", proto.Credentials{User: "mallory", Secret: "chap-secret-for-this-deploy"}, proto.LoginAuthFailure},
		{"no credentials", proto.Credentials{}, proto.LoginAuthFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Dial(t.Context(), Config{Portal: d.Portal, TargetIQN: iqn, CHAP: tt.creds})
			if (err == nil) != (tt.wantErr == nil) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Dial: %v, want %v", err, tt.wantErr)
			}
			var st proto.LoginStatus
			if err != nil && (!errors.As(err, &st) || st.Class() != 2 || st.Detail() != 1) {
				t.Fatalf("login failure %v: want status class 2 detail 1", err)
			}
			if err == nil {
				if _, err := s.OpenLUN(t.Context(), 1); err != nil {
					t.Fatal(err)
				}
				s.Close()
			}
		})
	}
}

func TestInteropTGTDUnknownIQN(t *testing.T) {
	d, _, _, _ := newTarget(t, 1<<20) // tgtd with no target at all just hangs up
	_, err := Dial(t.Context(), Config{Portal: d.Portal, TargetIQN: "iqn.2024-01.dev.ingot.interop:missing"})
	var st proto.LoginStatus
	if !errors.As(err, &st) || st != proto.LoginNotFound {
		t.Fatalf("Dial to an unknown IQN: %v, want status 2/3", err)
	}
}

func TestInteropTGTDDiscoverAndInquiry(t *testing.T) {
	d, _, iqn, _ := newTarget(t, 4<<20)
	found, err := Discover(t.Context(), Config{Portal: d.Portal})
	if err != nil {
		t.Fatal(err)
	}
	ok := false
	for _, f := range found {
		ok = ok || f.Name == iqn && len(f.Addresses) > 0
	}
	if !ok {
		t.Fatalf("Discover = %v, want %s", found, iqn)
	}
	s, err := Dial(t.Context(), Config{Portal: d.Portal, TargetIQN: iqn})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	luns, err := s.ReportLUNs(t.Context())
	if err != nil || len(luns) != 2 || luns[0] != 0 || luns[1] != 1 {
		t.Fatalf("ReportLUNs = %v, %v (tgtd: controller LUN 0 and LUN 1)", luns, err)
	}
	inq, err := s.Inquiry(t.Context(), 1)
	if err != nil || inq.DeviceType != 0 {
		t.Fatalf("Inquiry = %+v, %v", inq, err)
	}
	serial, err := s.SerialNumber(t.Context(), 1)
	if err != nil || serial == "" {
		t.Fatalf("SerialNumber = %q, %v", serial, err)
	}
	ids, err := s.DeviceIdentifiers(t.Context(), 1)
	if err != nil || len(ids) == 0 {
		t.Fatalf("DeviceIdentifiers = %v, %v", ids, err)
	}
}

func TestInteropTGTDBeyondCapacity(t *testing.T) {
	d, _, iqn, _ := newTarget(t, 1<<20)
	ctx := t.Context()
	w, err := NewWriter(ctx, Config{Portal: d.Portal, TargetIQN: iqn}, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteAt(make([]byte, 4096), w.Size()-1024); !errors.Is(err, ErrBeyondCapacity) {
		t.Fatalf("Writer past the end: %v", err)
	}
	_, err = w.sess.Execute(ctx, Command{LUN: 1, CDB: cdbRW16(opWrite16, 2048, 8), Out: make([]byte, 4096)})
	if !errors.Is(err, ErrLBAOutOfRange) {
		t.Fatalf("raw WRITE(16) past the end: %v, want ErrLBAOutOfRange", err)
	}
}

func TestInteropTGTDIdleNOPs(t *testing.T) {
	d, tid, iqn, files := newTarget(t, 4<<20)
	d.SetNOP(t, tid, 1, 2)
	ctx := t.Context()
	w, err := NewWriter(ctx, Config{Portal: d.Portal, TargetIQN: iqn}, WriterOptions{Reconnects: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	time.Sleep(5 * time.Second) // tgtd pings every second and drops after 2 unanswered
	img := randomImage(t, 1<<20+7)
	if err := writeImage(ctx, w, img, 1<<20); err != nil {
		t.Fatalf("I/O after 5 s idle with nop_interval=1 nop_count=2: %v", err)
	}
	if st := w.Stats(); st.Reconnects != 0 {
		t.Fatalf("the session was dropped while idle: %+v", st)
	}
	w.Close()
	if fileSHA(t, files[0], int64(len(img))) != sha256.Sum256(img) {
		t.Fatal("backing file differs")
	}
}

func TestInteropQemuImgOracle(t *testing.T) {
	qemu := peertest.Binary(t, "qemu-img", "qemu-utils qemu-block-extra")
	d, _, iqn, files := newTarget(t, 8<<20, 8<<20)
	img := randomImage(t, 3<<20+1234)
	src := t.TempDir() + "/image.raw"
	if err := os.WriteFile(src, img, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, qemu, "convert", "-n", "-f", "raw", "-O", "raw", src,
		fmt.Sprintf("iscsi://%s/%s/2", d.Portal, iqn)).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img convert (libiscsi): %v: %s", err, out)
	}
	w, err := NewWriter(ctx, Config{Portal: d.Portal, TargetIQN: iqn}, WriterOptions{LUN: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeImage(ctx, w, img, 99999); err != nil {
		t.Fatal(err)
	}
	w.Close()
	ours, theirs := fileSHA(t, files[0], 8<<20), fileSHA(t, files[1], 8<<20)
	if ours != theirs {
		t.Fatalf("LUN written by Ingot (%x) differs from the LUN written by qemu-img/libiscsi (%x)", ours, theirs)
	}
	if fileSHA(t, files[0], int64(len(img))) != sha256.Sum256(img) {
		t.Fatal("backing file differs from the image")
	}
}

// TestInteropTGTDKilledMidTransfer kills the target during a write: with
// no target to come back the writer fails within its deadline and leaks
// nothing; with tgtd restarted on the same portal it resumes and the image
// arrives whole.
func TestInteropTGTDKilledMidTransfer(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			checkNoLeak(t)
			d := tgtd.Start(t)
			const iqn = "iqn.2024-01.dev.ingot.interop:killed"
			files := d.Target(t, 1, iqn, 96<<20)
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			w, err := NewWriter(ctx, Config{Portal: d.Portal, TargetIQN: iqn, CommandTimeout: 10 * time.Second, Logger: testLogger(t)},
				WriterOptions{Reconnects: 5, ReconnectDelay: 300 * time.Millisecond, ChunkSize: 256 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			img := randomImage(t, 64<<20+17)
			killed := make(chan struct{})
			go func() {
				defer close(killed)
				for w.Stats().Acknowledged < 8<<20 {
					time.Sleep(time.Millisecond)
				}
				d.Kill()
				if restart {
					d.Restart(t)
					d.Attach(t, 1, iqn, files...)
				}
			}()
			start := time.Now()
			err = writeImage(ctx, w, img, 1<<20)
			<-killed
			if !restart {
				if !errors.Is(err, ErrSessionLost) {
					t.Fatalf("write with the target killed: %v, want ErrSessionLost", err)
				}
				if el := time.Since(start); el > 30*time.Second {
					t.Fatalf("failing took %v", el)
				}
				return
			}
			if err != nil {
				t.Fatalf("write across a tgtd restart: %v", err)
			}
			st := w.Stats()
			if st.Reconnects == 0 || len(st.ResumedAt) == 0 || st.ResumedAt[0] == 0 {
				t.Fatalf("stats %+v: want a resume from a non-zero LBA", st)
			}
			w.Close()
			if fileSHA(t, files[0], int64(len(img))) != sha256.Sum256(img) {
				t.Fatal("backing file differs from the image after the resume")
			}
			t.Logf("resumed at LBA %v after %d reconnects", st.ResumedAt, st.Reconnects)
		})
	}
}

// TestInteropTGTDLUNFaults: a LUN that does not exist, and a LUN deleted
// under an open writer, fail with typed, permanent errors.
func TestInteropTGTDLUNFaults(t *testing.T) {
	d, tid, iqn, _ := newTarget(t, 4<<20)
	ctx := t.Context()
	if _, err := NewWriter(ctx, Config{Portal: d.Portal, TargetIQN: iqn}, WriterOptions{LUN: 7}); !errors.Is(err, ErrLUNNotSupported) {
		t.Fatalf("LUN 7: %v, want ErrLUNNotSupported", err)
	}
	w, err := NewWriter(ctx, Config{Portal: d.Portal, TargetIQN: iqn}, WriterOptions{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteAt(make([]byte, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	d.Adm(t, "--lld", "iscsi", "--op", "delete", "--mode", "logicalunit", "--tid", fmt.Sprint(tid), "--lun", "1")
	_, err = w.WriteAt(make([]byte, 64<<10), 64<<10)
	if err == nil {
		err = w.Sync()
	}
	var se *SCSIError
	if !errors.As(err, &se) || errors.Is(err, ErrSessionLost) {
		t.Fatalf("write to a deleted LUN: %v, want a SCSI error", err)
	}
	if err := w.Sync(); !errors.Is(err, ErrWriterFailed) {
		t.Fatalf("Sync after the failure: %v", err)
	}
	t.Logf("deleted LUN: %v", err)
}
