package imagestream

import (
	"compress/bzip2"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/ingot-dev/ingot/shared/api"
)

// Pipeline sizing: memory in flight is (fetchBufs + writeBufs) × bufSize
// plus the decoder's window. Writes are bufSize long at bufSize-aligned
// offsets, except the last one, which suits O_DIRECT targets.
const (
	bufSize   = 1 << 20
	fetchBufs = 4
	writeBufs = 4
	// maxChecksumFile bounds a checksum file's size.
	maxChecksumFile = 1 << 20
)

// Progress phases.
const (
	PhaseStreaming  = "streaming"  // download, decompress and write in one pass
	PhaseVerifying  = "verifying"  // qcow2 pass 1: download and hash, no writes
	PhaseConverting = "converting" // qcow2 pass 2: Range reads, writes
	PhaseSyncing    = "syncing"
	PhaseDone       = "done"
)

// Stream downloads the image info describes and writes it to dst from
// offset 0, verifying its checksum over the served bytes, then syncs dst.
// It tries info.URLs in order until one answers; once bytes flow it stays
// with that URL and resumes it after failures. A returned error means the
// image must not be booted; IsPermanent tells whether a new attempt can
// help. Stream returns promptly when ctx is cancelled and leaves no
// goroutine behind.
func Stream(ctx context.Context, info api.ImageInfo, dst Target, opts Options) (Result, error) {
	start := time.Now()
	opts = opts.withDefaults()
	log := opts.Log.With("image", info.ID)
	opts.Log = log
	if dst == nil {
		return Result{}, permanent(errors.New("stream image: no target"))
	}
	if len(info.URLs) == 0 {
		return Result{}, permanent(errors.New("stream image: image_info has no urls"))
	}
	for _, u := range info.URLs {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return Result{}, permanent(fmt.Errorf("stream image: %s is not an http(s) URL", redactURL(u)))
		}
	}
	auth := ""
	if info.ImageRequestAuthorization != "" {
		b, err := base64.StdEncoding.DecodeString(info.ImageRequestAuthorization)
		if err != nil {
			return Result{}, permanent(errors.New("stream image: image_request_authorization is not base64"))
		}
		auth = string(b)
	}
	client := opts.Client
	if client == nil {
		client = newDefaultClient(info, opts.Insecure)
		defer client.CloseIdleConnections()
	}

	plan, err := planChecksum(info, opts.MD5Allowed)
	if err != nil {
		return Result{}, err
	}
	if plan.warning != "" {
		log.Warn(plan.warning)
	}
	algo, want, err := resolveChecksum(ctx, client, info, plan, auth, opts)
	if err != nil {
		return Result{}, err
	}
	_, newHash, _ := hashAlgo(algo)

	f, err := openFirst(ctx, client, info.URLs, auth, opts)
	if err != nil {
		return Result{}, err
	}
	defer f.closeBody()

	s := &streamer{f: f, dst: dst, opts: opts, info: info, hash: newHash()}
	res, err := s.run(ctx)
	res.Algo, res.URL = algo, f.shown
	res.Served, res.Resumes, res.Retries = f.off, int(f.resumes.Load()), f.retried
	res.Duration = time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			err = permanent(fmt.Errorf("stream image %s: %w", info.ID, ctx.Err()))
		}
		log.Error("image stream failed", "url", f.shown, "bytes", res.Written, "err", err)
		return res, err
	}
	if got := hex.EncodeToString(s.hash.Sum(nil)); got != want {
		err := fmt.Errorf("%w: %s of %s (%d bytes as served) is %s, expected %s (from %s)",
			ErrChecksum, algo, f.shown, f.off, got, want, plan.source)
		log.Error("image checksum mismatch", "url", f.shown, "bytes", res.Written, "err", err)
		return res, err
	}
	res.Digest = want
	if s.qcow2 != nil {
		written, err := s.convertQcow2(ctx, *s.qcow2)
		res.Written, res.Duration = written, time.Since(start)
		if err != nil {
			if ctx.Err() != nil {
				err = permanent(fmt.Errorf("stream image %s: %w", info.ID, ctx.Err()))
			}
			log.Error("qcow2 conversion failed", "url", f.shown, "bytes", written, "err", err)
			return res, err
		}
	}
	s.progress.report(res.Written, PhaseSyncing, true)
	if err := dst.Sync(); err != nil {
		return res, permanent(fmt.Errorf("sync target: %w", err))
	}
	res.Duration = time.Since(start)
	s.progress.report(res.Written, PhaseDone, true)
	log.Info("image written", "url", f.shown, "bytes", res.Written, "format", res.Format,
		"algo", algo, "resumes", res.Resumes, "duration", res.Duration.Round(time.Millisecond),
		"mib_per_s", float64(res.Written)/(1<<20)/max(res.Duration.Seconds(), 1e-9))
	return res, nil
}

