package iscsi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/imagestream"
)

// ImageOptions tune WriteImage; zero values mean the defaults.
type ImageOptions struct {
	// Writer tunes the LUN writer: depth, chunk size, reconnect budget
	// and the read-back check (Verify).
	Writer WriterOptions
	// LoginAttempts bounds the logins tried while the target cannot be
	// reached (default 5); LoginRetryInterval is the first pause between
	// them (default 1 s, doubling, at most 30 s). Only lost sessions
	// (refused or dropped connections) are retried: an authentication
	// failure or a SCSI error fails at once.
	LoginAttempts      int
	LoginRetryInterval time.Duration
	// Stream holds the base options of shared/imagestream (HTTP client,
	// retries, stall timeout); WriteImage sets Capacity, Progress and Log.
	Stream imagestream.Options
	// Progress receives the write's progress: a compressed image's
	// verifying pass is 0-50 %, its write 50-100 %.
	Progress func(api.Progress)
	// After, when set, runs once the image is written and verified, with
	// random access to the LUN (its size and block size), before the
	// final sync and logout: the config drive goes on here.
	After func(lun LUNAccess, size int64, blockSize int) error
}

// LUNAccess is random access to the logical unit being written.
type LUNAccess interface {
	io.ReaderAt
	io.WriterAt
}

// ImageResult describes a finished WriteImage.
type ImageResult struct {
	// Stream is the write pass's result (bytes written, format, checksum).
	Stream imagestream.Result
	// LUNBytes is the logical unit's capacity.
	LUNBytes int64
	// Logins is how many logins the first connection took.
	Logins int
	// Verified says the image was read and checked (checksum and size)
	// once before anything was written, which WriteImage does for
	// compressed images, whose size the header does not give for sure.
	Verified bool
	// Writer counts the acknowledged bytes, reconnects and read-back.
	Writer WriterStats
	// Duration is the wall time of WriteImage.
	Duration time.Duration
}

// ErrTargetUnreachable means every login attempt found no target to talk
// to (connection refused, reset or timed out).
var ErrTargetUnreachable = errors.New("iscsi target unreachable")

// WriteImage writes the image info describes (an http(s) URL, typically
// the conductor's own image cache) onto LUN opts.Writer.LUN of the target
// cfg names, and reports success only when every byte is acknowledged,
// flushed and (per opts.Writer.Verify) read back. The image must fit the
// LUN: a larger one fails with imagestream.ErrTooLarge before anything is
// written. For a raw or qcow2 image the served size or the qcow2 header
// says so up front; a compressed image is first streamed to nowhere,
// which checks its checksum and measures it, then streamed again onto the
// LUN. A session lost mid-write is logged in again and the write resumes
// from the last acknowledged block (opts.Writer.Reconnects times in all).
func WriteImage(ctx context.Context, cfg Config, info api.ImageInfo, opts ImageOptions) (ImageResult, error) {
	start := time.Now()
	var res ImageResult
	cfg, err := cfg.withDefaults()
	if err != nil {
		return res, err
	}
	log := cfg.Logger.With("image", info.ID, "target", cfg.TargetIQN)
	sopts := opts.Stream
	sopts.Log = log
	progress := opts.Progress
	if progress == nil {
		progress = func(api.Progress) {}
	}
	// Nothing reaches the target before the image is known to be readable
	// and, when compressed, to be intact and small enough.
	comp, err := sniff(ctx, sopts.Client, info)
	if err != nil {
		return res, err
	}
	size, base := int64(-1), 0.0
	if comp.Format != imagestream.FormatRaw {
		// A compressed image's size is known only once decoded (a zstd
		// header gives one frame's size, gzip none): decode it once into
		// nothing, which also checks the checksum before any write.
		sopts.Progress = func(p api.Progress) {
			progress(api.Progress{Phase: imagestream.PhaseVerifying, Total: p.Total, Percent: p.Percent / 2,
				BytesPerSecond: p.BytesPerSecond, Resumes: p.Resumes})
		}
		probe, err := imagestream.Stream(ctx, info, discard{}, sopts)
		if err != nil {
			return res, fmt.Errorf("verify image before writing: %w", err)
		}
		res.Verified, size, base = true, probe.Written, 50
		log.Info("image verified before writing", "bytes", size, "format", probe.Format)
	}
	w, logins, err := dialWriter(ctx, cfg, opts)
	res.Logins = logins
	if err != nil {
		return res, err
	}
	defer func() {
		if err := w.Close(); err != nil {
			log.Warn("iscsi logout failed", "err", err)
		}
	}()
	res.LUNBytes = w.Size()
	if size > w.Size() {
		return res, fmt.Errorf("the image is %d bytes, the logical unit %d: %w", size, w.Size(), imagestream.ErrTooLarge)
	}
	sopts.Capacity = w.Size() // raw and qcow2 images are checked up front by the stream
	sopts.Progress = func(p api.Progress) {
		if base > 0 {
			p.Percent = base + p.Percent/2
		}
		progress(p)
	}
	res.Stream, err = imagestream.Stream(ctx, info, w, sopts) // ends with w.Sync
	res.Writer = w.Stats()
	if err != nil {
		return res, fmt.Errorf("write image over iscsi: %w", err)
	}
	if opts.Writer.Verify != VerifyNone {
		if err := w.Verify(); err != nil {
			res.Writer = w.Stats()
			return res, fmt.Errorf("verify image on the lun: %w", err)
		}
		res.Writer = w.Stats()
	}
	if opts.After != nil {
		if err := opts.After(w, w.Size(), w.BlockSize()); err != nil {
			return res, err
		}
		if err := w.Sync(); err != nil {
			return res, fmt.Errorf("sync after the image: %w", err)
		}
	}
	res.Duration = time.Since(start)
	progress(api.Progress{Phase: imagestream.PhaseDone, Bytes: res.Stream.Written, Total: res.Stream.Written, Percent: 100,
		Resumes: res.Stream.Resumes + res.Writer.Reconnects})
	log.Info("image written over iscsi", "bytes", res.Stream.Written, "reconnects", res.Writer.Reconnects,
		"verified_bytes", res.Writer.Verified, "duration", res.Duration.Round(time.Millisecond))
	return res, nil
}

