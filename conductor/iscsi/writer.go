package iscsi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// VerifyMode selects how much of a written image Writer.Verify reads back.
type VerifyMode uint8

const (
	// VerifyNone records nothing; Verify does nothing.
	VerifyNone VerifyMode = iota
	// VerifySampled reads back the first chunk, every SampleEvery-th chunk
	// and the last chunk written.
	VerifySampled
	// VerifyFull reads back every chunk.
	VerifyFull
)

// WriterOptions tune a Writer; zero values mean the defaults.
type WriterOptions struct {
	// LUN is the logical unit to write (default 1, the layout of
	// ironic-python-agent and agent/iscsitarget).
	LUN uint16
	// ChunkSize is the payload of one WRITE(16) (default 1 MiB, rounded
	// down to whole blocks).
	ChunkSize int
	// Depth is the number of writes kept in flight (default 8).
	Depth int
	// Reconnects is how many times over the writer's life a lost session
	// is logged in again before the writer fails (default 3; negative
	// disables). Each re-login resumes from the last acknowledged LBA.
	Reconnects int
	// ReconnectDelay is the first pause before logging in again (default
	// 500 ms, doubling each attempt).
	ReconnectDelay time.Duration
	// Verify and SampleEvery (default 64) select the read-back check.
	Verify      VerifyMode
	SampleEvery int
}

// WriterStats counts what a Writer did.
type WriterStats struct {
	// Acknowledged is the number of bytes the target confirmed.
	Acknowledged int64
	// Commands is the number of WRITE(16) commands completed.
	Commands int
	// Reconnects counts re-logins after a lost session; ResumedAt lists
	// the LBA each one resumed from.
	Reconnects int
	ResumedAt  []uint64
	// Verified is the number of bytes read back and compared.
	Verified int64
}

// Writer streams data onto a LUN. It implements io.WriterAt and Sync, the
// target interface of shared/imagestream. Writes land at block-aligned
// offsets in chunks of ChunkSize, Depth of them in flight; a write at a
// non-block-aligned offset or a partial trailing block is merged with
// what the LUN holds (read-modify-write). A dropped session is logged in
// again and every unacknowledged chunk is written again, so the image
// resumes from the last acknowledged LBA; when that fails, every later
// call returns the error. Sync writes what is buffered, waits for every
// acknowledgement and issues SYNCHRONIZE CACHE: only a nil Sync means the
// data is on the target.
//
// WriteAt has no context argument; a Writer uses the context given to
// NewWriter for all its I/O. A Writer is not meant for concurrent use
// (calls are serialised).
type Writer struct {
	ctx  context.Context
	cfg  Config
	opts WriterOptions
	log  *slog.Logger

	mu       sync.Mutex
	sess     *Session
	lun      *LUN
	bs       int64
	size     int64
	cur      *chunk
	inflight []*chunk
	free     []*chunk
	sums     map[int64]chunkSum // by byte offset
	tail     tailSum            // the last chunk submitted, always verified
	index    int                // chunks submitted, for sampling
	err      error
	stats    WriterStats
}

type chunk struct {
	off    int64
	buf    []byte
	n      int
	p      *Pending
	record bool
}

type chunkSum struct {
	n   int
	crc uint32
}

// tailSum remembers the most recently submitted chunk: the image's last
// one once Sync runs, even when it ended on a chunk boundary and was
// submitted before Sync.
type tailSum struct {
	off int64
	sum chunkSum
	ok  bool
}

// NewWriter logs in with cfg, opens the LUN and returns a Writer that
// uses ctx for all its I/O.
func NewWriter(ctx context.Context, cfg Config, opts WriterOptions) (*Writer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts.LUN == 0 {
		opts.LUN = 1
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = 1 << 20
	}
	if opts.Depth <= 0 {
		opts.Depth = 8
	}
	if opts.Reconnects == 0 {
		opts.Reconnects = 3
	}
	if opts.ReconnectDelay <= 0 {
		opts.ReconnectDelay = 500 * time.Millisecond
	}
	if opts.SampleEvery <= 0 {
		opts.SampleEvery = 64
	}
	sess, err := Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	lun, err := sess.OpenLUN(ctx, opts.LUN)
	if err != nil {
		sess.Close()
		return nil, err
	}
	bs := int64(lun.BlockSize)
	opts.ChunkSize = max(opts.ChunkSize/int(bs), 1) * int(bs)
	w := &Writer{ctx: ctx, cfg: cfg, opts: opts, log: cfg.Logger, sess: sess, lun: lun, bs: bs, size: lun.Size(),
		sums: map[int64]chunkSum{}}
	w.log.Info("iscsi writer ready", "target", cfg.TargetIQN, "lun", opts.LUN, "bytes", w.size,
		"block_size", bs, "chunk", opts.ChunkSize, "depth", opts.Depth)
	return w, nil
}

