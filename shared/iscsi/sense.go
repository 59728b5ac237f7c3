package iscsi

import (
	"errors"
	"fmt"
)

// SCSI status codes (SAM-5).
const (
	StatusGood                = 0x00
	StatusCheckCondition      = 0x02
	StatusConditionMet        = 0x04
	StatusBusy                = 0x08
	StatusReservationConflict = 0x18
	StatusTaskSetFull         = 0x28
	StatusACAActive           = 0x30
	StatusTaskAborted         = 0x40
)

// SenseKey is the sense key of sense data (SPC-4 §4.5.6).
type SenseKey uint8

// Sense keys.
const (
	SenseNoSense        SenseKey = 0x0
	SenseRecoveredError SenseKey = 0x1
	SenseNotReady       SenseKey = 0x2
	SenseMediumError    SenseKey = 0x3
	SenseHardwareError  SenseKey = 0x4
	SenseIllegalRequest SenseKey = 0x5
	SenseUnitAttention  SenseKey = 0x6
	SenseDataProtect    SenseKey = 0x7
	SenseBlankCheck     SenseKey = 0x8
	SenseAbortedCommand SenseKey = 0xb
	SenseMiscompare     SenseKey = 0xe
)

func (k SenseKey) String() string {
	switch k {
	case SenseNoSense:
		return "NO SENSE"
	case SenseRecoveredError:
		return "RECOVERED ERROR"
	case SenseNotReady:
		return "NOT READY"
	case SenseMediumError:
		return "MEDIUM ERROR"
	case SenseHardwareError:
		return "HARDWARE ERROR"
	case SenseIllegalRequest:
		return "ILLEGAL REQUEST"
	case SenseUnitAttention:
		return "UNIT ATTENTION"
	case SenseDataProtect:
		return "DATA PROTECT"
	case SenseBlankCheck:
		return "BLANK CHECK"
	case SenseAbortedCommand:
		return "ABORTED COMMAND"
	case SenseMiscompare:
		return "MISCOMPARE"
	}
	return fmt.Sprintf("sense key 0x%x", uint8(k))
}

// ASC/ASCQ pairs Ingot produces or reacts to, as asc<<8|ascq.
const (
	ASCNone                   = 0x0000
	ASCLUNotReadyCauseUnknown = 0x0400
	ASCWriteError             = 0x0c00
	ASCUnrecoveredReadError   = 0x1100
	ASCMiscompareDuringVerify = 0x1d00
	ASCParameterListLength    = 0x1a00
	ASCInvalidOpcode          = 0x2000
	ASCLBAOutOfRange          = 0x2100
	ASCInvalidFieldInCDB      = 0x2400
	ASCLUNNotSupported        = 0x2500
	ASCInvalidFieldInParams   = 0x2600
	ASCWriteProtected         = 0x2700
	ASCPowerOnReset           = 0x2900
	ASCBusDeviceReset         = 0x2903
	ASCParametersChanged      = 0x2a00
	ASCMediumNotPresent       = 0x3a00
	ASCInternalTargetFailure  = 0x4400
	ASCCommandPhaseError      = 0x4a00
	ASCDataPhaseError         = 0x4b00
	ASCLUFailure              = 0x3e01
)

// Sense is decoded sense data (fixed or descriptor format, SPC-4 §4.5).
type Sense struct {
	Deferred    bool
	Descriptor  bool
	Key         SenseKey
	ASC, ASCQ   uint8
	InfoValid   bool
	Information uint64
	// SKSV and SenseKeySpecific carry the sense-key specific field
	// (field pointer for ILLEGAL REQUEST).
	SKSV             bool
	SenseKeySpecific uint32
}

// Code returns ASC<<8 | ASCQ.
func (s Sense) Code() uint16 { return uint16(s.ASC)<<8 | uint16(s.ASCQ) }

func (s Sense) String() string {
	str := fmt.Sprintf("%s, ASC/ASCQ 0x%02x/0x%02x", s.Key, s.ASC, s.ASCQ)
	if d := ascText(s.Code()); d != "" {
		str += " (" + d + ")"
	}
	if s.InfoValid {
		str += fmt.Sprintf(", information 0x%x", s.Information)
	}
	return str
}

func ascText(c uint16) string {
	switch c {
	case ASCLUNotReadyCauseUnknown:
		return "logical unit not ready"
	case ASCWriteError:
		return "write error"
	case ASCUnrecoveredReadError:
		return "unrecovered read error"
	case ASCMiscompareDuringVerify:
		return "miscompare during verify operation"
	case ASCParameterListLength:
		return "parameter list length error"
	case ASCInvalidOpcode:
		return "invalid command operation code"
	case ASCLBAOutOfRange:
		return "logical block address out of range"
	case ASCInvalidFieldInCDB:
		return "invalid field in CDB"
	case ASCLUNNotSupported:
		return "logical unit not supported"
	case ASCInvalidFieldInParams:
		return "invalid field in parameter list"
	case ASCWriteProtected:
		return "write protected"
	case ASCPowerOnReset:
		return "power on, reset, or bus device reset occurred"
	case ASCBusDeviceReset:
		return "bus device reset function occurred"
	case ASCParametersChanged:
		return "parameters changed"
	case ASCMediumNotPresent:
		return "medium not present"
	case ASCInternalTargetFailure:
		return "internal target failure"
	case ASCCommandPhaseError:
		return "command phase error"
	case ASCDataPhaseError:
		return "data phase error"
	case ASCLUFailure:
		return "logical unit failure"
	}
	return ""
}

