package iscsi

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzDecodeBHS: any 48 bytes decode without panicking, and decoding is
// stable: Encode(Decode(h)) decodes to the same value.
func FuzzDecodeBHS(f *testing.F) {
	for _, h := range sampleHeaders() {
		var b BHS
		h.Encode(&b)
		f.Add(b[:])
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var h BHS
		copy(h[:], in)
		d, err := Decode(&h)
		if err != nil {
			if !errors.Is(err, ErrUnknownOpcode) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		var again BHS
		d.Encode(&again)
		d2, err := Decode(&again)
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(d, d2) {
			t.Fatalf("unstable decode:\n%#v\n%#v", d, d2)
		}
		_ = h.DataSegmentLength() + h.TotalAHSLength()
		_, _ = ParseLUN(be64(h[8:]))
	})
}

// FuzzParseText: parsing never panics; what parses re-encodes to the same
// pairs; negotiation over arbitrary keys never panics either.
func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.1994-05.com.redhat:x\x00SessionType=Normal\x00AuthMethod=CHAP,None\x00"))
	f.Add([]byte("HeaderDigest=None\x00DataDigest=None\x00MaxRecvDataSegmentLength=262144\x00InitialR2T=No\x00ImmediateData=Yes\x00MaxBurstLength=16776192\x00FirstBurstLength=262144\x00MaxOutstandingR2T=1\x00"))
	f.Add([]byte("CHAP_A=5\x00CHAP_I=12\x00CHAP_C=0x0102030405060708090a0b0c0d0e0f10\x00"))
	f.Add([]byte("A=1\x00B"))
	f.Add([]byte("=\x00\x00==\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		kvs, err := ParseText(in)
		if err != nil {
			return
		}
		again, err := ParseText(EncodeText(nil, kvs))
		if err != nil || !slices.Equal(kvs, again) {
			t.Fatalf("round trip: %v vs %v (%v)", kvs, again, err)
		}
		for _, target := range []bool{false, true} {
			n := NewNegotiator(target, DefaultParams())
			n.Offer()
			_, _ = n.Receive(kvs)
			_, _ = n.Result()
		}
		for _, kv := range kvs {
			_, _ = ParseCHAPBinary(kv.Value)
		}
	})
}

// FuzzParseSense: sense decoding never panics; fixed-format sense that
// parses survives a Marshal round trip of its main fields.
func FuzzParseSense(f *testing.F) {
	f.Add([]byte{0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0})
	f.Add([]byte{0x72, 0x0e, 0x1d, 0x00, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00})
	f.Add([]byte{0x73, 6, 0x29, 0, 0, 0, 0, 255, 2, 6})
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := ParseSense(in)
		_, _ = ParseSenseSegment(in)
		if err != nil {
			return
		}
		_ = s.String()
		got, err := ParseSense(s.Marshal())
		if err != nil || got.Key != s.Key || got.ASC != s.ASC || got.ASCQ != s.ASCQ || got.Descriptor != s.Descriptor {
			t.Fatalf("round trip %v -> %v (%v)", s, got, err)
		}
	})
}

// FuzzReader: an arbitrary byte stream, read as PDUs with or without
// digests, ends in an error or EOF without panicking and without reading
// a data segment beyond the declared limit.
func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, h := range sampleHeaders() {
		_ = w.WriteHeader(h, []byte("Key=Value\x00"))
	}
	f.Add(buf.Bytes(), false)
	buf.Reset()
	w.Digests = Digests{Header: true, Data: true}
	_ = w.WriteHeader(&SCSICommand{Write: true}, make([]byte, 13))
	f.Add(buf.Bytes(), true)
	f.Fuzz(func(t *testing.T, in []byte, digests bool) {
		r := NewReader(bytes.NewReader(in))
		r.Digests = Digests{Header: digests, Data: digests}
		r.MaxData = 1024
		var p PDU
		for range 64 {
			err := r.ReadPDU(&p)
			if err != nil {
				if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrDataTooLong) ||
					errors.Is(err, ErrHeaderDigest) || errors.Is(err, ErrDataDigest) {
					return
				}
				t.Fatalf("unexpected error %v", err)
			}
			if len(p.Data) > 1024 {
				t.Fatalf("read %d bytes of data past the limit", len(p.Data))
			}
			_, _ = Decode(&p.BHS)
		}
	})
}