// Size is the LUN's capacity in bytes; callers check an image against it
// before writing anything.
func (w *Writer) Size() int64 { return w.size }

// BlockSize is the LUN's logical block size.
func (w *Writer) BlockSize() int { return int(w.bs) }

// Stats reports progress counters.
func (w *Writer) Stats() WriterStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.ResumedAt = slices.Clone(s.ResumedAt)
	return s
}

func (w *Writer) failed() error {
	return fmt.Errorf("%w: %w", ErrWriterFailed, w.err)
}

// WriteAt buffers p for offset off, submitting whole chunks as they fill.
// Writes beyond Size fail with ErrBeyondCapacity before anything is
// written.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.failed()
	}
	if off < 0 {
		return 0, fmt.Errorf("write at %d: negative offset", off)
	}
	if off > w.size || int64(len(p)) > w.size-off {
		return 0, fmt.Errorf("write %d bytes at %d of a %d-byte LUN: %w", len(p), off, w.size, ErrBeyondCapacity)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.cur == nil || off != w.cur.off+int64(w.cur.n) {
		if err := w.restart(off); err != nil {
			return 0, err
		}
	}
	total := len(p)
	for len(p) > 0 {
		k := copy(w.cur.buf[w.cur.n:], p)
		w.cur.n += k
		p = p[k:]
		if w.cur.n == len(w.cur.buf) {
			next := w.cur.off + int64(w.cur.n)
			if err := w.submit(w.cur); err != nil {
				return total - len(p), err
			}
			w.cur = w.newChunk(next)
		}
	}
	return total, nil
}

// restart begins a new chunk at off after a non-contiguous write: what is
// buffered goes out, in-flight writes finish (a rewrite must not race an
// older write of the same blocks), and a non-aligned head is merged with
// the LUN's content.
func (w *Writer) restart(off int64) error {
	if err := w.flush(false); err != nil {
		return err
	}
	if err := w.drain(); err != nil {
		return err
	}
	for o := range w.sums { // the stream starts over at off: forget later samples
		if o+int64(w.sums[o].n) > off {
			delete(w.sums, o)
		}
	}
	if w.tail.ok && w.tail.off+int64(w.tail.sum.n) > off {
		w.tail.ok = false
	}
	aligned := off - off%w.bs
	w.cur = w.newChunk(aligned)
	if head := int(off - aligned); head > 0 {
		if err := w.readBlocks(aligned, w.cur.buf[:w.bs]); err != nil {
			return err
		}
		w.cur.n = head
	}
	return nil
}

func (w *Writer) newChunk(off int64) *chunk {
	var c *chunk
	if n := len(w.free); n > 0 {
		c, w.free = w.free[n-1], w.free[:n-1]
		c.n, c.p, c.record = 0, nil, false
	} else {
		c = &chunk{buf: make([]byte, w.opts.ChunkSize)}
	}
	c.off = off
	if room := w.size - off; room < int64(len(c.buf)) {
		c.buf = c.buf[:room] // the last chunk of the LUN is shorter
	}
	return c
}

func (w *Writer) release(c *chunk) {
	c.buf = c.buf[:cap(c.buf)]
	c.p = nil
	if len(w.free) < w.opts.Depth+1 {
		w.free = append(w.free, c)
	}
}

