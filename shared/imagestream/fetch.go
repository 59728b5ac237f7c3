package imagestream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ingot-dev/ingot/shared/buildinfo"
)

// errStalled is the cause a request is cancelled with when no byte
// arrived for StallTimeout.
var errStalled = errors.New("stalled")

// errComplete: a resume found nothing left to read.
var errComplete = errors.New("nothing left to read")

// fetcher is the resumable reader under the decompressor: it reads one
// URL's bytes in order, and when the connection drops, stalls or ends
// before Content-Length it asks for the rest with a Range request (with
// If-Range, so a changed file is not spliced) after a backoff. What it
// returns is the served file, byte for byte, whatever happened on the
// wire.
type fetcher struct {
	client   *http.Client
	url      string
	shown    string // url, redacted, for logs and errors
	auth     string // Authorization header value; never logged
	retries  int
	interval time.Duration
	stall    time.Duration
	log      *slog.Logger

	off      int64  // bytes of the file returned so far
	total    int64  // size of the file, -1 if unknown
	etag     string // strong ETag of the first response
	lastMod  string // Last-Modified of the first response
	rangeEnd int64  // end (exclusive) of the current 206 body, -1 if open
	// ranged: every request asks for a Range, even from 0, and a server
	// that ignores Range is an error (random access for qcow2). The
	// validators come from an earlier pass.
	ranged bool

	body   io.ReadCloser
	cancel context.CancelCauseFunc
	rctx   context.Context
	timer  *time.Timer

	failures int          // consecutive failures without progress
	retried  int          // failed attempts that were retried
	resumes  atomic.Int64 // re-requests after bytes were received
	served   atomic.Int64 // mirror of off for the progress reporter
}

func newFetcher(client *http.Client, rawURL, auth string, o Options) *fetcher {
	return &fetcher{
		client: client, url: rawURL, shown: redactURL(rawURL), auth: auth,
		retries: o.Retries, interval: o.RetryInterval, stall: o.StallTimeout, log: o.Log,
		total: -1, rangeEnd: -1,
	}
}

// open makes the first request, retrying retryable failures.
func (f *fetcher) open(ctx context.Context) error {
	for {
		retryAfter, err := f.request(ctx)
		if err == nil {
			return nil
		}
		if err := f.retry(ctx, err, retryAfter); err != nil {
			return err
		}
	}
}

// retry accounts for a failed attempt and waits before the next one; it
// returns the error to give up with instead when retrying cannot help or
// the budget is spent.
func (f *fetcher) retry(ctx context.Context, err error, retryAfter time.Duration) error {
	if ctx.Err() != nil {
		return permanent(fmt.Errorf("get %s: %w", f.shown, ctx.Err()))
	}
	if IsPermanent(err) || errors.Is(err, ErrChanged) {
		return err
	}
	f.failures++
	if f.failures > f.retries {
		return fmt.Errorf("get %s: giving up after %d attempts without progress: %w", f.shown, f.failures, err)
	}
	f.retried++
	d := backoff(f.interval, f.failures)
	if retryAfter > d {
		d = min(retryAfter, maxBackoffFactor*f.interval)
	}
	f.log.Warn("image download failed; retrying", "url", f.shown, "offset", f.off, "attempt", f.failures, "wait", d, "err", err)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return permanent(fmt.Errorf("get %s: %w", f.shown, ctx.Err()))
	case <-t.C:
		return nil
	}
}

// backoff is attempt n's wait: base·2^(n-1), capped at six times base,
// with jitter in [50 %, 100 %].
func backoff(base time.Duration, n int) time.Duration {
	d := base << min(n-1, 8)
	d = min(d, maxBackoffFactor*base)
	return d/2 + rand.N(d/2+1)
}