// ErrSense is wrapped by ParseSense errors.
var ErrSense = errors.New("malformed sense data")

// ParseSense decodes fixed (0x70/0x71) or descriptor (0x72/0x73) sense
// data. Fields beyond the received length read as zero.
func ParseSense(b []byte) (Sense, error) {
	if len(b) < 2 {
		return Sense{}, fmt.Errorf("parse sense (%d bytes): %w", len(b), ErrSense)
	}
	var s Sense
	code := b[0] & 0x7f
	s.Deferred = code == 0x71 || code == 0x73
	at := func(i int) byte {
		if i < len(b) {
			return b[i]
		}
		return 0
	}
	switch code {
	case 0x70, 0x71:
		s.Key = SenseKey(at(2) & 0x0f)
		s.InfoValid = b[0]&0x80 != 0
		s.Information = uint64(at(3))<<24 | uint64(at(4))<<16 | uint64(at(5))<<8 | uint64(at(6))
		s.ASC, s.ASCQ = at(12), at(13)
		s.SKSV = at(15)&0x80 != 0
		s.SenseKeySpecific = uint32(at(15)&0x7f)<<16 | uint32(at(16))<<8 | uint32(at(17))
	case 0x72, 0x73:
		s.Descriptor = true
		s.Key = SenseKey(at(1) & 0x0f)
		s.ASC, s.ASCQ = at(2), at(3)
		n := int(at(7))
		d := b[min(8, len(b)):min(8+n, len(b))]
		for len(d) >= 2 {
			typ, l := d[0], int(d[1])
			if 2+l > len(d) {
				return s, fmt.Errorf("parse sense: descriptor 0x%02x overruns: %w", typ, ErrSense)
			}
			body := d[2 : 2+l]
			switch {
			case typ == 0x00 && l >= 10:
				s.InfoValid = body[0]&0x80 != 0
				s.Information = be64(body[2:10])
			case typ == 0x02 && l >= 6:
				s.SKSV = body[2]&0x80 != 0
				s.SenseKeySpecific = uint32(body[2]&0x7f)<<16 | uint32(body[3])<<8 | uint32(body[4])
			}
			d = d[2+l:]
		}
	default:
		return Sense{}, fmt.Errorf("parse sense: response code 0x%02x: %w", code, ErrSense)
	}
	return s, nil
}

// Marshal encodes s in fixed format (18 bytes) or, with Descriptor set,
// descriptor format with information and sense-key-specific descriptors.
func (s Sense) Marshal() []byte {
	if s.Descriptor {
		b := make([]byte, 8, 8+12+8)
		b[0] = 0x72
		if s.Deferred {
			b[0] = 0x73
		}
		b[1], b[2], b[3] = byte(s.Key)&0x0f, s.ASC, s.ASCQ
		if s.InfoValid {
			d := make([]byte, 12)
			d[0], d[1], d[2] = 0x00, 0x0a, 0x80
			put64(d[4:], s.Information)
			b = append(b, d...)
		}
		if s.SKSV {
			d := make([]byte, 8)
			d[0], d[1] = 0x02, 0x06
			d[4] = 0x80 | byte(s.SenseKeySpecific>>16)&0x7f
			d[5], d[6] = byte(s.SenseKeySpecific>>8), byte(s.SenseKeySpecific)
			b = append(b, d...)
		}
		b[7] = byte(len(b) - 8)
		return b
	}
	b := make([]byte, 18)
	b[0] = 0x70
	if s.Deferred {
		b[0] = 0x71
	}
	if s.InfoValid {
		b[0] |= 0x80
		put32(b[3:], uint32(s.Information))
	}
	b[2] = byte(s.Key) & 0x0f
	b[7] = 10
	b[12], b[13] = s.ASC, s.ASCQ
	if s.SKSV {
		b[15] = 0x80 | byte(s.SenseKeySpecific>>16)&0x7f
		b[16], b[17] = byte(s.SenseKeySpecific>>8), byte(s.SenseKeySpecific)
	}
	return b
}

// ParseSenseSegment extracts sense data from a SCSI Response data segment
// (two-byte SenseLength, sense data, optional response data).
func ParseSenseSegment(data []byte) ([]byte, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if len(data) < 2 {
		return nil, fmt.Errorf("parse sense segment: %w", ErrSense)
	}
	n := int(be16(data))
	if 2+n > len(data) {
		return nil, fmt.Errorf("parse sense segment: length %d > %d: %w", n, len(data)-2, ErrSense)
	}
	return data[2 : 2+n], nil
}

// SenseSegment builds a SCSI Response data segment holding sense.
func SenseSegment(sense []byte) []byte {
	b := make([]byte, 2+len(sense))
	put16(b, uint16(len(sense)))
	copy(b[2:], sense)
	return b
}
