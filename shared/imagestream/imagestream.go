// Package imagestream writes a disk image from an HTTP(S) URL onto a
// target (a file, a block device, an iSCSI LUN) in one pass with bounded
// memory and no staging copy:
//
//	HTTP GET -> hash of the served bytes -> format sniffing -> decompress
//	(gzip, zstd, xz, bzip2) -> WriteAt at sequential offsets -> Sync
//
// The checksum is computed over the bytes as the server serves them: what
// sha256sum of the file on the server prints, which is also what Glance's
// os_hash_value and IPA's checksum cover. For a compressed image that is
// the compressed file, not the bytes that end up on the disk.
//
// A dropped connection does not restart the image: the reader under the
// decompressor re-requests the rest with an HTTP Range (guarded by
// If-Range, so a changed file is never spliced), and the decompressor and
// the hash carry on as if nothing happened. A server that ignores Range is
// read again from the start and the bytes already consumed are skipped.
// Checksum selection follows ironic-python-agent (os_hash_algo and
// os_hash_value, a checksum file URL, or a bare checksum by length).
//
// Virtual-disk containers are never written raw. A standalone qcow2 image
// is converted without staging, in two passes: the file is read and
// hashed first and nothing is written unless the checksum matches, then
// its virtual disk is written through HTTP Range reads (see qcow2.go).
// Other containers (vmdk, vhd, vhdx, vdi, qed, ploop), compressed qcow2
// files and a disk_format that contradicts the bytes are refused with
// ErrUnsupportedFormat before any write.
//
// Raw and compressed images are written 1 MiB at a time at 1 MiB-aligned
// offsets, except the last write, from page-aligned buffers (qcow2 images
// in writes aligned to their clusters): an O_DIRECT target works as long
// as it accepts a short final write. Peak memory is about 20 MiB plus the
// image's decompression window (measured by TestStreamPeakRSS).
//
// The package imports only the standard library, shared/api,
// shared/buildinfo, the decompressors and the qcow2 reader; it must not
// import agent or conductor code, and it does not retry a failed Stream
// itself beyond resuming the transfer: callers own the outer retry loop
// and use IsPermanent to decide.
package imagestream

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
)

// Target is where an image is written: *os.File satisfies it; so does a
// block device opened for writing and an iSCSI LUN.
type Target interface {
	io.WriterAt
	Sync() error
}

// Defaults of Options' zero values.
const (
	DefaultRetries          = 9                // IPA's image_download_connection_retries
	DefaultRetryInterval    = 10 * time.Second // IPA's image_download_connection_retry_interval
	DefaultStallTimeout     = 60 * time.Second // IPA's image_download_connection_timeout
	DefaultMaxWindow        = 128 << 20        // largest zstd window / xz dictionary accepted
	DefaultProgressInterval = 500 * time.Millisecond
	// maxBackoff caps the exponential backoff between attempts.
	maxBackoffFactor = 6
)

// Options tune Stream. The zero value is usable.
type Options struct {
	// Client makes every request. It must be a plain client (no retrying
	// transport) without an overall Timeout, which would cut long
	// downloads. nil builds a default with dial, TLS handshake and
	// response header timeouts, honouring Insecure and the image's
	// proxies.
	Client *http.Client
	// Insecure skips TLS verification (ipa-insecure). Only used when
	// Client is nil.
	Insecure bool
	// MD5Allowed accepts 32-hex MD5 checksums (lookup config
	// agent_md5_checksum_enable).
	MD5Allowed bool
	// Retries is how many consecutive failed attempts without progress
	// are retried after the first (0 means the default, 9, IPA's;
	// negative means none). A retry that receives bytes resets the
	// count, so an image survives any number of dropped connections as
	// long as each makes progress.
	Retries int
	// RetryInterval is the backoff base between attempts (default 10 s,
	// IPA's): attempt n waits RetryInterval·2^(n-1), capped at six times
	// RetryInterval, with jitter in [50 %, 100 %].
	RetryInterval time.Duration
	// StallTimeout: no byte received for this long (including while
	// waiting for response headers) is a retryable error (default 60 s).
	StallTimeout time.Duration
	// Capacity is the size of the target in bytes; 0 = unknown. An image
	// known to be larger fails before any write (Content-Length of a raw
	// image, the zstd frame content size); one that grows past it fails
	// as soon as a write would cross it.
	Capacity int64
	// NoDecompress writes the served bytes as they are (the conductor's
	// cache keeps compressed images). Virtual-disk containers are not
	// refused in this mode: the target is a cache file, not a disk.
	NoDecompress bool
	// MaxWindow is the largest decompression window (zstd window, xz
	// dictionary) accepted, in bytes; larger ones fail with
	// ErrUnsupportedFormat before decoding. Default 128 MiB, enough for
	// every zstd level including --ultra -22 and for xz -9. Peak memory
	// is about 20 MiB plus the image's window.
	MaxWindow int64
	// Progress is called at most every ProgressInterval while streaming,
	// at each phase change and once at the end (Phase* constants). Bytes
	// (written) and Percent only ever grow; Total is the size to write
	// when known (Content-Length of a raw image, the zstd frame content
	// size, a qcow2's virtual size); without it Percent follows the
	// served bytes. A qcow2 image's verifying pass is 0-50 %, its
	// conversion 50-100 %. It runs on the writing goroutine: keep it fast.
	Progress func(api.Progress)
	// ProgressInterval is the minimum time between Progress calls
	// (default 500 ms).
	ProgressInterval time.Duration
	// Log receives the stream's events; nil discards them.
	Log *slog.Logger
}

