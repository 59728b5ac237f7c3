package iscsi

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func randomImage(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeImage streams img through a Writer in uneven pieces, as an
// io.Reader-driven streamer would, then syncs and verifies.
func writeImage(ctx context.Context, w *Writer, img []byte, piece int) error {
	for off := 0; off < len(img); off += piece {
		end := min(off+piece, len(img))
		if _, err := w.WriteAt(img[off:end], int64(off)); err != nil {
			return err
		}
	}
	if err := w.Sync(); err != nil {
		return err
	}
	return w.Verify()
}

// checkNoLeak fails when goroutines started by the test outlive it.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}

func TestWriterParameterMatrix(t *testing.T) {
	tests := []struct {
		name  string
		knobs func(f *fakeTarget)
		cfg   func(c *Config)
		size  int
	}{
		{"defaults: immediate and unsolicited data", nil, nil, 3<<20 + 123},
		{"InitialR2T=Yes: every byte solicited", func(f *fakeTarget) { f.initialR2T = true }, nil, 2<<20 + 1},
		{"ImmediateData=No", func(f *fakeTarget) { f.noImmediate = true }, nil, 1<<20 + 511},
		{"InitialR2T=Yes and ImmediateData=No", func(f *fakeTarget) { f.initialR2T, f.noImmediate = true, true }, nil, 777},
		{"MaxBurstLength smaller than a write: several R2Ts", func(f *fakeTarget) { f.initialR2T, f.maxBurst, f.firstBurst = true, 4096, 4096 }, nil, 1<<20 + 5},
		{"target declares 512-byte PDUs", func(f *fakeTarget) { f.mrdsl = 512 }, nil, 300000},
		{"initiator asks for InitialR2T=Yes", nil, func(c *Config) { c.InitialR2T = true }, 1 << 20},
		{"CRC32C digests", func(f *fakeTarget) { f.digests = true }, func(c *Config) { c.HeaderDigest, c.DataDigest = true, true }, 2<<20 + 3},
		{"image smaller than a block", nil, nil, 100},
		{"exact multiple of the block size", nil, nil, 64 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			f := newFakeTarget(t, 8<<20)
			if tt.knobs != nil {
				f.set(tt.knobs)
			}
			cfg := f.config()
			cfg.Logger = testLogger(t)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			ctx := t.Context()
			w, err := NewWriter(ctx, cfg, WriterOptions{ChunkSize: 256 << 10, Depth: 4, Verify: VerifyFull})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			img := randomImage(t, tt.size)
			if err := writeImage(ctx, w, img, 70001); err != nil {
				t.Fatal(err)
			}
			disk := f.snapshot()
			if !bytes.Equal(disk[:len(img)], img) {
				t.Fatal("the target's disk differs from the image")
			}
			if tail := disk[len(img)]; tail != 0 {
				t.Fatalf("the byte after the image was changed to %d; a partial block must be merged", tail)
			}
			if got := w.Stats().Verified; got < int64(len(img)) {
				t.Errorf("full verification read back %d bytes, want >= %d", got, len(img))
			}
		})
	}
}

