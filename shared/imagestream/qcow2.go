package imagestream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/lima-vm/go-qcow2reader/image/qcow2"
)

// qcow2 images need random access, so they take two passes over HTTP
// instead of one stream, and nothing is staged:
//
//  1. the whole file is read in order and hashed, as a raw image would be,
//     but nothing is written: the checksum is verified before the disk is
//     touched;
//  2. the image is converted with github.com/lima-vm/go-qcow2reader over
//     an io.ReaderAt made of HTTP Range requests (If-Range pins the file
//     seen in pass 1), writing every byte of the virtual disk in order:
//     data clusters as read, unallocated ones as zeros (Zeroer when the
//     target has it), so nothing of the disk's old content survives.
//
// Refused before anything is written: backing files (the reader would open
// a local path the image names), encryption, external data files,
// zstd-compressed clusters, a corrupt flag, oversized tables, a server
// without Range support or without ETag/Last-Modified, and a compressed
// wrapper around the qcow2 file (no random access).

// Zeroer is implemented by targets that can zero a range faster than
// writing zeros (BLKZEROOUT on a block device, fallocate on a file).
// Stream uses it for the unallocated parts of a qcow2 image.
type Zeroer interface {
	ZeroRange(off, length int64) error
}

// qcow2Header holds the header fields Stream checks before converting.
type qcow2Header struct {
	Version         uint32
	BackingOffset   uint64
	ClusterBits     uint32
	Size            uint64 // virtual disk size
	CryptMethod     uint32
	L1Size          uint32
	Incompatible    uint64
	CompressionType byte
}

// Limits on what a qcow2 header may ask for.
const (
	maxQcow2L1Bytes    = 32 << 20 // L1 table read into memory: 16 PiB of 64 KiB clusters
	maxQcow2ClusterBit = 21       // the spec's maximum, 2 MiB
	minQcow2ClusterBit = 9
	qcow2HeaderV2Len   = 72
)

// parseQcow2Header reads and vets a qcow2 header: anything Stream will not
// convert is an ErrUnsupportedFormat saying why.
func parseQcow2Header(b []byte) (qcow2Header, error) {
	var h qcow2Header
	if len(b) < qcow2HeaderV2Len || string(b[:4]) != "QFI\xfb" {
		return h, fmt.Errorf("not a qcow2 header: %w", ErrUnsupportedFormat)
	}
	be := binary.BigEndian
	h.Version = be.Uint32(b[4:])
	h.BackingOffset = be.Uint64(b[8:])
	h.ClusterBits = be.Uint32(b[20:])
	h.Size = be.Uint64(b[24:])
	h.CryptMethod = be.Uint32(b[32:])
	h.L1Size = be.Uint32(b[36:])
	if h.Version == 3 {
		if len(b) < 104 {
			return h, fmt.Errorf("qcow2 v3 header is truncated: %w", ErrUnsupportedFormat)
		}
		h.Incompatible = be.Uint64(b[72:])
		if hdrLen := be.Uint32(b[100:]); hdrLen > 104 && len(b) > 104 {
			h.CompressionType = b[104]
		}
	}
	refuse := func(why string, args ...any) (qcow2Header, error) {
		return h, fmt.Errorf("qcow2 image: "+why+": %w", append(args, ErrUnsupportedFormat)...)
	}
	const (
		dirtyBit       = 1 << 0
		corruptBit     = 1 << 1
		externalBit    = 1 << 2
		compressionBit = 1 << 3
		extendedL2Bit  = 1 << 4
	)
	switch {
	case h.Version != 2 && h.Version != 3:
		return refuse("version %d is not 2 or 3", h.Version)
	case h.BackingOffset != 0:
		return refuse("it has a backing file; only standalone images can be written (qemu-img convert -O qcow2 flattens it)")
	case h.CryptMethod != 0:
		return refuse("it is encrypted")
	case h.ClusterBits < minQcow2ClusterBit || h.ClusterBits > maxQcow2ClusterBit:
		return refuse("cluster bits %d out of range", h.ClusterBits)
	case h.Size == 0 || h.Size > 1<<62:
		return refuse("virtual size %d is not usable", h.Size)
	case uint64(h.L1Size)*8 > maxQcow2L1Bytes || h.L1Size == 0:
		return refuse("an L1 table of %d entries is not usable", h.L1Size)
	case h.Incompatible&corruptBit != 0:
		return refuse("it is marked corrupt")
	case h.Incompatible&externalBit != 0:
		return refuse("it keeps its data in an external file")
	case h.Incompatible&compressionBit != 0 && h.CompressionType != 0:
		return refuse("its clusters are compressed with type %d (only zlib is supported)", h.CompressionType)
	case h.Incompatible&^(dirtyBit|compressionBit|extendedL2Bit) != 0:
		return refuse("unknown incompatible features %#x", h.Incompatible)
	}
	return h, nil
}