// flush submits the buffered chunk, completing a partial trailing block
// with the LUN's content. last marks it as the image's final chunk (always
// sampled).
func (w *Writer) flush(last bool) error {
	c := w.cur
	if c == nil {
		return nil
	}
	w.cur = nil
	if c.n == 0 {
		w.release(c)
		return nil
	}
	if rem := c.n % int(w.bs); rem != 0 {
		whole := c.n - rem
		if err := w.drain(); err != nil {
			return err
		}
		block := make([]byte, w.bs)
		if err := w.readBlocks(c.off+int64(whole), block); err != nil {
			return err
		}
		copy(c.buf[c.n:whole+int(w.bs)], block[rem:])
		c.n = whole + int(w.bs)
	}
	c.record = last && w.opts.Verify != VerifyNone
	return w.submit(c)
}

// submit sends a full chunk, first waiting for a free slot.
func (w *Writer) submit(c *chunk) error {
	for len(w.inflight) >= w.opts.Depth {
		if err := w.reap(); err != nil {
			return err
		}
	}
	switch w.opts.Verify {
	case VerifyFull:
		c.record = true
	case VerifySampled:
		c.record = c.record || w.index%w.opts.SampleEvery == 0
	}
	w.index++
	if c.record {
		w.sums[c.off] = chunkSum{n: c.n, crc: proto.CRC32C(c.buf[:c.n])}
		w.tail = tailSum{off: c.off, sum: w.sums[c.off], ok: true}
	} else if w.opts.Verify != VerifyNone {
		w.tail = tailSum{off: c.off, sum: chunkSum{n: c.n, crc: proto.CRC32C(c.buf[:c.n])}, ok: true}
	}
	w.inflight = append(w.inflight, c)
	p, err := w.lun.SubmitWrite(w.ctx, uint64(c.off/w.bs), c.buf[:c.n])
	if err != nil {
		if retryable(err) {
			return w.recover(err)
		}
		w.err = err
		return err
	}
	c.p = p
	return nil
}

func retryable(err error) bool { return errors.Is(err, ErrSessionLost) }

// reap waits for the oldest write.
func (w *Writer) reap() error {
	c := w.inflight[0]
	_, err := c.p.Wait(w.ctx)
	if err == nil {
		w.inflight = w.inflight[1:]
		w.stats.Acknowledged += int64(c.n)
		w.stats.Commands++
		w.release(c)
		return nil
	}
	if retryable(err) {
		return w.recover(err)
	}
	w.err = fmt.Errorf("write at byte %d: %w", c.off, err)
	return w.err
}

func (w *Writer) drain() error {
	for len(w.inflight) > 0 {
		if err := w.reap(); err != nil {
			return err
		}
	}
	return nil
}

// recover logs in again after a lost session and writes every
// unacknowledged chunk again, oldest first.
func (w *Writer) recover(cause error) error {
	if w.err != nil {
		return w.failed()
	}
	resume := uint64(w.size / w.bs)
	if len(w.inflight) > 0 {
		resume = uint64(w.inflight[0].off / w.bs)
	}
	_ = w.sess.Close()
	delay := w.opts.ReconnectDelay
	for w.stats.Reconnects < w.opts.Reconnects {
		w.stats.Reconnects++
		attempt := w.stats.Reconnects
		w.log.Warn("iscsi session lost; logging in again", "err", cause, "attempt", attempt, "resume_lba", resume)
		select {
		case <-time.After(delay):
		case <-w.ctx.Done():
			w.err = fmt.Errorf("reconnect: %w (after %w)", w.ctx.Err(), cause)
			return w.err
		}
		delay *= 2
		sess, err := Dial(w.ctx, w.cfg)
		if err != nil {
			if !retryable(err) {
				w.err = fmt.Errorf("reconnect: %w", err)
				return w.err
			}
			cause = err
			continue
		}
		lun, err := sess.OpenLUN(w.ctx, w.opts.LUN)
		if err != nil {
			sess.Close()
			if !retryable(err) {
				w.err = fmt.Errorf("reconnect: %w", err)
				return w.err
			}
			cause = err
			continue
		}
		if lun.Blocks != w.lun.Blocks || lun.BlockSize != w.lun.BlockSize {
			sess.Close()
			w.err = fmt.Errorf("reconnect: the LUN changed size from %d to %d blocks", w.lun.Blocks, lun.Blocks)
			return w.err
		}
		w.sess, w.lun = sess, lun
		w.stats.ResumedAt = append(w.stats.ResumedAt, resume)
		resubmitted := true
		for _, c := range w.inflight {
			p, err := lun.SubmitWrite(w.ctx, uint64(c.off/w.bs), c.buf[:c.n])
			if err != nil {
				cause, resubmitted = err, false
				break
			}
			c.p = p
		}
		if resubmitted {
			w.log.Info("iscsi session re-established; resumed", "resume_lba", resume, "rewritten_chunks", len(w.inflight))
			return nil
		}
		if !retryable(cause) {
			w.err = fmt.Errorf("reconnect: %w", cause)
			return w.err
		}
		_ = sess.Close()
	}
	w.err = fmt.Errorf("write stopped at LBA %d after %d reconnect attempts: %w", resume, w.opts.Reconnects, cause)
	return w.err
}

