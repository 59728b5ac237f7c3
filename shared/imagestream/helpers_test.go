package imagestream

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/imagestream/internal/testimage"
)

// makeImage returns size deterministic, semi-compressible bytes (see
// internal/testimage).
func makeImage(seed uint64, size int) []byte { return testimage.New(seed, size) }

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zstdBytes compresses b; withSize records the frame content size in the
// header, as the zstd CLI does for a file.
func zstdBytes(t testing.TB, b []byte, withSize bool, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	opts = append([]zstd.EOption{zstd.WithEncoderConcurrency(1)}, opts...)
	w, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if withSize {
		w.ResetContentSize(&buf, int64(len(b)))
	} else {
		w.Reset(&buf)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func xzBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 1 << 20}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fault is one scripted misbehaviour of the image server, applied to one
// request (the script's n-th entry to the n-th request).
type fault struct {
	status      int   // answer this status instead of the image
	retryAfter  int   // with status: Retry-After seconds
	cutAfter    int64 // > 0: close the connection after this many body bytes
	stallAfter  int64 // > 0: stop sending after this many body bytes, until the client gives up
	ignoreRange bool  // answer 200 with the whole file
	lieLength   int64 // != 0: announce Content-Length = real + lieLength and send what exists
	chunked     bool  // no Content-Length (chunked encoding), Range ignored
	closeDelim  bool  // HTTP/1.0-style: no length, end = connection close (needs a real server)
	drip        bool  // send one byte per write, flushing each
	hang        bool  // send nothing, not even headers, until the client gives up
	swap        []byte
}

// request is what the image server saw.
type request struct {
	Path    string
	Range   string
	IfRange string
	Auth    string
}

// imageServer serves named files with http.ServeContent (Range, If-Range,
// ETag for free) and applies a fault script.
type imageServer struct {
	mu       sync.Mutex
	files    map[string][]byte
	etags    map[string]string
	noValid  bool // no ETag, no Last-Modified
	script   []fault
	always   *fault // applied to every request after the script
	requests []request
	modTime  time.Time
	served   atomic.Int64  // bytes the handler wrote
	wrote    chan struct{} // closed on the first body bytes written (if non-nil)
	once     sync.Once
}

func newImageServer() *imageServer {
	return &imageServer{files: map[string][]byte{}, etags: map[string]string{},
		modTime: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
}

func (s *imageServer) add(name string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[name] = b
	s.etags[name] = `"` + sha256Hex(b)[:16] + `"`
}

func (s *imageServer) reqs() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.requests...)
}

func (s *imageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, request{Path: r.URL.Path, Range: r.Header.Get("Range"),
		IfRange: r.Header.Get("If-Range"), Auth: r.Header.Get("Authorization")})
	var f fault
	if n := len(s.requests) - 1; n < len(s.script) {
		f = s.script[n]
	} else if s.always != nil {
		f = *s.always
	}
	name := strings.TrimPrefix(r.URL.Path, "/")
	content, ok := s.files[name]
	etag := s.etags[name]
	if f.swap != nil {
		s.files[name] = f.swap
		s.etags[name] = `"` + sha256Hex(f.swap)[:16] + `"`
		content, etag = f.swap, s.etags[name]
	}
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if f.hang {
		<-r.Context().Done()
		return
	}
	if f.status != 0 {
		if f.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(f.retryAfter))
		}
		http.Error(w, http.StatusText(f.status), f.status)
		return
	}
	bw := &faultWriter{ResponseWriter: w, s: s, f: f, ctx: r.Context()}
	switch {
	case f.closeDelim:
		s.serveCloseDelimited(w, content, f)
		return
	case f.chunked:
		if !s.noValid {
			w.Header().Set("ETag", etag)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		bw.Write(content)
		return
	case f.lieLength != 0:
		w.Header().Set("Content-Length", strconv.FormatInt(int64(len(content))+f.lieLength, 10))
		w.WriteHeader(http.StatusOK)
		bw.Write(content[:min(len(content), len(content)+int(f.lieLength))])
		return
	}
	if f.ignoreRange {
		r.Header.Del("Range")
	}
	if !s.noValid {
		w.Header().Set("ETag", etag)
	}
	mod := s.modTime
	if s.noValid {
		mod = time.Time{}
	}
	http.ServeContent(bw, r, name, mod, bytes.NewReader(content))
}