// request sends one GET for the bytes from f.off on and, when the answer
// is usable, leaves its body in f.body positioned at f.off. It returns the
// server's Retry-After for a retryable status.
func (f *fetcher) request(ctx context.Context) (time.Duration, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, f.url, nil)
	if err != nil {
		cancel(nil)
		return 0, permanent(fmt.Errorf("build request for %s: %w", f.shown, err))
	}
	req.Header.Set("User-Agent", buildinfo.UserAgent("imagestream"))
	// The bytes must stay as served: no transparent Content-Encoding.
	req.Header.Set("Accept-Encoding", "identity")
	if f.auth != "" {
		req.Header.Set("Authorization", f.auth)
	}
	if f.off > 0 || f.ranged {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", f.off))
		if f.etag != "" {
			req.Header.Set("If-Range", f.etag)
		} else if f.lastMod != "" {
			req.Header.Set("If-Range", f.lastMod)
		}
	}
	f.rctx, f.cancel = rctx, cancel
	f.timer = time.AfterFunc(f.stall, func() { cancel(errStalled) })
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, f.fail(fmt.Errorf("get %s: %w", f.shown, f.cause(unwrapURLError(err))))
	}
	f.body = resp.Body
	switch resp.StatusCode {
	case http.StatusOK:
		switch {
		case f.ranged && !f.sameFile(resp):
			return 0, f.fail(fmt.Errorf("get %s: %w", f.shown, ErrChanged))
		case f.ranged:
			return 0, f.fail(permanent(fmt.Errorf("get %s: the server ignores Range requests, which converting a qcow2 image needs: %w",
				f.shown, ErrUnsupportedFormat)))
		case f.off == 0:
			f.first(resp)
			return 0, nil
		}
		return 0, f.restart(resp)
	case http.StatusPartialContent:
		if f.off == 0 && !f.ranged {
			return 0, f.fail(permanent(fmt.Errorf("get %s: 206 Partial Content to a request without Range", f.shown)))
		}
		return 0, f.resume(resp)
	}
	serr := &StatusError{URL: f.shown, Code: resp.StatusCode, Status: resp.Status}
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		// "bytes */N": when the length was unknown (chunked) and the
		// connection died right at the end, N == off means we have it
		// all.
		if _, size, ok := strings.Cut(resp.Header.Get("Content-Range"), "/"); ok && f.total < 0 {
			if n, err := strconv.ParseInt(size, 10, 64); err == nil && n == f.off {
				f.total = n
				return 0, f.fail(errComplete)
			}
		}
		serr.Status += fmt.Sprintf(" (asked for bytes from %d of a file of %d)", f.off, f.total)
	}
	var retryAfter time.Duration
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	if resp.StatusCode < 400 {
		return 0, f.fail(permanent(serr)) // 1xx, 204, 3xx not followed: not an image
	}
	return retryAfter, f.fail(serr)
}

// first records what the first answer says about the file.
func (f *fetcher) first(resp *http.Response) {
	f.total = resp.ContentLength
	if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		f.etag = et
	}
	f.lastMod = resp.Header.Get("Last-Modified")
	f.log.Info("image download started", "url", f.shown, "bytes", f.total, "etag", f.etag != "")
}

// sameFile reports whether a later answer describes the file the first
// one did, as far as its validators tell.
func (f *fetcher) sameFile(resp *http.Response) bool {
	if et := resp.Header.Get("ETag"); f.etag != "" && et != "" && et != f.etag {
		return false
	}
	if lm := resp.Header.Get("Last-Modified"); f.etag == "" && f.lastMod != "" && lm != "" && lm != f.lastMod {
		return false
	}
	return true
}

// resume checks a 206 answer: it must start where we stopped and describe
// the same file.
func (f *fetcher) resume(resp *http.Response) error {
	start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	switch {
	case err != nil:
		return f.fail(fmt.Errorf("get %s: %w", f.shown, err))
	case start != f.off:
		return f.fail(fmt.Errorf("get %s: asked for bytes from %d, got %d: %w", f.shown, f.off, start, ErrChanged))
	case (total >= 0 && f.total >= 0 && total != f.total) || !f.sameFile(resp):
		return f.fail(fmt.Errorf("get %s: %w", f.shown, ErrChanged))
	}
	if f.total < 0 {
		f.total = total // a first answer of unknown length; now we know
	}
	f.rangeEnd = end + 1
	if !f.ranged {
		f.resumes.Add(1)
		f.log.Info("image download resumed", "url", f.shown, "offset", f.off)
	}
	return nil
}