// openFirst returns a fetcher with the first URL that answers, trying the
// next one when a URL fails for good or runs out of retries.
func openFirst(ctx context.Context, client *http.Client, urls []string, auth string, o Options) (*fetcher, error) {
	var errs []error
	for _, u := range urls {
		f := newFetcher(client, u, auth, o)
		err := f.open(ctx)
		if err == nil {
			return f, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	err := errors.Join(errs...)
	allPermanent := true
	for _, e := range errs {
		allPermanent = allPermanent && IsPermanent(e)
	}
	if allPermanent {
		return nil, permanent(fmt.Errorf("every image url failed: %w", err))
	}
	return nil, &transientError{fmt.Errorf("every image url failed: %w", err)}
}

// resolveChecksum returns the algorithm and digest to verify, fetching a
// checksum file when the plan says so.
func resolveChecksum(ctx context.Context, client *http.Client, info api.ImageInfo, p checksumPlan, auth string, o Options) (algo, want string, err error) {
	if p.fileURL == "" {
		return p.algo, p.digest, nil
	}
	name, err := ImageBasename(info.URLs[0])
	if err != nil {
		return "", "", err
	}
	// The image's Authorization goes to the checksum file only on the
	// image's own host.
	if cu, iu := parseURL(p.fileURL), parseURL(info.URLs[0]); cu == nil || iu == nil || cu.Host != iu.Host {
		auth = ""
	}
	f := newFetcher(client, p.fileURL, auth, o)
	if err := f.open(ctx); err != nil {
		return "", "", fmt.Errorf("fetch checksum file: %w", err)
	}
	defer f.closeBody()
	buf := make([]byte, maxChecksumFile+1)
	n, err := f.fill(ctx, buf)
	if err != nil && err != io.EOF {
		return "", "", fmt.Errorf("fetch checksum file: %w", err)
	}
	if n > maxChecksumFile {
		return "", "", permanent(fmt.Errorf("checksum file %s is larger than %d bytes", f.shown, maxChecksumFile))
	}
	digest, fileAlgo, err := ParseChecksumFile(buf[:n], name)
	if err != nil {
		return "", "", fmt.Errorf("checksum file %s: %w", f.shown, err)
	}
	return finishPlan(p, digest, fileAlgo, o.MD5Allowed)
}

func parseURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		return nil
	}
	return u
}

// chunk is a filled buffer travelling down the pipeline; pool is where it
// goes back once written.
type chunk struct {
	b    []byte
	pool chan []byte
}

// streamer runs one Stream's pipeline: fetch+hash -> decode -> write, one
// goroutine each, connected by bounded channels of recycled buffers.
type streamer struct {
	f        *fetcher
	dst      Target
	opts     Options
	info     api.ImageInfo
	hash     hash.Hash
	progress *progress
	qcow2    *qcow2Header // set when the image is converted from qcow2
}

// group runs goroutines and keeps the first error, cancelling the others.
type group struct {
	wg     sync.WaitGroup
	once   sync.Once
	err    error
	cancel context.CancelCauseFunc
}

func (g *group) Go(fn func() error) {
	g.wg.Go(func() {
		if err := fn(); err != nil {
			g.once.Do(func() { g.err = err; g.cancel(err) })
		}
	})
}

func (g *group) Wait() error {
	g.wg.Wait()
	return g.err
}

