package iscsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
)

// Framing errors. A receiver treats each as a protocol error that ends the
// connection (ERL 0 has no way to resynchronise the byte stream).
var (
	ErrDataTooLong     = errors.New("data segment longer than MaxRecvDataSegmentLength")
	ErrHeaderDigest    = errors.New("header digest mismatch")
	ErrDataDigest      = errors.New("data digest mismatch")
	ErrDataLength      = errors.New("data buffer does not match the data segment length")
	ErrNoHeaderPending = errors.New("no header read before data")
)

// Digests selects the CRC32C header and data digests negotiated through
// HeaderDigest and DataDigest.
type Digests struct {
	Header, Data bool
}

// CRC32C is the iSCSI digest (Castagnoli polynomial). On the wire it is
// sent least significant byte first (RFC 7143 appendix B.4).
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

func crcUpdate(c uint32, b []byte) uint32 {
	return crc32.Update(c, crc32.MakeTable(crc32.Castagnoli), b)
}

// PDU is one framed protocol data unit.
type PDU struct {
	BHS  BHS
	AHS  []byte
	Data []byte
}

// Reader frames PDUs from a byte stream. It reads the header and the data
// segment in two steps so a receiver can place data directly into its own
// buffer (ReadData) or skip it (Discard). A Reader is not safe for
// concurrent use.
type Reader struct {
	r io.Reader
	// Digests in force; change them after login completes.
	Digests Digests
	// MaxData bounds the data segment length a header may announce (the
	// MaxRecvDataSegmentLength this side declared). Zero means 8192, the
	// login-phase limit.
	MaxData int

	ahs     [1024 + 4]byte
	ahsLen  int
	pending int // data segment length of the last header, -1 when none
	scratch [8]byte
	hdr     BHS
}

// NewReader returns a Reader over r. Wrap r in a bufio.Reader to coalesce
// small reads; large data segments bypass the buffer.
func NewReader(r io.Reader) *Reader { return &Reader{r: r, pending: -1} }

func (r *Reader) maxData() int {
	if r.MaxData <= 0 {
		return 8192
	}
	return r.MaxData
}

// ReadHeader reads the next BHS (and AHS, kept until the next header) into
// h and checks the header digest and the announced data length.
func (r *Reader) ReadHeader(h *BHS) error {
	if r.pending > 0 {
		if err := r.Discard(); err != nil {
			return err
		}
	}
	if _, err := io.ReadFull(r.r, h[:]); err != nil {
		return err
	}
	r.ahsLen = h.TotalAHSLength()
	if r.ahsLen > 0 {
		if _, err := io.ReadFull(r.r, r.ahs[:r.ahsLen]); err != nil {
			return unexpected(err)
		}
	}
	if r.Digests.Header {
		if _, err := io.ReadFull(r.r, r.scratch[:4]); err != nil {
			return unexpected(err)
		}
		c := crcUpdate(CRC32C(h[:]), r.ahs[:r.ahsLen])
		if binary.LittleEndian.Uint32(r.scratch[:4]) != c {
			return ErrHeaderDigest
		}
	}
	n := h.DataSegmentLength()
	if n > r.maxData() {
		return fmt.Errorf("read %s: %w (%d > %d)", h.Opcode(), ErrDataTooLong, n, r.maxData())
	}
	r.pending = n
	return nil
}

// AHS returns the additional header segments of the last header.
func (r *Reader) AHS() []byte { return r.ahs[:r.ahsLen] }

// ReadData reads the data segment announced by the last header into dst,
// whose length must equal DataSegmentLength, then the padding and digest.
func (r *Reader) ReadData(dst []byte) error {
	if r.pending < 0 {
		return ErrNoHeaderPending
	}
	if len(dst) != r.pending {
		return ErrDataLength
	}
	r.pending = -1
	if len(dst) == 0 {
		return nil
	}
	if _, err := io.ReadFull(r.r, dst); err != nil {
		return unexpected(err)
	}
	pad := Pad(len(dst))
	tail := pad
	if r.Digests.Data {
		tail += 4
	}
	if tail > 0 {
		if _, err := io.ReadFull(r.r, r.scratch[:tail]); err != nil {
			return unexpected(err)
		}
	}
	if r.Digests.Data {
		c := crcUpdate(CRC32C(dst), r.scratch[:pad])
		if binary.LittleEndian.Uint32(r.scratch[pad:tail]) != c {
			return ErrDataDigest
		}
	}
	return nil
}

// Discard skips whatever is left of the data segment of the last header
// (the digest is still checked, so a corrupted stream is noticed). After
// ReadData, or with no header read, it does nothing.
func (r *Reader) Discard() error {
	if r.pending < 0 {
		return nil
	}
	n := r.pending
	r.pending = -1
	if n == 0 {
		return nil
	}
	var buf [4096]byte
	c := CRC32C(nil)
	total := n + Pad(n)
	for total > 0 {
		k := min(total, len(buf))
		if _, err := io.ReadFull(r.r, buf[:k]); err != nil {
			return unexpected(err)
		}
		if r.Digests.Data {
			c = crcUpdate(c, buf[:k])
		}
		total -= k
	}
	if r.Digests.Data {
		if _, err := io.ReadFull(r.r, r.scratch[:4]); err != nil {
			return unexpected(err)
		}
		if binary.LittleEndian.Uint32(r.scratch[:4]) != c {
			return ErrDataDigest
		}
	}
	return nil
}

// ReadPDU reads a whole PDU; p.Data reuses its capacity when it can.
func (r *Reader) ReadPDU(p *PDU) error {
	if err := r.ReadHeader(&p.BHS); err != nil {
		return err
	}
	p.AHS = append(p.AHS[:0], r.AHS()...)
	n := p.BHS.DataSegmentLength()
	if cap(p.Data) < n {
		p.Data = make([]byte, n)
	}
	p.Data = p.Data[:n]
	return r.ReadData(p.Data)
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Writer frames PDUs onto a stream with one gathered write per PDU
// (writev through net.Buffers when w is a *net.TCPConn), so data segments
// are never copied. A Writer is not safe for concurrent use; callers
// serialise with a mutex.
type Writer struct {
	w io.Writer
	// Digests in force.
	Digests Digests

	hdigest [4]byte
	tail    [8]byte
	vec     [5][]byte
}

// NewWriter returns a Writer onto w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteHeader encodes hdr and writes it with data as one PDU.
func (w *Writer) WriteHeader(hdr Header, data []byte) error {
	var h BHS
	hdr.Encode(&h)
	return w.Write(&h, data)
}

// Write sets h's data segment length to len(data) and writes the PDU.
func (w *Writer) Write(h *BHS, data []byte) error {
	if len(data) > MaxDataSegmentLength {
		return fmt.Errorf("write %s: %w", h.Opcode(), ErrDataTooLong)
	}
	h.SetDataSegmentLength(len(data))
	h[4] = 0 // Ingot never sends AHS
	bufs := w.vec[:0]
	bufs = append(bufs, h[:])
	if w.Digests.Header {
		binary.LittleEndian.PutUint32(w.hdigest[:], CRC32C(h[:]))
		bufs = append(bufs, w.hdigest[:])
	}
	if len(data) > 0 {
		bufs = append(bufs, data)
		pad := Pad(len(data))
		clear(w.tail[:pad])
		n := pad
		if w.Digests.Data {
			c := crcUpdate(CRC32C(data), w.tail[:pad])
			binary.LittleEndian.PutUint32(w.tail[pad:], c)
			n += 4
		}
		if n > 0 {
			bufs = append(bufs, w.tail[:n])
		}
	}
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(w.w)
	return err
}
