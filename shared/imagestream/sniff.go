package imagestream

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Formats Stream reports and sniffs.
const (
	FormatRaw   = "raw"
	FormatGzip  = "gzip"
	FormatZstd  = "zstd"
	FormatXZ    = "xz"
	FormatBzip2 = "bzip2"
)

// SniffLen is how many leading bytes the sniffers want; fewer only when
// the whole stream is shorter.
const SniffLen = 1024

// Compression is what the first bytes of a served image say about its
// compression.
type Compression struct {
	// Format is FormatRaw (no known compression), a format Stream
	// decodes (gzip, zstd, xz, bzip2), or one it refuses (lz4, lzip,
	// zip).
	Format string
	// Supported is false for compressions Stream cannot decode.
	Supported bool
	// ContentSize is the decompressed size the header promises, when it
	// does (zstd frame content size), else -1. A zstd stream of several
	// frames is at least this large.
	ContentSize int64
	// Window is the memory the decoder needs for its history (zstd
	// window, xz dictionary), when the header says; else 0.
	Window int64
}

// SniffCompression identifies the compression of a stream from its first
// bytes (up to SniffLen of them). It never fails: anything unrecognised is
// raw.
func SniffCompression(b []byte) Compression {
	c := Compression{Format: FormatRaw, Supported: true, ContentSize: -1}
	switch {
	case len(b) >= 3 && b[0] == 0x1f && b[1] == 0x8b && b[2] == 8:
		c.Format = FormatGzip
		c.Window = 32 << 10
	case len(b) >= 4 && (bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}) ||
		(b[0]&0xf0 == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18)):
		c.Format = FormatZstd
		var h zstd.Header
		if err := h.Decode(b); err == nil && !h.Skippable {
			if h.HasFCS && h.FrameContentSize <= math.MaxInt64 {
				c.ContentSize = int64(h.FrameContentSize)
			}
			w := h.WindowSize
			if h.SingleSegment {
				w = h.FrameContentSize
			}
			c.Window = int64(min(w, math.MaxInt64))
		}
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		c.Format = FormatXZ
		c.Window = xzDictSize(b)
	case len(b) >= 10 && bytes.HasPrefix(b, []byte("BZh")) && b[3] >= '1' && b[3] <= '9' &&
		(bytes.Equal(b[4:10], []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}) ||
			bytes.Equal(b[4:10], []byte{0x17, 0x72, 0x45, 0x38, 0x50, 0x90})):
		c.Format = FormatBzip2
		c.Window = int64(b[3]-'0') * 100_000
	case bytes.HasPrefix(b, []byte{0x04, 0x22, 0x4d, 0x18}) || bytes.HasPrefix(b, []byte{0x02, 0x21, 0x4c, 0x18}):
		c.Format, c.Supported = "lz4", false
	case bytes.HasPrefix(b, []byte("LZIP")):
		c.Format, c.Supported = "lzip", false
	case bytes.HasPrefix(b, []byte("PK\x03\x04")):
		c.Format, c.Supported = "zip", false
	}
	return c
}

// xzDictSize reads the LZMA2 dictionary size from the first block header
// of an xz stream (xz file format 1.2.1, §3.1 and §5.3.1), or 0 when the
// bytes do not say.
func xzDictSize(b []byte) int64 {
	const streamHeader = 12
	if len(b) < streamHeader+2 || b[streamHeader] == 0 {
		return 0 // too short, or an empty stream (index indicator)
	}
	hdr := b[streamHeader:]
	size := (int(hdr[0]) + 1) * 4
	if len(hdr) < size {
		return 0
	}
	hdr = hdr[:size-4] // drop the CRC32
	flags := hdr[1]
	p := 2
	varint := func() (uint64, bool) {
		v, n := binary.Uvarint(hdr[min(p, len(hdr)):])
		if n <= 0 {
			return 0, false
		}
		p += n
		return v, true
	}
	if flags&0x40 != 0 { // compressed size
		if _, ok := varint(); !ok {
			return 0
		}
	}
	if flags&0x80 != 0 { // uncompressed size
		if _, ok := varint(); !ok {
			return 0
		}
	}
	var dict int64
	for range int(flags&3) + 1 {
		id, ok := varint()
		if !ok {
			return 0
		}
		n, ok := varint()
		if !ok || n > uint64(len(hdr)-p) {
			return 0
		}
		props := hdr[p : p+int(n)]
		p += int(n)
		if id == 0x21 && len(props) == 1 { // LZMA2
			bits := props[0] & 0x3f
			switch {
			case bits > 40:
				return 0
			case bits == 40:
				dict = math.MaxUint32
			default:
				dict = int64(2|(bits&1)) << (bits/2 + 11)
			}
		}
	}
	return dict
}

// Virtual-disk container formats Stream refuses to write raw.
const (
	containerQcow2     = "qcow2"
	containerQED       = "qed"
	containerVMDK      = "vmdk"
	containerVHDX      = "vhdx"
	containerVHD       = "vhd"
	containerVDI       = "vdi"
	containerParallels = "ploop"
)

// SniffContainer identifies a virtual-disk container (qcow2, qed, vmdk,
// vhdx, dynamic vhd, vdi, parallels) from the first bytes of an image
// after decompression; anything else, including ISO 9660 and fixed VHD
// (raw bytes plus a footer), is "raw".
func SniffContainer(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("QFI\xfb")):
		return containerQcow2
	case bytes.HasPrefix(b, []byte("QED\x00")):
		return containerQED
	case bytes.HasPrefix(b, []byte("KDMV")) || bytes.HasPrefix(b, []byte("# Disk DescriptorFile")):
		return containerVMDK
	case bytes.HasPrefix(b, []byte("vhdxfile")):
		return containerVHDX
	case bytes.HasPrefix(b, []byte("conectix")):
		return containerVHD
	case len(b) >= 0x44 && binary.LittleEndian.Uint32(b[0x40:]) == 0xbeda107f:
		return containerVDI
	case bytes.HasPrefix(b, []byte("WithoutFreeSpace")) || bytes.HasPrefix(b, []byte("WithouFreSpacExt")):
		return containerParallels
	}
	return FormatRaw
}

// checkContainer refuses a container format Stream does not convert here,
// and a disk_format the bytes contradict (IPA's format inspector does the
// same). An uncompressed qcow2 whose disk_format allows it never gets
// here: it is converted.
func checkContainer(declared, detected string, compressed bool) error {
	declared = strings.ToLower(strings.TrimSpace(declared))
	switch {
	case detected == containerQcow2 && compressed:
		return fmt.Errorf("the image is a compressed qcow2 file, which cannot be converted without random access: "+
			"serve the .qcow2 uncompressed (qcow2 compresses its own clusters) or convert it to raw: %w", ErrUnsupportedFormat)
	case detected == containerQcow2:
		return fmt.Errorf("the image is qcow2 but disk_format is %q: refusing the mismatch: %w", declared, ErrUnsupportedFormat)
	case detected != FormatRaw:
		return fmt.Errorf("the image is %s (disk_format %q): only raw and qcow2 images are written to disk, never a %s container; "+
			"convert it with qemu-img convert -O raw (optionally compressing it with zstd): %w",
			detected, declared, detected, ErrUnsupportedFormat)
	}
	switch declared {
	case containerQcow2, containerQED, containerVMDK, containerVHDX, containerVHD, containerVDI, containerParallels:
		return fmt.Errorf("disk_format is %s but the image's bytes are raw: refusing the mismatch: %w", declared, ErrUnsupportedFormat)
	}
	return nil
}
