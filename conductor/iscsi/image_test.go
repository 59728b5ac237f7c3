package iscsi

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/imagestream"
	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// imageServer serves images by path with Range support, as the
// conductor's image cache does.
func imageServer(t *testing.T, images map[string][]byte) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := images[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "img", time.Unix(0, 0), bytes.NewReader(b))
	}))
	t.Cleanup(s.Close)
	return s
}

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zst compresses b as two frames: the first frame's header promises only
// its own size, so the image's size is unknown from the header.
func zst(t *testing.T, b []byte) []byte {
	var out []byte
	for _, part := range [][]byte{b[:len(b)/2], b[len(b)/2:]} {
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, enc.EncodeAll(part, nil)...)
		enc.Close()
	}
	return out
}

func infoFor(srv *httptest.Server, path string, served []byte) api.ImageInfo {
	return api.ImageInfo{ID: strings.TrimPrefix(path, "/"), URLs: []string{srv.URL + path}, OSHashAlgo: "sha256", OSHashValue: sha256hex(served)}
}

// recorder keeps every progress report.
type recorder struct {
	mu   sync.Mutex
	seen []api.Progress
}

func (r *recorder) add(p api.Progress) { r.mu.Lock(); r.seen = append(r.seen, p); r.mu.Unlock() }

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) == 0 {
		t.Fatal("no progress reported")
	}
	var pct float64
	var bytes int64
	for _, p := range r.seen {
		if p.Percent < pct || p.Bytes < bytes {
			t.Fatalf("progress went backwards: %+v", r.seen)
		}
		pct, bytes = p.Percent, p.Bytes
	}
	if last := r.seen[len(r.seen)-1]; last.Phase != imagestream.PhaseDone || last.Percent != 100 {
		t.Errorf("last progress %+v, want done at 100 %%", last)
	}
}

func fastImageOptions() ImageOptions {
	return ImageOptions{
		Writer:             WriterOptions{ChunkSize: 256 << 10, ReconnectDelay: time.Millisecond, Verify: VerifySampled, SampleEvery: 4},
		LoginAttempts:      3,
		LoginRetryInterval: time.Millisecond,
		Stream:             imagestream.Options{RetryInterval: time.Millisecond, Retries: 2},
	}
}

func TestWriteImage(t *testing.T) {
	raw := randomImage(t, 3<<20+777) // not a multiple of the block size
	images := map[string][]byte{"/disk.raw": raw, "/disk.raw.gz": gz(t, raw), "/disk.raw.zst": zst(t, raw)}
	srv := imageServer(t, images)
	for _, tc := range []struct {
		path         string
		wantVerified bool
	}{
		{"/disk.raw", false},
		{"/disk.raw.gz", true},
		{"/disk.raw.zst", true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			checkNoLeak(t)
			f := newFakeTarget(t, 8<<20)
			var rec recorder
			opts := fastImageOptions()
			opts.Progress = rec.add
			res, err := WriteImage(t.Context(), f.config(), infoFor(srv, tc.path, images[tc.path]), opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f.snapshot()[:len(raw)], raw) {
				t.Fatal("the LUN does not hold the image")
			}
			if res.Verified != tc.wantVerified || res.Stream.Written != int64(len(raw)) || res.LUNBytes != 8<<20 || res.Logins != 1 {
				t.Errorf("result %+v", res)
			}
			if res.Writer.Verified == 0 {
				t.Error("nothing was read back")
			}
			rec.check(t)
		})
	}
}

