package imagestream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// These tests run Stream with its default timings (10 s retry interval,
// 60 s stall timeout) on synctest's fake clock: the image server is
// called in memory, through io.Pipe, so every wait is durably blocking
// and the clock jumps instead of the test waiting.

func TestStreamDefaultTimingsOnAFakeClock(t *testing.T) {
	img := makeImage(40, 300_000)
	for _, tc := range []struct {
		name     string
		script   []fault
		min, max time.Duration
	}{
		// Backoff: attempt n waits 10 s·2^(n-1) with jitter in [50 %, 100 %].
		{"two 503s back off 5-10 s then 10-20 s", []fault{{status: 503}, {status: 503}}, 15 * time.Second, 30 * time.Second},
		// Stall: 60 s without a byte, then a 5-10 s backoff, then the rest.
		{"a stall is detected after 60 s and resumed", []fault{{stallAfter: 1000}}, 65 * time.Second, 70 * time.Second},
		{"Retry-After is capped at six intervals", []fault{{status: 503, retryAfter: 86400}}, 60 * time.Second, 60 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newImageServer()
				s.add("disk.img", img)
				s.script = tc.script
				opts := Options{Client: &http.Client{Transport: &handlerTransport{h: s}}, Log: testOptions(t).Log}
				dst := newMemTarget()
				start := time.Now()
				_, err := Stream(t.Context(), imageInfo("http://images.invalid/disk.img", img), dst, opts)
				elapsed := time.Since(start)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(dst.bytes(), img) {
					t.Fatal("wrong bytes written")
				}
				if elapsed < tc.min || elapsed > tc.max {
					t.Errorf("took %v on the fake clock, want %v to %v", elapsed, tc.min, tc.max)
				}
			})
		})
	}
}

func TestStreamCancelOnAFakeClock(t *testing.T) {
	img := makeImage(41, 3<<20)
	for _, tc := range []struct {
		name   string
		script []fault
		always *fault
	}{
		{"while the server stalls", []fault{{stallAfter: 1 << 20}}, nil},
		{"while backing off", nil, &fault{status: 503}},
		{"while waiting for headers", nil, &fault{hang: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newImageServer()
				s.add("disk.img", img)
				s.script, s.always = tc.script, tc.always
				ctx, cancel := context.WithTimeout(t.Context(), 7*time.Second)
				defer cancel()
				opts := Options{Client: &http.Client{Transport: &handlerTransport{h: s}}, Log: testOptions(t).Log}
				start := time.Now()
				_, err := Stream(ctx, imageInfo("http://images.invalid/disk.img", img), newMemTarget(), opts)
				if d := time.Since(start); d != 7*time.Second {
					t.Errorf("Stream returned %v after starting, want exactly at the 7 s deadline", d)
				}
				if !errors.Is(err, context.DeadlineExceeded) || !IsPermanent(err) {
					t.Errorf("err %v, want a permanent deadline error", err)
				}
			})
		})
	}
}

// TestStreamSlowTargetIsNotAStall: a write that takes longer than the
// stall timeout holds the download back (bounded buffers), which must not
// count as a stalled server.
func TestStreamSlowTargetIsNotAStall(t *testing.T) {
	img := makeImage(42, 12<<20)
	synctest.Test(t, func(t *testing.T) {
		s := newImageServer()
		s.add("disk.img", img)
		opts := Options{Client: &http.Client{Transport: &handlerTransport{h: s}}, Log: testOptions(t).Log}
		dst := &slowTarget{memTarget: newMemTarget(), delay: 3 * time.Minute, at: 2 << 20}
		res, err := Stream(t.Context(), imageInfo("http://images.invalid/disk.img", img), dst, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Resumes != 0 || res.Retries != 0 || len(s.reqs()) != 1 || !bytes.Equal(dst.bytes(), img) {
			t.Errorf("result %+v after %d requests: a slow disk was taken for a stalled server", res, len(s.reqs()))
		}
	})
}

// slowTarget takes delay (on the fake clock) over the write at offset at.
type slowTarget struct {
	*memTarget
	delay time.Duration
	at    int64
}

func (s *slowTarget) WriteAt(p []byte, off int64) (int, error) {
	if off == s.at {
		time.Sleep(s.delay)
	}
	return s.memTarget.WriteAt(p, off)
}

// handlerTransport calls an http.Handler in memory: the response body is
// an io.Pipe the handler writes into. It honours the request's context and
// Content-Length like net/http's transport, and turns a handler's
// http.ErrAbortHandler panic into a dropped connection.
type handlerTransport struct{ h http.Handler }

func (ht *handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				panic(p)
			}
			w.writeHeader(http.StatusOK)
			pw.CloseWithError(io.ErrUnexpectedEOF) // a no-op after a clean Close
		}()
		ht.h.ServeHTTP(w, req)
		w.writeHeader(http.StatusOK)
		pw.Close()
	}()
	go func() {
		select {
		case <-req.Context().Done():
			pr.CloseWithError(req.Context().Err())
		case <-done:
		}
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	cl := int64(-1)
	if v := w.header.Get("Content-Length"); v != "" {
		cl, _ = strconv.ParseInt(v, 10, 64)
	}
	var body io.ReadCloser = pr
	if cl >= 0 {
		body = &lengthBody{r: pr, left: cl}
	}
	return &http.Response{StatusCode: w.status, Status: strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		Header: w.header, ContentLength: cl, Body: body, Request: req}, nil
}

// pipeWriter is the handler's side of handlerTransport.
type pipeWriter struct {
	header http.Header
	pw     *io.PipeWriter
	status int
	once   sync.Once
	ready  chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }
func (w *pipeWriter) Flush()              {}

func (w *pipeWriter) WriteHeader(code int) { w.writeHeader(code) }

func (w *pipeWriter) writeHeader(code int) {
	w.once.Do(func() {
		w.header = w.header.Clone()
		w.status = code
		close(w.ready)
	})
}

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.writeHeader(http.StatusOK)
	return w.pw.Write(p)
}

// lengthBody reports an early end of a body with a Content-Length as
// io.ErrUnexpectedEOF, as net/http does.
type lengthBody struct {
	r    io.ReadCloser
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return b.r.Close() }