// readBlocks reads whole blocks at byte offset off, logging in again if
// the session drops.
func (w *Writer) readBlocks(off int64, buf []byte) error {
	for {
		err := w.lun.ReadBlocks(w.ctx, uint64(off/w.bs), buf)
		if err == nil {
			return nil
		}
		if !retryable(err) {
			w.err = fmt.Errorf("read at byte %d: %w", off, err)
			return w.err
		}
		if err := w.recover(err); err != nil {
			return err
		}
	}
}

// ReadAt reads what the LUN holds at off, after what is buffered has been
// written: random access for the little work after an image (a config
// drive's partition table). It reads whole blocks.
func (w *Writer) ReadAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if off < 0 || off >= w.size {
		return 0, fmt.Errorf("read at %d of a %d-byte LUN: %w", off, w.size, io.EOF)
	}
	if err := w.sync(); err != nil {
		return 0, err
	}
	want := min(int64(len(p)), w.size-off)
	first := off / w.bs * w.bs
	last := (off + want + w.bs - 1) / w.bs * w.bs
	buf := make([]byte, last-first)
	for done := int64(0); done < int64(len(buf)); {
		n := min(int64(len(buf))-done, int64(w.opts.ChunkSize)/w.bs*w.bs)
		if err := w.readBlocks(first+done, buf[done:done+n]); err != nil {
			return 0, err
		}
		done += n
	}
	copy(p, buf[off-first:])
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return len(p), nil
}

// Sync writes what is buffered, waits until the target acknowledged every
// write and flushes its cache. Only a nil result means the data is on the
// target.
func (w *Writer) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sync()
}

func (w *Writer) sync() error {
	if w.err != nil {
		return w.failed()
	}
	if err := w.flush(true); err != nil {
		return err
	}
	if err := w.drain(); err != nil {
		return err
	}
	for {
		err := w.lun.Sync(w.ctx)
		if err == nil {
			return nil
		}
		if !retryable(err) {
			w.err = err
			return err
		}
		if err := w.recover(err); err != nil {
			return err
		}
	}
}

// Verify syncs, then reads back the recorded chunks (see VerifyMode) and
// compares their CRC32C with what was written.
func (w *Writer) Verify() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.sync(); err != nil {
		return err
	}
	if w.tail.ok {
		w.sums[w.tail.off] = w.tail.sum
	}
	offs := make([]int64, 0, len(w.sums))
	for o := range w.sums {
		offs = append(offs, o)
	}
	slices.Sort(offs)
	buf := make([]byte, w.opts.ChunkSize)
	for _, o := range offs {
		s := w.sums[o]
		b := buf[:s.n]
		if err := w.readBlocks(o, b); err != nil {
			return err
		}
		if proto.CRC32C(b) != s.crc {
			w.err = fmt.Errorf("%w: %d bytes at byte offset %d differ from what was written", ErrVerify, s.n, o)
			return w.err
		}
		w.stats.Verified += int64(s.n)
	}
	w.log.Info("iscsi read-back verification passed", "bytes", w.stats.Verified, "chunks", len(offs))
	return nil
}

// Close logs out. It does not flush: call Sync first.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sess == nil {
		return nil
	}
	err := w.sess.Close()
	w.sess = nil
	if w.err == nil {
		w.err = errors.New("writer closed")
	}
	return err
}