// dialWriter logs in, retrying while the target cannot be reached.
func dialWriter(ctx context.Context, cfg Config, opts ImageOptions) (*Writer, int, error) {
	attempts := opts.LoginAttempts
	if attempts <= 0 {
		attempts = 5
	}
	delay := opts.LoginRetryInterval
	if delay <= 0 {
		delay = time.Second
	}
	var err error
	for i := 1; ; i++ {
		var w *Writer
		w, err = NewWriter(ctx, cfg, opts.Writer)
		if err == nil {
			return w, i, nil
		}
		if !errors.Is(err, ErrSessionLost) || ctx.Err() != nil {
			return nil, i, err
		}
		if i >= attempts {
			return nil, i, fmt.Errorf("%w: %d logins to %s failed, the last: %w", ErrTargetUnreachable, i, cfg.Portal, err)
		}
		cfg.Logger.Warn("iscsi target not reachable yet; retrying", "portal", cfg.Portal, "attempt", i, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, i, fmt.Errorf("log in to %s: %w (after %w)", cfg.Portal, ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// sniff reads the image's first bytes (an HTTP Range request) and says
// how it is compressed.
func sniff(ctx context.Context, client *http.Client, info api.ImageInfo) (imagestream.Compression, error) {
	if len(info.URLs) == 0 {
		return imagestream.Compression{}, errors.New("sniff image: image_info has no urls")
	}
	if client == nil {
		client = &http.Client{Timeout: time.Minute, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}
		defer client.CloseIdleConnections()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, info.URLs[0], nil)
	if err != nil {
		return imagestream.Compression{}, fmt.Errorf("sniff image: %w", err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=0-%d", imagestream.SniffLen-1))
	if info.ImageRequestAuthorization != "" {
		b, err := base64.StdEncoding.DecodeString(info.ImageRequestAuthorization)
		if err != nil {
			return imagestream.Compression{}, errors.New("sniff image: image_request_authorization is not base64")
		}
		req.Header.Set("Authorization", string(b))
	}
	resp, err := client.Do(req)
	if err != nil {
		return imagestream.Compression{}, fmt.Errorf("sniff image %s: %w", info.ID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return imagestream.Compression{}, &imagestream.StatusError{URL: info.ID, Code: resp.StatusCode, Status: resp.Status}
	}
	head := make([]byte, imagestream.SniffLen)
	n, err := io.ReadFull(resp.Body, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return imagestream.Compression{}, fmt.Errorf("sniff image %s: %w", info.ID, err)
	}
	return imagestream.SniffCompression(head[:n]), nil
}

// discard is a target that keeps nothing: the verifying pass.
type discard struct{}

func (discard) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (discard) Sync() error                            { return nil }