func (s *streamer) run(ctx context.Context) (Result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	g := &group{cancel: cancel}
	res := Result{Format: FormatRaw, DiskFormat: FormatRaw}
	stop := func(err error) (Result, error) {
		cancel(err)
		g.Wait()
		return res, err
	}

	fetchFree := make(chan []byte, fetchBufs)
	for range fetchBufs {
		fetchFree <- make([]byte, bufSize)
	}
	fetched := make(chan chunk, fetchBufs)
	// The fetcher is the fetch goroutine's from here on; what the first
	// answer said is read now.
	servedTotal, validated := s.f.total, s.f.etag != "" || s.f.lastMod != ""
	g.Go(func() error { return s.fetch(ctx, fetchFree, fetched) })

	// The first chunk holds the whole first MiB (or the whole image):
	// enough to sniff.
	var first chunk
	select {
	case c, ok := <-fetched:
		if !ok {
			return stop(permanent(fmt.Errorf("get %s: the image is empty", s.f.shown)))
		}
		first = c
	case <-ctx.Done():
		return res, g.Wait()
	}
	comp := SniffCompression(first.b)
	res.Format = comp.Format
	total := int64(-1) // bytes to write, when known
	switch {
	case s.opts.NoDecompress:
		res.DiskFormat = comp.Format
		total = servedTotal
	case !comp.Supported:
		return stop(fmt.Errorf("the image is %s-compressed; Stream decodes gzip, zstd, xz and bzip2: %w", comp.Format, ErrUnsupportedFormat))
	case comp.Window > s.opts.MaxWindow:
		return stop(fmt.Errorf("the image's %s window is %d MiB, more than the %d MiB allowed (Options.MaxWindow): %w",
			comp.Format, comp.Window>>20, s.opts.MaxWindow>>20, ErrUnsupportedFormat))
	case comp.Format == FormatRaw && SniffContainer(first.b) == containerQcow2 && convertible(s.info.DiskFormat):
		h, err := parseQcow2Header(first.b)
		switch {
		case err != nil:
			return stop(err)
		case servedTotal < 0 || !validated:
			return stop(fmt.Errorf("converting a qcow2 image needs its size and an ETag or Last-Modified from the server, which sent none: %w", ErrUnsupportedFormat))
		case s.opts.Capacity > 0 && int64(h.Size) > s.opts.Capacity:
			return stop(fmt.Errorf("the qcow2 image's virtual disk is %d bytes, the target %d: %w", h.Size, s.opts.Capacity, ErrTooLarge))
		}
		s.qcow2 = &h
		res.DiskFormat = containerQcow2
		s.progress = newProgress(s.opts, int64(h.Size), servedTotal, s.f)
		// Pass 1: read and hash everything, write nothing.
		g.Go(func() error { return s.drain(ctx, first, fetched) })
		return res, g.Wait()
	case comp.Format == FormatRaw:
		total = servedTotal
	default:
		total = comp.ContentSize
	}
	if s.opts.Capacity > 0 && total > s.opts.Capacity {
		return stop(fmt.Errorf("the image is %d bytes, the target %d: %w", total, s.opts.Capacity, ErrTooLarge))
	}
	s.progress = newProgress(s.opts, total, servedTotal, s.f)

	writeQ := make(chan chunk, writeBufs)
	var written int64
	g.Go(func() error {
		var err error
		written, err = s.write(ctx, writeQ)
		return err
	})
	if s.opts.NoDecompress || comp.Format == FormatRaw {
		g.Go(func() error { return s.passThrough(ctx, first, fetched, writeQ) })
	} else {
		g.Go(func() error { return s.decode(ctx, comp.Format, first, fetched, writeQ) })
	}
	err := g.Wait()
	res.Written = written
	return res, err
}

// convertible reports whether a qcow2 image with this disk_format may be
// converted: when disk_format says qcow2 or says nothing.
func convertible(declared string) bool {
	switch strings.ToLower(strings.TrimSpace(declared)) {
	case "", containerQcow2:
		return true
	}
	return false
}