// rangeReaderAt is an io.ReaderAt over HTTP Range requests. It keeps one
// response open and serves sequential reads from it; a read elsewhere
// starts a new request. Drops are resumed by the fetcher.
type rangeReaderAt struct {
	// ctx is the Stream's: io.ReaderAt has no context parameter.
	ctx context.Context
	f   *fetcher
	// err is the first download failure: the qcow2 reader does not
	// always wrap its reader's errors, so the converter looks here.
	err error
}

// Bytes past the end of the file read as zeros, as they do through qemu's
// file layer: qemu-img does not pad an image's last cluster.
func (r *rangeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	want := p[:max(0, min(int64(len(p)), r.f.total-off))]
	clear(p[len(want):])
	if len(want) == 0 {
		return len(p), nil
	}
	if r.f.body != nil && r.f.off != off {
		r.f.closeBody()
	}
	if r.f.body == nil {
		r.f.off = off
		r.f.rangeEnd = -1
	}
	n, err := r.f.fill(r.ctx, want)
	if err == io.EOF && n < len(want) {
		err = io.ErrUnexpectedEOF // the file is shorter than it said
	}
	if err != nil && err != io.EOF {
		if r.err == nil {
			r.err = err
		}
		return n, err
	}
	return len(p), nil
}

// convertQcow2 is pass 2: it writes the virtual disk of the qcow2 image
// the first pass verified.
func (s *streamer) convertQcow2(ctx context.Context, h qcow2Header) (int64, error) {
	f := newFetcher(s.f.client, s.f.url, s.f.auth, s.opts)
	f.total, f.etag, f.lastMod, f.ranged = s.f.total, s.f.etag, s.f.lastMod, true
	defer f.closeBody()
	ra := &rangeReaderAt{ctx: ctx, f: f}
	var off int64
	fail := func(err error) (int64, error) {
		switch {
		case ctx.Err() != nil:
			return off, ctx.Err()
		case ra.err != nil:
			return off, ra.err // the download failed under the reader
		}
		return off, permanent(fmt.Errorf("convert qcow2 at offset %d: %w: %w", off, err, ErrUnsupportedFormat))
	}
	img, err := qcow2.Open(ra, nil)
	if err != nil {
		return fail(err)
	}
	defer img.Close()
	if err := img.Readable(); err != nil {
		return fail(err)
	}
	size := img.Size()
	s.opts.Log.Info("converting qcow2 image", "url", s.f.shown, "bytes", size)
	zeroer, _ := s.dst.(Zeroer)
	buf := make([]byte, bufSize)
	for off < size {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		ext, err := img.Extent(off, size-off)
		if err != nil {
			return fail(err)
		}
		if ext.Length <= 0 || ext.Start != off {
			return fail(fmt.Errorf("extent %+v at offset %d", ext, off))
		}
		if s.opts.Capacity > 0 && off+ext.Length > s.opts.Capacity {
			return off, fmt.Errorf("the image exceeds the target's %d bytes at offset %d: %w", s.opts.Capacity, off, ErrTooLarge)
		}
		if ext.Zero && zeroer != nil {
			if err := zeroer.ZeroRange(off, ext.Length); err != nil {
				return off, permanent(fmt.Errorf("zero target at offset %d: %w", off, err))
			}
			off += ext.Length
			s.progress.report(off, PhaseConverting, false)
			continue
		}
		for end := off + ext.Length; off < end; {
			n := int(min(int64(len(buf)), end-off))
			if ext.Zero {
				clear(buf[:n])
			} else if m, err := img.ReadAt(buf[:n], off); m != n {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return fail(err)
			}
			if err := writeAt(s.dst, buf[:n], off); err != nil {
				return off, err
			}
			off += int64(n)
			s.progress.report(off, PhaseConverting, false)
		}
	}
	return off, nil
}
