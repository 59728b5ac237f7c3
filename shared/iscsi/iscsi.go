// Package iscsi is the iSCSI protocol codec shared by Ingot's initiator
// (conductor/iscsi) and its target (agent/iscsitarget): Basic Header
// Segment encoding and decoding for every PDU of RFC 7143 that an ERL 0,
// single-connection session uses (both directions), PDU framing with data
// segment padding and optional CRC32C digests, text key=value parsing and
// encoding, the negotiation result functions (declarative, min, max, OR,
// AND, list), RFC 1982 serial arithmetic for CmdSN/StatSN, CHAP with MD5
// (one-way and mutual), and SCSI sense data.
//
// It is pure: no goroutines, no clock, no logging, no package state, and
// only the standard library. Both peers import it so there is exactly one
// implementation of the wire format. Every decoder here accepts untrusted
// input and is fuzzed; decoders never panic and never allocate more than
// the caller's stated limits.
package iscsi

import (
	"encoding/binary"
	"fmt"
)

// Opcode is the PDU type in the low six bits of the first header byte.
type Opcode uint8

// Initiator opcodes (RFC 7143 §11.1.1).
const (
	OpNOPOut          Opcode = 0x00
	OpSCSICommand     Opcode = 0x01
	OpTaskMgmtRequest Opcode = 0x02
	OpLoginRequest    Opcode = 0x03
	OpTextRequest     Opcode = 0x04
	OpDataOut         Opcode = 0x05
	OpLogoutRequest   Opcode = 0x06
	OpSNACKRequest    Opcode = 0x10
)

// Target opcodes.
const (
	OpNOPIn            Opcode = 0x20
	OpSCSIResponse     Opcode = 0x21
	OpTaskMgmtResponse Opcode = 0x22
	OpLoginResponse    Opcode = 0x23
	OpTextResponse     Opcode = 0x24
	OpDataIn           Opcode = 0x25
	OpLogoutResponse   Opcode = 0x26
	OpR2T              Opcode = 0x31
	OpAsyncMessage     Opcode = 0x32
	OpReject           Opcode = 0x3f
)

// String names the opcode as RFC 7143 does.
func (o Opcode) String() string {
	switch o {
	case OpNOPOut:
		return "NOP-Out"
	case OpSCSICommand:
		return "SCSI Command"
	case OpTaskMgmtRequest:
		return "Task Management Request"
	case OpLoginRequest:
		return "Login Request"
	case OpTextRequest:
		return "Text Request"
	case OpDataOut:
		return "SCSI Data-Out"
	case OpLogoutRequest:
		return "Logout Request"
	case OpSNACKRequest:
		return "SNACK Request"
	case OpNOPIn:
		return "NOP-In"
	case OpSCSIResponse:
		return "SCSI Response"
	case OpTaskMgmtResponse:
		return "Task Management Response"
	case OpLoginResponse:
		return "Login Response"
	case OpTextResponse:
		return "Text Response"
	case OpDataIn:
		return "SCSI Data-In"
	case OpLogoutResponse:
		return "Logout Response"
	case OpR2T:
		return "R2T"
	case OpAsyncMessage:
		return "Asynchronous Message"
	case OpReject:
		return "Reject"
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// FromTarget reports whether the opcode is one a target sends.
func (o Opcode) FromTarget() bool { return o&0x20 != 0 }

// BHSLen is the length of a Basic Header Segment.
const BHSLen = 48

// ReservedTag is the "no tag" value of ITT and TTT (0xffffffff).
const ReservedTag uint32 = 0xffffffff

// BHS is a raw Basic Header Segment. Typed views are built with Decode and
// the PDU types' Encode methods.
type BHS [BHSLen]byte

// Opcode returns the PDU's opcode.
func (h *BHS) Opcode() Opcode { return Opcode(h[0] & 0x3f) }

// Immediate reports the I bit (immediate delivery).
func (h *BHS) Immediate() bool { return h[0]&0x40 != 0 }

// Final reports the F bit.
func (h *BHS) Final() bool { return h[1]&0x80 != 0 }

// TotalAHSLength is the length of the Additional Header Segments in bytes.
func (h *BHS) TotalAHSLength() int { return int(h[4]) * 4 }

// DataSegmentLength is the unpadded length of the data segment.
func (h *BHS) DataSegmentLength() int { return int(h[5])<<16 | int(h[6])<<8 | int(h[7]) }

// SetDataSegmentLength stores n (at most MaxDataSegmentLength).
func (h *BHS) SetDataSegmentLength(n int) {
	h[5], h[6], h[7] = byte(n>>16), byte(n>>8), byte(n)
}

// ITT is the Initiator Task Tag (bytes 16-19) of every PDU.
func (h *BHS) ITT() uint32 { return be32(h[16:]) }

// StatSN, ExpCmdSN and MaxCmdSN sit at the same place in every PDU a target
// sends (bytes 24, 28 and 32); for initiator PDUs these bytes mean
// something else.
func (h *BHS) StatSN() uint32 { return be32(h[24:]) }

// ExpCmdSN is the target's next expected CmdSN (target PDUs only).
func (h *BHS) ExpCmdSN() uint32 { return be32(h[28:]) }

// MaxCmdSN is the highest CmdSN the target accepts (target PDUs only).
func (h *BHS) MaxCmdSN() uint32 { return be32(h[32:]) }

// MaxDataSegmentLength is the largest data segment the 24-bit length field
// can describe (and the largest MaxRecvDataSegmentLength, RFC 7143 §13.12).
const MaxDataSegmentLength = 1<<24 - 1

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func put32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
func put64(b []byte, v uint64) { binary.BigEndian.PutUint64(b, v) }

// LUN encodes a logical unit number for the 8-byte LUN field (SAM-5
// peripheral addressing for LUNs below 256, flat addressing up to 16383).
func LUN(n uint16) uint64 {
	if n < 256 {
		return uint64(n) << 48
	}
	return (uint64(0x40|(n>>8)&0x3f)<<8 | uint64(n&0xff)) << 48
}

// ParseLUN decodes the LUN field; ok is false for addressing methods other
// than single-level peripheral and flat addressing.
func ParseLUN(v uint64) (n uint16, ok bool) {
	if v&0x0000ffffffffffff != 0 {
		return 0, false
	}
	b0, b1 := byte(v>>56), byte(v>>48)
	switch b0 >> 6 {
	case 0: // peripheral device addressing, bus 0
		if b0 != 0 {
			return 0, false
		}
		return uint16(b1), true
	case 1: // flat space addressing
		return uint16(b0&0x3f)<<8 | uint16(b1), true
	}
	return 0, false
}

// Pad returns the number of padding bytes after a data segment of n bytes.
func Pad(n int) int { return (4 - n%4) % 4 }