// drain consumes the served bytes (hashed by fetch) without writing them:
// the qcow2 path's first pass.
func (s *streamer) drain(ctx context.Context, first chunk, in <-chan chunk) error {
	c, ok := first, true
	for ok {
		c.pool <- c.b[:cap(c.b)]
		s.progress.report(0, PhaseVerifying, false)
		select {
		case c, ok = <-in:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// fetch reads the served bytes into recycled buffers, hashes them and
// passes them on; it closes out at the end of the file, and only then, so
// a failed download never looks like a short image downstream.
func (s *streamer) fetch(ctx context.Context, free chan []byte, out chan<- chunk) error {
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		n, err := s.f.fill(ctx, buf)
		if n > 0 {
			s.hash.Write(buf[:n])
			select {
			case out <- chunk{b: buf[:n], pool: free}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		if err == io.EOF {
			close(out)
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// passThrough hands raw chunks straight to the writer (no copy), after
// checking the first one is not a virtual-disk container.
func (s *streamer) passThrough(ctx context.Context, first chunk, in <-chan chunk, out chan<- chunk) error {
	defer close(out)
	if !s.opts.NoDecompress {
		if err := checkContainer(s.info.DiskFormat, SniffContainer(first.b), false); err != nil {
			return err
		}
	}
	c, ok := first, true
	for ok {
		select {
		case out <- c:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		select {
		case c, ok = <-in:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// decode runs the decompressor over the served bytes and hands its output
// to the writer in full buffers.
func (s *streamer) decode(ctx context.Context, format string, first chunk, in <-chan chunk, out chan<- chunk) error {
	defer close(out)
	src := &chanReader{ctx: ctx, in: in, cur: first}
	var (
		dec io.Reader
		err error
	)
	switch format {
	case FormatZstd:
		var zr *zstd.Decoder
		zr, err = zstd.NewReader(src, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(uint64(s.opts.MaxWindow)), zstd.WithDecoderMaxMemory(uint64(s.opts.MaxWindow)))
		if err == nil {
			defer zr.Close()
			dec = zr
		}
	case FormatGzip:
		var gr *gzip.Reader
		gr, err = gzip.NewReader(src)
		if err == nil {
			defer gr.Close()
			dec = gr
		}
	case FormatXZ:
		dec, err = xz.NewReader(src)
	case FormatBzip2:
		dec = bzip2.NewReader(src)
	default:
		err = fmt.Errorf("no decoder for %s: %w", format, ErrUnsupportedFormat)
	}
	if err != nil {
		return decodeErr(ctx, format, err)
	}
	free := make(chan []byte, writeBufs)
	for range writeBufs {
		free <- make([]byte, bufSize)
	}
	for i := 0; ; i++ {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		n, err := readFull(dec, buf)
		if i == 0 {
			if cerr := checkContainer(s.info.DiskFormat, SniffContainer(buf[:n]), true); cerr != nil {
				return cerr
			}
		}
		if n > 0 {
			select {
			case out <- chunk{b: buf[:n], pool: free}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return decodeErr(ctx, format, err)
		}
	}
	// The compressed stream ended; the served bytes must end too (they
	// are hashed as they arrive, so trailing bytes still count).
	if _, err := io.Copy(io.Discard, src); err != nil {
		return decodeErr(ctx, format, err)
	}
	return nil
}

// decodeErr names a decoder failure; a truncated stream is not permanent
// (a new attempt may get the whole file), corrupt data is.
func decodeErr(ctx context.Context, format string, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if src := (*sourceError)(nil); errors.As(err, &src) {
		return src.err // the download failed under the decoder
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("decode %s: the image is truncated: %w", format, err)
	}
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return fmt.Errorf("decode %s: %w: %w", format, err, ErrUnsupportedFormat)
	}
	return permanent(fmt.Errorf("decode %s: the image is corrupt: %w", format, err))
}

// readFull reads until buf is full or r fails; unlike io.ReadFull it
// reports a clean end as io.EOF even after a partial read, so a truncated
// stream's io.ErrUnexpectedEOF stays distinguishable.
func readFull(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}

// sourceError carries a download failure through a decompressor, which
// may wrap or replace errors from its reader.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// chanReader is the decompressor's io.Reader over the fetched chunks; it
// recycles each buffer once consumed.
type chanReader struct {
	// ctx is the pipeline's: io.Reader has no context parameter, and the
	// decompressor must not block on a cancelled pipeline.
	ctx context.Context
	in  <-chan chunk
	cur chunk
	off int
	eof bool
}

func (r *chanReader) Read(p []byte) (int, error) {
	for r.off >= len(r.cur.b) {
		if r.cur.pool != nil {
			r.cur.pool <- r.cur.b[:cap(r.cur.b)]
			r.cur = chunk{}
		}
		if r.eof {
			return 0, io.EOF
		}
		select {
		case c, ok := <-r.in:
			if !ok {
				r.eof = true
				return 0, io.EOF
			}
			r.cur, r.off = c, 0
		case <-r.ctx.Done():
			return 0, &sourceError{context.Cause(r.ctx)}
		}
	}
	n := copy(p, r.cur.b[r.off:])
	r.off += n
	return n, nil
}

// write writes chunks at sequential offsets and recycles them.
func (s *streamer) write(ctx context.Context, in <-chan chunk) (int64, error) {
	var off int64
	for {
		var c chunk
		var ok bool
		select {
		case c, ok = <-in:
		case <-ctx.Done():
			return off, context.Cause(ctx)
		}
		if !ok {
			return off, nil
		}
		if s.opts.Capacity > 0 && off+int64(len(c.b)) > s.opts.Capacity {
			return off, fmt.Errorf("the image exceeds the target's %d bytes at offset %d: %w", s.opts.Capacity, off, ErrTooLarge)
		}
		if err := writeAt(s.dst, c.b, off); err != nil {
			return off, err
		}
		off += int64(len(c.b))
		c.pool <- c.b[:cap(c.b)]
		s.progress.report(off, PhaseStreaming, false)
	}
}

// writeAt writes all of b at off, tolerating short writes that report no
// error.
func writeAt(dst io.WriterAt, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := dst.WriteAt(b, off)
		if err != nil {
			return permanent(fmt.Errorf("write target at offset %d: %w", off+int64(n), err))
		}
		if n == 0 {
			return permanent(fmt.Errorf("write target at offset %d: %w", off, io.ErrShortWrite))
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// progress rate-limits Options.Progress and keeps Bytes and Percent
// monotonic. A qcow2 image's two passes share the percentage: verifying
// is 0-50 %, converting 50-100 %.
type progress struct {
	fn          func(api.Progress)
	interval    time.Duration
	total       int64 // bytes to write, -1 unknown
	servedTotal int64 // bytes to receive, -1 unknown
	f           *fetcher
	start, last time.Time
	lastBytes   int64
	rate        float64
	percent     float64
	mu          sync.Mutex
}

func newProgress(o Options, total, servedTotal int64, f *fetcher) *progress {
	now := time.Now()
	return &progress{fn: o.Progress, interval: o.ProgressInterval, total: total, servedTotal: servedTotal, f: f, start: now, last: now}
}

// report calls the callback with bytes written so far when the interval
// has passed, or always when force is set.
func (p *progress) report(written int64, phase string, force bool) {
	if p == nil || p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	dt := now.Sub(p.last)
	if !force && dt < p.interval {
		return
	}
	if dt > 0 && written > p.lastBytes {
		r := float64(written-p.lastBytes) / dt.Seconds()
		if p.rate == 0 {
			p.rate = r
		} else {
			p.rate = 0.5*p.rate + 0.5*r
		}
	}
	if phase == PhaseDone {
		p.rate = float64(written) / max(now.Sub(p.start).Seconds(), 1e-9)
	}
	p.last, p.lastBytes = now, written
	pr := api.Progress{Phase: phase, Bytes: written, BytesPerSecond: p.rate, Resumes: int(p.f.resumes.Load())}
	if p.total >= written {
		pr.Total = p.total
	}
	served := p.f.served.Load()
	switch {
	case phase == PhaseSyncing || phase == PhaseDone:
		pr.Percent = 100
	case phase == PhaseVerifying && p.servedTotal > 0:
		pr.Percent = 50 * float64(served) / float64(p.servedTotal)
	case phase == PhaseConverting && pr.Total > 0:
		pr.Percent = 50 + 50*float64(written)/float64(pr.Total)
	case pr.Total > 0:
		pr.Percent = 100 * float64(written) / float64(pr.Total)
	case p.servedTotal > 0:
		pr.Percent = 100 * float64(served) / float64(p.servedTotal)
	}
	pr.Percent = min(max(pr.Percent, p.percent), 100)
	p.percent = pr.Percent
	p.fn(pr)
}