// serveCloseDelimited writes an HTTP/1.0-style answer (no length: the end
// is the connection closing), cut after f.cutAfter bytes if set.
func (s *imageServer) serveCloseDelimited(w http.ResponseWriter, content []byte, f fault) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("closeDelim needs a real server")
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	if f.cutAfter > 0 {
		content = content[:min(int64(len(content)), f.cutAfter)]
	}
	buf.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n\r\n")
	buf.Write(content)
	buf.Flush()
}

// faultWriter applies cut, stall and drip to a response body.
type faultWriter struct {
	http.ResponseWriter
	s       *imageServer
	f       fault
	ctx     context.Context
	written int64
}

func (w *faultWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		q := p
		if w.f.drip {
			q = p[:1]
		}
		limit := int64(-1)
		if w.f.cutAfter > 0 {
			limit = w.f.cutAfter
		}
		if w.f.stallAfter > 0 {
			limit = w.f.stallAfter
		}
		if limit >= 0 && w.written+int64(len(q)) >= limit {
			q = q[:limit-w.written]
			n, _ := w.ResponseWriter.Write(q)
			w.written += int64(n)
			w.s.served.Add(int64(n))
			w.ResponseWriter.(http.Flusher).Flush()
			w.signal()
			if w.f.stallAfter > 0 {
				<-w.ctx.Done() // until the client gives up
			}
			panic(http.ErrAbortHandler) // drop the connection
		}
		n, err := w.ResponseWriter.Write(q)
		w.written += int64(n)
		w.s.served.Add(int64(n))
		total += n
		if n > 0 {
			w.signal()
		}
		if err != nil {
			return total, err
		}
		if w.f.drip {
			w.ResponseWriter.(http.Flusher).Flush()
		}
		p = p[len(q):]
	}
	return total, nil
}

func (w *faultWriter) signal() {
	if w.s.wrote != nil {
		w.s.once.Do(func() { close(w.s.wrote) })
	}
}

// memTarget is an in-memory Target with fault knobs.
type memTarget struct {
	mu       sync.Mutex
	b        []byte
	writes   int
	syncs    int
	eioAt    int64 // >= 0: a write covering this offset fails with EIO
	short    bool  // writes write at most half and report no error
	shortErr bool  // writes write at most half and report io.ErrShortWrite
	syncErr  error
}

func newMemTarget() *memTarget { return &memTarget{eioAt: -1} }

func (m *memTarget) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	if m.eioAt >= 0 && off <= m.eioAt && m.eioAt < off+int64(len(p)) {
		return 0, &os.PathError{Op: "write", Path: "/dev/fake", Err: syscall.EIO}
	}
	var err error
	if (m.short || m.shortErr) && len(p) > 1 {
		p = p[:len(p)/2]
		if m.shortErr {
			err = io.ErrShortWrite
		}
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	copy(m.b[off:], p)
	return len(p), err
}

func (m *memTarget) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.syncs++
	return m.syncErr
}

func (m *memTarget) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.b...)
}

// fileTarget is a temp file counting Syncs.
type fileTarget struct {
	*os.File
	syncs atomic.Int32
}

func newFileTarget(t *testing.T) *fileTarget {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &fileTarget{File: f}
}

func (f *fileTarget) Sync() error { f.syncs.Add(1); return f.File.Sync() }

func (f *fileTarget) content(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testOptions are fast options for tests: tiny backoff and stall timeout,
// a logger writing to the test's output.
func testOptions(t testing.TB) Options {
	return Options{
		Retries:       3,
		RetryInterval: time.Millisecond,
		StallTimeout:  2 * time.Second,
		Log:           slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func imageInfo(url string, content []byte) api.ImageInfo {
	return api.ImageInfo{ID: "img-1", URLs: []string{url}, OSHashAlgo: "sha256", OSHashValue: sha256Hex(content)}
}

// startServer runs s on a loopback httptest server.
func startServer(t *testing.T, s *imageServer) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

// ownGoroutines lists goroutines running this package's non-test code,
// which must all be gone once Stream returns.
func ownGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "shared/imagestream.") && !strings.Contains(g, "_test.go") &&
			!strings.Contains(g, "shared/imagestream.ownGoroutines") {
			out = append(out, g)
		}
	}
	return out
}

func checkNoLeak(t *testing.T) {
	t.Helper()
	if g := ownGoroutines(); len(g) > 0 {
		t.Errorf("goroutines left behind by Stream:\n%s", strings.Join(g, "\n\n"))
	}
}

// mustErr asserts err matches target (errors.Is) and returns its message.
func mustErr(t *testing.T, err, target error) string {
	t.Helper()
	if err == nil {
		t.Fatalf("Stream succeeded, want an error matching %v", target)
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("error %q does not match %v", err, target)
	}
	return err.Error()
}