// restart handles a 200 to a Range request: the server ignores Range (or
// If-Range failed because the file changed). The same file is read again
// from the start and the bytes already returned are skipped.
func (f *fetcher) restart(resp *http.Response) error {
	if (resp.ContentLength >= 0 && f.total >= 0 && resp.ContentLength != f.total) || !f.sameFile(resp) {
		return f.fail(fmt.Errorf("get %s: %w", f.shown, ErrChanged))
	}
	f.log.Info("image server ignored Range; skipping what was already read", "url", f.shown, "offset", f.off)
	f.rangeEnd = -1
	skipped := int64(0)
	buf := make([]byte, 64<<10)
	for skipped < f.off {
		n, err := f.body.Read(buf[:min(int64(len(buf)), f.off-skipped)])
		if n > 0 {
			f.timer.Reset(f.stall)
			skipped += int64(n)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return f.fail(fmt.Errorf("get %s: skip to offset %d: %w", f.shown, f.off, f.cause(err)))
		}
	}
	f.resumes.Add(1)
	return nil
}

// fail releases the current request and returns err.
func (f *fetcher) fail(err error) error {
	f.closeBody()
	return err
}

// cause replaces a cancelled request's error with why it was cancelled.
func (f *fetcher) cause(err error) error {
	if c := context.Cause(f.rctx); errors.Is(c, errStalled) {
		return fmt.Errorf("no data for %s: %w", f.stall, errStalled)
	}
	return err
}

func (f *fetcher) closeBody() {
	if f.timer != nil {
		f.timer.Stop()
	}
	if f.body != nil {
		f.body.Close()
		f.body = nil
	}
	if f.cancel != nil {
		f.cancel(nil)
	}
}

// fill reads until buf is full, the file ends (io.EOF) or the download
// fails for good; a dropped connection is resumed transparently. The stall
// watchdog only runs inside fill: time spent waiting for the consumer
// (a slow disk) is not a stalled server.
func (f *fetcher) fill(ctx context.Context, buf []byte) (int, error) {
	if f.body != nil {
		f.timer.Reset(f.stall)
	}
	defer func() {
		if f.timer != nil {
			f.timer.Stop() // whichever request is current when fill returns
		}
	}()
	n := 0
	for n < len(buf) {
		if f.body == nil {
			if f.total >= 0 && f.off >= f.total {
				return n, io.EOF
			}
			retryAfter, err := f.request(ctx)
			if err == errComplete {
				return n, io.EOF
			}
			if err != nil {
				if err := f.retry(ctx, err, retryAfter); err != nil {
					return n, err
				}
				continue
			}
		}
		m, err := f.body.Read(buf[n:])
		if m > 0 {
			f.timer.Reset(f.stall)
			n += m
			f.off += int64(m)
			f.served.Store(f.off)
			f.failures = 0
		}
		if err == nil {
			continue
		}
		err = f.cause(err)
		f.closeBody()
		if err == io.EOF {
			if f.rangeEnd >= 0 && f.off == f.rangeEnd && (f.total < 0 || f.off < f.total) {
				continue // the server sent a shorter range than asked: ask for the next
			}
			if f.total < 0 || f.off >= f.total {
				return n, io.EOF
			}
			err = io.ErrUnexpectedEOF
		}
		err = fmt.Errorf("read %s at offset %d: %w", f.shown, f.off, err)
		if err := f.retry(ctx, err, 0); err != nil {
			return n, err
		}
	}
	return n, nil
}

// parseContentRange parses "bytes start-end/total" (total may be "*",
// returned as -1).
func parseContentRange(s string) (start, end, total int64, err error) {
	spec, ok := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	rng, tot, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	total = -1
	var err3 error
	if tot != "*" {
		total, err3 = strconv.ParseInt(tot, 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || (total >= 0 && end >= total) {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	return start, end, total, nil
}

// unwrapURLError drops net/http's *url.Error, whose message repeats the
// URL with its query (possibly a signature); callers name the URL
// redacted.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