func TestWriteImageFaults(t *testing.T) {
	raw := randomImage(t, 2<<20)
	big := randomImage(t, 3<<20)
	images := map[string][]byte{"/disk.raw": raw, "/big.raw": big, "/big.raw.gz": gz(t, big), "/big.raw.zst": zst(t, big),
		"/disk.raw.gz": gz(t, raw)}
	srv := imageServer(t, images)
	for _, tc := range []struct {
		name string
		// lun size, image path, knobs
		lun        int
		path       string
		info       func(api.ImageInfo) api.ImageInfo
		cfg        func(Config) Config
		knobs      func(f *fakeTarget)
		opts       func(*ImageOptions)
		wantErr    []error
		wantLogins int
		// nothing may reach the LUN
		wantUntouched bool
		noLogin       bool // the target must not even see a login
		wantWritten   bool // the image must be on the LUN (resumed)
	}{
		{name: "a raw image larger than the LUN writes nothing", lun: 2 << 20, path: "/big.raw",
			wantErr: []error{imagestream.ErrTooLarge}, wantUntouched: true},
		{name: "a gzip image larger than the LUN writes nothing", lun: 2 << 20, path: "/big.raw.gz",
			wantErr: []error{imagestream.ErrTooLarge}, wantUntouched: true},
		{name: "a multi-frame zstd image larger than the LUN writes nothing", lun: 2 << 20, path: "/big.raw.zst",
			wantErr: []error{imagestream.ErrTooLarge}, wantUntouched: true},
		{name: "a compressed image with a wrong checksum never reaches the target", lun: 4 << 20, path: "/disk.raw.gz",
			info:    func(i api.ImageInfo) api.ImageInfo { i.OSHashValue = strings.Repeat("0", 64); return i },
			wantErr: []error{imagestream.ErrChecksum}, wantUntouched: true, noLogin: true},
		{name: "a raw image with a wrong checksum fails", lun: 4 << 20, path: "/disk.raw",
			info:    func(i api.ImageInfo) api.ImageInfo { i.OSHashValue = strings.Repeat("0", 64); return i },
			wantErr: []error{imagestream.ErrChecksum}},
		{name: "a missing image fails before logging in", lun: 4 << 20, path: "/missing.raw",
			info:    func(i api.ImageInfo) api.ImageInfo { i.URLs = []string{srv.URL + "/missing.raw"}; return i },
			wantErr: []error{}, wantUntouched: true, noLogin: true},
		{name: "wrong CHAP credentials fail at once", lun: 4 << 20, path: "/disk.raw",
			knobs:   func(f *fakeTarget) { f.chap = proto.Credentials{User: "ingot", Secret: "the-right-secret"} },
			cfg:     func(c Config) Config { c.CHAP = proto.Credentials{User: "ingot", Secret: "a-wrong-secret!"}; return c },
			wantErr: []error{proto.LoginAuthFailure}, wantLogins: 1, wantUntouched: true},
		{name: "sessions dropped mid-write resume", lun: 4 << 20, path: "/disk.raw",
			knobs: func(f *fakeTarget) { f.dropAfter, f.dropSessions = 3, 2 }, wantWritten: true},
		{name: "a target that keeps dropping fails, never succeeds", lun: 4 << 20, path: "/disk.raw",
			knobs:   func(f *fakeTarget) { f.dropAfter, f.dropSessions = 2, 1000 },
			opts:    func(o *ImageOptions) { o.Writer.Reconnects = 2 },
			wantErr: []error{ErrSessionLost}},
		{name: "an unreachable target fails after bounded logins", lun: 4 << 20, path: "/disk.raw",
			cfg:     func(c Config) Config { c.Portal = closedPort(t); return c },
			wantErr: []error{ErrTargetUnreachable, ErrSessionLost}, wantLogins: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			f := newFakeTarget(t, tc.lun)
			if tc.knobs != nil {
				f.set(tc.knobs)
			}
			cfg := f.config()
			if tc.cfg != nil {
				cfg = tc.cfg(cfg)
			}
			info := infoFor(srv, tc.path, images[tc.path])
			if tc.info != nil {
				info = tc.info(info)
			}
			opts := fastImageOptions()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			start := time.Now()
			res, err := WriteImage(t.Context(), cfg, info, opts)
			if time.Since(start) > 20*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil {
				t.Fatal("WriteImage succeeded")
			}
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("error %v, want %v", err, want)
				}
			}
			if tc.wantLogins != 0 && res.Logins != tc.wantLogins {
				t.Errorf("%d logins, want %d", res.Logins, tc.wantLogins)
			}
			f.mu.Lock()
			writes, logins := f.writes, f.logins
			f.mu.Unlock()
			if tc.noLogin && logins != 0 {
				t.Errorf("the target saw %d logins", logins)
			}
			if tc.wantUntouched && (writes != 0 || !bytes.Equal(f.snapshot(), make([]byte, tc.lun))) {
				t.Errorf("%d writes reached the LUN", writes)
			}
			if tc.wantWritten {
				if !bytes.Equal(f.snapshot()[:len(raw)], raw) {
					t.Error("the LUN does not hold the image")
				}
				if res.Writer.Reconnects != 2 {
					t.Errorf("%d reconnects, want 2", res.Writer.Reconnects)
				}
			}
		})
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	f := newFakeTarget(t, 512)
	addr := f.addr()
	f.ln.Close()
	return addr
}

// TestWriteImageAfter: the after-image hook gets random access to the
// LUN: unaligned reads see the image, unaligned writes merge with it, and
// everything is synced before WriteImage returns.
func TestWriteImageAfter(t *testing.T) {
	raw := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "disk.raw", time.Unix(0, 0), bytes.NewReader(raw))
	}))
	t.Cleanup(srv.Close)
	f := newFakeTarget(t, 8<<20)
	opts := fastImageOptions()
	var sawSize int64
	var sawBS int
	opts.After = func(lun LUNAccess, size int64, bs int) error {
		sawSize, sawBS = size, bs
		got := make([]byte, 40)
		if n, err := lun.ReadAt(got, 1000); n != 40 || err != nil || !bytes.Equal(got, raw[1000:1040]) {
			return fmt.Errorf("ReadAt after the image: %d %v %q", n, err, got)
		}
		if _, err := lun.WriteAt([]byte("PATCH"), 446); err != nil {
			return err
		}
		if _, err := lun.WriteAt([]byte("tail-of-lun"), 8<<20-11); err != nil {
			return err
		}
		if n, err := lun.ReadAt(got[:5], 446); n != 5 || err != nil || string(got[:5]) != "PATCH" {
			return fmt.Errorf("read back the patch: %d %v %q", n, err, got[:5])
		}
		if n, err := lun.ReadAt(got, 8<<20-20); n != 20 || err != io.EOF {
			return fmt.Errorf("read past the end: %d %v", n, err)
		}
		return nil
	}
	if _, err := WriteImage(t.Context(), f.config(), infoFor(srv, "/disk.raw", raw), opts); err != nil {
		t.Fatal(err)
	}
	if sawSize != 8<<20 || sawBS != 512 {
		t.Errorf("hook saw size %d, block size %d", sawSize, sawBS)
	}
	disk := f.snapshot()
	want := bytes.Clone(raw)
	copy(want[446:], "PATCH")
	if !bytes.Equal(disk[:len(raw)], want) || string(disk[8<<20-11:]) != "tail-of-lun" {
		t.Error("the LUN does not hold the image with the hook's writes")
	}

	opts.After = func(LUNAccess, int64, int) error { return errors.New("no room for the drive") }
	if _, err := WriteImage(t.Context(), f.config(), infoFor(srv, "/disk.raw", raw), opts); err == nil || !strings.Contains(err.Error(), "no room") {
		t.Errorf("a failing hook: %v", err)
	}
}