func TestWriterPartialBlockMergesExistingData(t *testing.T) {
	f := newFakeTarget(t, 1<<20)
	f.set(func(f *fakeTarget) {
		for i := range f.disk {
			f.disk[i] = 0xee
		}
	})
	ctx := t.Context()
	w, err := NewWriter(ctx, f.config(), WriterOptions{ChunkSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A head that does not start on a block boundary and a tail that does
	// not end on one.
	if _, err := w.WriteAt([]byte("hello"), 1000); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	disk := f.snapshot()
	if string(disk[1000:1005]) != "hello" || disk[999] != 0xee || disk[1005] != 0xee || disk[512] != 0xee || disk[1023] != 0xee {
		t.Fatalf("read-modify-write damaged neighbours: % x", disk[995:1010])
	}
}

func TestWriterRewriteAfterResumeOfTheStream(t *testing.T) {
	// A streamer that resumes from an earlier offset writes the same bytes
	// again; the writer must finish the older writes first and verify the
	// final content only.
	f := newFakeTarget(t, 4<<20)
	ctx := t.Context()
	w, err := NewWriter(ctx, f.config(), WriterOptions{ChunkSize: 64 << 10, Verify: VerifyFull})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	img := randomImage(t, 1<<20)
	if _, err := w.WriteAt(img[:700000], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(img[300001:], 300001); err != nil { // back to an unaligned offset
		t.Fatal(err)
	}
	if err := w.Verify(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.snapshot()[:len(img)], img) {
		t.Fatal("disk differs from the image")
	}
}

func TestLogin(t *testing.T) {
	good := proto.Credentials{User: "ingot", Secret: "per-deploy-secret-1"}
	tgt := proto.Credentials{User: "target", Secret: "target-secret-22"}
	tests := []struct {
		name    string
		knobs   func(f *fakeTarget)
		cfg     func(c *Config)
		wantErr error
	}{
		{"AuthMethod None", nil, nil, nil},
		{"CHAP with the right secret", func(f *fakeTarget) { f.chap = good }, func(c *Config) { c.CHAP = good }, nil},
		{"CHAP with a wrong secret", func(f *fakeTarget) { f.chap = good },
			func(c *Config) { c.CHAP = proto.Credentials{User: "ingot", Secret: "wrong-secret-xx"} }, proto.LoginAuthFailure},
		{"CHAP with a wrong user", func(f *fakeTarget) { f.chap = good },
			func(c *Config) { c.CHAP = proto.Credentials{User: "eve", Secret: good.Secret} }, proto.LoginAuthFailure},
		{"CHAP required but no credentials", func(f *fakeTarget) { f.chap = good }, nil, proto.LoginAuthFailure},
		{"credentials but the target only does None", nil, func(c *Config) { c.CHAP = good }, proto.LoginAuthFailure},
		{"mutual CHAP", func(f *fakeTarget) { f.chap, f.mutual = good, tgt }, func(c *Config) { c.CHAP, c.MutualCHAP = good, tgt }, nil},
		{"mutual CHAP with an impostor target", func(f *fakeTarget) {
			f.chap, f.mutual = good, proto.Credentials{User: "target", Secret: "not-the-secret!"}
		}, func(c *Config) { c.CHAP, c.MutualCHAP = good, tgt }, proto.LoginAuthFailure},
		{"unknown target name", nil, func(c *Config) { c.TargetIQN = "iqn.2024-01.dev.ingot.test:nope" }, proto.LoginNotFound},
		{"target answers NotUnderstood, Reject and Irrelevant", func(f *fakeTarget) {
			f.notUnderstood = map[string]string{"MaxBurstLength": "NotUnderstood", "ImmediateData": "Reject", "FirstBurstLength": "Irrelevant"}
		}, nil, nil},
		{"target offers its own keys, some unknown", func(f *fakeTarget) {
			f.ownKeys = []proto.KeyValue{{Key: "X-com.example.Frob", Value: "on"}, {Key: "IFMarker", Value: "No"}}
		}, nil, nil},
		{"target holds the transit once (T=0 loop)", func(f *fakeTarget) { f.holdTransit = true }, nil, nil},
		{"target spreads its answer over two PDUs (C bit)", func(f *fakeTarget) { f.splitLoginReply = true }, nil, nil},
		{"target answers an impossible value", func(f *fakeTarget) { f.notUnderstood = map[string]string{"MaxBurstLength": "99999999"} }, nil, proto.ErrNegotiation},
		{"target violates OR for InitialR2T", func(f *fakeTarget) { f.notUnderstood = map[string]string{"InitialR2T": "No"} },
			func(c *Config) { c.InitialR2T = true }, proto.ErrNegotiation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			f := newFakeTarget(t, 1<<20)
			if tt.knobs != nil {
				f.set(tt.knobs)
			}
			cfg := f.config()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			var logs bytes.Buffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			s, err := Dial(t.Context(), cfg)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Dial: %v, want %v", err, tt.wantErr)
			}
			for _, secret := range []string{good.Secret, tgt.Secret, "wrong-secret-xx"} {
				if strings.Contains(logs.String(), secret) || err != nil && strings.Contains(err.Error(), secret) {
					t.Fatalf("a CHAP secret leaked into logs or errors")
				}
			}
			if err != nil {
				return
			}
			if _, err := s.OpenLUN(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNegotiatedParamsAreUsed(t *testing.T) {
	f := newFakeTarget(t, 1<<20)
	f.set(func(f *fakeTarget) { f.mrdsl, f.maxBurst, f.firstBurst = 4096, 8192, 4096 })
	s, err := Dial(t.Context(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := s.Params()
	if p.MaxXmitDataSegmentLength != 4096 || p.MaxBurstLength != 8192 || p.FirstBurstLength != 4096 || p.InitialR2T {
		t.Fatalf("params %+v", p)
	}
	f.mu.Lock()
	got := f.lastParams.MaxXmitDataSegmentLength
	f.mu.Unlock()
	if got != 256<<10 {
		t.Errorf("the target saw our MaxRecvDataSegmentLength as %d", got)
	}
}

func TestRejectFailsOnlyThatCommand(t *testing.T) {
	f := newFakeTarget(t, 1<<20)
	s, err := Dial(t.Context(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lun, err := s.OpenLUN(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeTarget) { f.rejectNext = 1 })
	if err := lun.WriteBlocks(t.Context(), 0, make([]byte, 4096)); !errors.Is(err, ErrRejected) {
		t.Fatalf("rejected write: %v, want ErrRejected", err)
	}
	if err := lun.WriteBlocks(t.Context(), 0, make([]byte, 4096)); err != nil {
		t.Fatalf("the session must survive a Reject: %v", err)
	}
}

func TestAsyncLogoutRequestIsHonoured(t *testing.T) {
	checkNoLeak(t)
	f := newFakeTarget(t, 4<<20)
	f.set(func(f *fakeTarget) { f.asyncLogout = 6 })
	ctx := t.Context()
	w, err := NewWriter(ctx, f.config(), WriterOptions{ChunkSize: 64 << 10, Depth: 4, ReconnectDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	img := randomImage(t, 2<<20)
	if err := writeImage(ctx, w, img, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.snapshot()[:len(img)], img) {
		t.Fatal("disk differs from the image")
	}
	if st := w.Stats(); st.Reconnects == 0 {
		t.Fatalf("the writer never logged in again after the target's logout request: %+v", st)
	}
}

func TestSmallCmdSNWindow(t *testing.T) {
	f := newFakeTarget(t, 4<<20)
	f.set(func(f *fakeTarget) { f.window = 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	w, err := NewWriter(ctx, f.config(), WriterOptions{ChunkSize: 16 << 10, Depth: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	img := randomImage(t, 1<<20)
	if err := writeImage(ctx, w, img, 50000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.snapshot()[:len(img)], img) {
		t.Fatal("disk differs from the image")
	}
}

func TestNOPInStormIsAnswered(t *testing.T) {
	f := newFakeTarget(t, 4<<20)
	f.set(func(f *fakeTarget) { f.nopStorm = 20 })
	ctx := t.Context()
	w, err := NewWriter(ctx, f.config(), WriterOptions{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	img := randomImage(t, 1<<20)
	if err := writeImage(ctx, w, img, 1<<20); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	answers, cmds := f.nopAnswers, f.commands
	f.mu.Unlock()
	// Every response was preceded by 20 pings; the answers may still be on
	// the wire for the last few.
	deadline := time.Now().Add(5 * time.Second)
	for answers < 20*(cmds-1) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		f.mu.Lock()
		answers = f.nopAnswers
		f.mu.Unlock()
	}
	if answers < 20*(cmds-1) {
		t.Fatalf("%d NOP-In pings answered for %d commands", answers, cmds)
	}
}

func TestIdlePingsAnswered(t *testing.T) {
	f := newFakeTarget(t, 1<<20)
	s, err := Dial(t.Context(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f.set(func(f *fakeTarget) { f.nopStorm = 3 })
	// The storm goes out before the answer to our ping; while we wait, the
	// reader must answer the target without any command of ours pending.
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := f.nopAnswers
		f.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 3 idle pings answered", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWriterResumesAfterDroppedSession(t *testing.T) {
	checkNoLeak(t)
	f := newFakeTarget(t, 8<<20)
	f.set(func(f *fakeTarget) { f.dropAfter, f.dropSessions = 5, 2 })
	ctx := t.Context()
	w, err := NewWriter(ctx, f.config(), WriterOptions{ChunkSize: 128 << 10, Depth: 4, ReconnectDelay: time.Millisecond, Verify: VerifySampled, SampleEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	img := randomImage(t, 4<<20+99)
	if err := writeImage(ctx, w, img, 100000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.snapshot()[:len(img)], img) {
		t.Fatal("disk differs from the image after resuming")
	}
	st := w.Stats()
	if st.Reconnects != 2 || len(st.ResumedAt) != 2 {
		t.Fatalf("stats %+v: want two resumed sessions", st)
	}
	if st.ResumedAt[1] <= st.ResumedAt[0] {
		t.Errorf("resume points %v do not move forward", st.ResumedAt)
	}
	if st.Verified == 0 || st.Verified >= int64(len(img)) {
		t.Errorf("sampled verification read %d of %d bytes", st.Verified, len(img))
	}
}

func TestWriterFailsWhenTheTargetStaysAway(t *testing.T) {
	checkNoLeak(t)
	f := newFakeTarget(t, 8<<20)
	f.set(func(f *fakeTarget) { f.dropAfter, f.dropSessions = 3, 100 })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	w, err := NewWriter(ctx, f.config(), WriterOptions{ChunkSize: 64 << 10, Reconnects: 2, ReconnectDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	img := randomImage(t, 2<<20)
	start := time.Now()
	err = writeImage(ctx, w, img, 1<<20)
	if !errors.Is(err, ErrSessionLost) {
		t.Fatalf("write with a target that keeps dropping: %v, want ErrSessionLost", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("failing took %v", time.Since(start))
	}
	if err := w.Sync(); !errors.Is(err, ErrWriterFailed) {
		t.Fatalf("Sync after a failure: %v; a failed writer must never report success", err)
	}
	if _, err := w.WriteAt([]byte{1}, 0); !errors.Is(err, ErrWriterFailed) {
		t.Fatalf("WriteAt after a failure: %v", err)
	}
}

func TestCommandTimeoutEndsTheSession(t *testing.T) {
	checkNoLeak(t)
	f := newFakeTarget(t, 1<<20)
	cfg := f.config()
	cfg.CommandTimeout = 300 * time.Millisecond
	s, err := Dial(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lun, err := s.OpenLUN(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeTarget) { f.hangAfter = f.commands })
	start := time.Now()
	err = lun.WriteBlocks(t.Context(), 0, make([]byte, 4096))
	if !errors.Is(err, ErrSessionLost) || time.Since(start) > 5*time.Second {
		t.Fatalf("hung target: %v after %v", err, time.Since(start))
	}
	if s.Err() == nil {
		t.Fatal("the session is still usable after a timed-out command")
	}
}

func TestContextCancelDuringWrite(t *testing.T) {
	checkNoLeak(t)
	f := newFakeTarget(t, 1<<20)
	s, err := Dial(t.Context(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lun, err := s.OpenLUN(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeTarget) { f.hangAfter = f.commands })
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	buf := make([]byte, 4096)
	err = lun.WriteBlocks(ctx, 0, buf)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled write: %v", err)
	}
	// No goroutine may touch buf any more: the race detector checks this.
	for i := range buf {
		buf[i] = 1
	}
}

func TestWriteBeyondCapacity(t *testing.T) {
	f := newFakeTarget(t, 1<<20)
	ctx := t.Context()
	w, err := NewWriter(ctx, f.config(), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Size() != 1<<20 {
		t.Fatalf("Size = %d", w.Size())
	}
	if _, err := w.WriteAt(make([]byte, 10), w.Size()-5); !errors.Is(err, ErrBeyondCapacity) {
		t.Fatalf("write past the end: %v", err)
	}
	if _, err := w.WriteAt(make([]byte, 1), -1); err == nil {
		t.Fatal("negative offset accepted")
	}
	// The target's own check: a raw WRITE(16) past the end.
	res, err := w.sess.Execute(ctx, Command{LUN: 1, CDB: cdbRW16(opWrite16, 2048, 1), Out: make([]byte, 512)})
	var se *SCSIError
	if !errors.Is(err, ErrLBAOutOfRange) || !errors.As(err, &se) || res.Status != proto.StatusCheckCondition {
		t.Fatalf("raw write past the end: %v (status %d)", err, res.Status)
	}
	if err := w.lun.WriteBlocks(ctx, 2047, make([]byte, 1024)); !errors.Is(err, ErrBeyondCapacity) {
		t.Fatalf("LUN.WriteBlocks past the end: %v", err)
	}
}

func TestOpenLUN(t *testing.T) {
	tests := []struct {
		name  string
		knobs func(f *fakeTarget)
	}{
		{"unit attention after login is absorbed", func(f *fakeTarget) { f.ua = true }},
		{"READ CAPACITY(10) fallback", func(f *fakeTarget) { f.noRC16 = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeTarget(t, 3<<20)
			f.set(tt.knobs)
			s, err := Dial(t.Context(), f.config())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			lun, err := s.OpenLUN(t.Context(), 1)
			if err != nil {
				t.Fatal(err)
			}
			if lun.Blocks != 6144 || lun.BlockSize != 512 || lun.Size() != 3<<20 {
				t.Fatalf("capacity %d x %d", lun.Blocks, lun.BlockSize)
			}
		})
	}
}

// TestSampledVerifyReadsTheLastChunk: an image that ends on a chunk
// boundary has its last chunk submitted by WriteAt, before Sync; sampled
// verification must still read it back.
func TestSampledVerifyReadsTheLastChunk(t *testing.T) {
	f := newFakeTarget(t, 2<<20)
	w, err := NewWriter(t.Context(), f.config(), WriterOptions{ChunkSize: 64 << 10, Verify: VerifySampled, SampleEvery: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	img := randomImage(t, 1<<20) // 16 chunks: only the first is sampled by count
	if _, err := w.WriteAt(img, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeTarget) { f.disk[1<<20-1] ^= 0x40 })
	if err := w.Verify(); !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), fmt.Sprint(1<<20-64<<10)) {
		t.Fatalf("Verify over a corrupted last chunk: %v", err)
	}
	if st := w.Stats(); st.Verified != 64<<10 {
		t.Errorf("verified %d bytes before the corrupt chunk, want the first chunk's 65536", st.Verified)
	}
}

func TestVerifyDetectsCorruption(t *testing.T) {
	f := newFakeTarget(t, 2<<20)
	ctx := t.Context()
	w, err := NewWriter(ctx, f.config(), WriterOptions{ChunkSize: 64 << 10, Verify: VerifyFull})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	img := randomImage(t, 1<<20)
	if _, err := w.WriteAt(img, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeTarget) { f.disk[777777] ^= 0x40 })
	if err := w.Verify(); !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "720896") {
		t.Fatalf("Verify over a corrupted chunk: %v", err)
	}
}

func TestDiscover(t *testing.T) {
	f := newFakeTarget(t, 1<<20)
	got, err := Discover(t.Context(), Config{Portal: f.addr()})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[{%s [%s,1]} {%s.second [192.0.2.1:3260,1 [2001:db8::1]:3260,2]}]", f.iqn, f.addr(), f.iqn)
	if fmt.Sprint(got) != want {
		t.Fatalf("Discover = %v\nwant %v", got, want)
	}
}

func TestInquiryAndReportLUNs(t *testing.T) {
	f := newFakeTarget(t, 1<<20)
	s, err := Dial(t.Context(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	inq, err := s.Inquiry(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if inq.Vendor != "FAKE" || inq.Product != "FAKE DISK" || inq.Revision != "0001" {
		t.Fatalf("inquiry %+v", inq)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no portal", Config{TargetIQN: "iqn.x:y"}},
		{"no target", Config{Portal: "127.0.0.1:1"}},
		{"short CHAP secret", Config{Portal: "127.0.0.1:1", TargetIQN: "iqn.x:y", CHAP: proto.Credentials{User: "u", Secret: "short"}}},
		{"mutual without CHAP", Config{Portal: "127.0.0.1:1", TargetIQN: "iqn.x:y", MutualCHAP: proto.Credentials{User: "t", Secret: "long-enough-secret"}}},
		{"mutual secret equals CHAP secret", Config{Portal: "127.0.0.1:1", TargetIQN: "iqn.x:y",
			CHAP: proto.Credentials{User: "u", Secret: "long-enough-secret"}, MutualCHAP: proto.Credentials{User: "t", Secret: "long-enough-secret"}}},
		{"tiny burst", Config{Portal: "127.0.0.1:1", TargetIQN: "iqn.x:y", MaxBurstLength: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Dial(t.Context(), tt.cfg); !errors.Is(err, ErrConfig) {
				t.Fatalf("Dial: %v, want ErrConfig", err)
			}
		})
	}
	c := Config{Portal: "h:1", TargetIQN: "iqn.x:y", CHAP: proto.Credentials{User: "u", Secret: "super-secret-value"}}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "cfg", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v %#v", c, c), logs.String()} {
		if strings.Contains(s, "super-secret-value") {
			t.Fatalf("secret printed: %s", s)
		}
	}
}

func TestUnreachableTarget(t *testing.T) {
	f := newFakeTarget(t, 1<<20)
	addr := f.addr()
	f.ln.Close()
	start := time.Now()
	_, err := Dial(t.Context(), Config{Portal: addr, TargetIQN: "iqn.x:y", DialTimeout: time.Second})
	if !errors.Is(err, ErrSessionLost) || time.Since(start) > 5*time.Second {
		t.Fatalf("Dial to a closed port: %v after %v", err, time.Since(start))
	}
	_, err = NewWriter(t.Context(), Config{Portal: addr, TargetIQN: "iqn.x:y"}, WriterOptions{})
	if err == nil {
		t.Fatal("NewWriter succeeded without a target")
	}
}

// The streaming API is what shared/imagestream writes into.
var _ interface {
	io.WriterAt
	Sync() error
} = (*Writer)(nil)