// Result describes a successful Stream.
type Result struct {
	Written    int64         // bytes written to the target
	Format     string        // compression as served: "raw", "gzip", "zstd", "xz", "bzip2"
	DiskFormat string        // what was written: "raw"; with NoDecompress the served format
	Algo       string        // checksum algorithm verified ("sha256", "sha512", "md5", ...)
	Digest     string        // hex digest verified (of the served bytes)
	URL        string        // the URL the image came from (credentials redacted)
	Served     int64         // bytes of the file received and hashed (a qcow2's second-pass Range reads not counted)
	Resumes    int           // how many times the download resumed after receiving bytes
	Retries    int           // failed attempts that were retried (resumes included)
	Duration   time.Duration // wall time of Stream
}

// Errors callers classify with errors.Is. All of them are permanent.
var (
	// ErrChecksum: the served bytes do not match the expected digest; the
	// message names both digests.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrTooLarge: the image does not fit the target's Capacity.
	ErrTooLarge = errors.New("image larger than the target")
	// ErrUnsupportedFormat: a format Stream will not write (qcow2 and
	// other virtual-disk containers, lz4, a window beyond MaxWindow, a
	// disk_format the bytes contradict).
	ErrUnsupportedFormat = errors.New("unsupported image format")
	// ErrNoChecksum: image_info has no usable checksum, or a checksum
	// file does not list the image.
	ErrNoChecksum = errors.New("no usable checksum")
	// ErrChanged: the image changed on the server while it was being
	// streamed, so the rest cannot be appended. Retryable: a new Stream
	// starts over.
	ErrChanged = errors.New("image changed on the server during the download")
)

// StatusError is an HTTP answer that is not a success. 4xx statuses other
// than 408 and 429 are permanent; the URL has its credentials and query
// values redacted.
type StatusError struct {
	URL    string
	Code   int
	Status string
}

func (e *StatusError) Error() string { return fmt.Sprintf("get %s: %s", e.URL, e.Status) }

// Permanent reports whether retrying the request cannot help.
func (e *StatusError) Permanent() bool {
	return e.Code >= 400 && e.Code < 500 && e.Code != http.StatusRequestTimeout && e.Code != http.StatusTooManyRequests
}

// permanentError marks an error retrying cannot fix (bad input, a target
// that fails to write, a cancelled context).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// transientError marks an error retryable although some of the errors it
// joins are permanent: one image URL of several failed for good, another
// may answer next time.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, returned by Stream, must not be retried:
// a checksum mismatch, an image too large, an unsupported format, no
// usable checksum, a 4xx answer, a target that fails to write or sync, bad
// image_info, or a cancelled context. Transport failures, 5xx answers,
// stalls and ErrChanged are not permanent.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if te := (*transientError)(nil); errors.As(err, &te) {
		return false
	}
	for _, s := range []error{ErrChecksum, ErrTooLarge, ErrUnsupportedFormat, ErrNoChecksum} {
		if errors.Is(err, s) {
			return true
		}
	}
	if se := (*StatusError)(nil); errors.As(err, &se) && se.Permanent() {
		return true
	}
	var pe *permanentError
	return errors.As(err, &pe)
}

// withDefaults returns o with the zero values replaced.
func (o Options) withDefaults() Options {
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.MaxWindow <= 0 {
		o.MaxWindow = DefaultMaxWindow
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}
