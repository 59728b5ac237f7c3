// Package iscsi is the conductor's pure-Go iSCSI initiator: it logs in to
// the target a deploy agent exports (agent/iscsitarget) or any RFC 7143
// target (tgtd, LIO), and writes an image onto a LUN.
//
// A Session is one login at ErrorRecoveryLevel 0 over one TCP connection:
// AuthMethod None or CHAP (MD5, optionally mutual), operational
// negotiation (NotUnderstood/Irrelevant/Reject answers, keys the target
// offers on its own, the T=0 continue loop and C-bit continuation), CRC32C
// digests on request, and SCSI commands pipelined within the target's
// MaxCmdSN window up to a configurable depth. Write data goes out as
// immediate data, unsolicited Data-Out (InitialR2T=No) and R2T-solicited
// Data-Out, each PDU written with one gathered write and no copy. A
// background reader places Data-In straight into the caller's buffer,
// answers the target's NOP-In pings even while the session is idle, and
// handles Reject and Asynchronous Messages. Every call takes a context;
// a command whose context ends tears the session down (ERL 0 cannot
// reclaim a task whose buffers are in flight any other way).
//
// On top of that, LUN wraps a logical unit (TEST UNIT READY absorbing the
// post-login UNIT ATTENTION, READ CAPACITY(16) with a (10) fallback,
// READ/WRITE(16), SYNCHRONIZE CACHE(16)), and Writer is the streaming
// io.WriterAt + Sync that shared/imagestream writes into: block-aligned
// pipelined writes, a partial trailing block merged by read-modify-write,
// transparent re-login that resumes from the last acknowledged LBA after a
// dropped session (or fails; it never reports success it did not get),
// and read-back verification, sampled or full.
//
// WriteImage is the iscsi deploy interface's whole write: it checks the
// image (a compressed one is decoded once into nothing first, to verify
// its checksum and learn its size), logs in with bounded retries while
// the target is unreachable, refuses an image larger than the LUN before
// writing anything, streams it through shared/imagestream into a Writer,
// syncs and reads back.
//
// The package never logs CHAP secrets and holds no package state.
package iscsi

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// DefaultInitiatorIQN names the conductor when Config.InitiatorIQN is empty.
const DefaultInitiatorIQN = "iqn.2024-01.dev.ingot:conductor"

// Config describes how to reach and log in to one target.
type Config struct {
	// Portal is the target's host:port (port 3260 by convention).
	Portal string
	// TargetIQN is the target to log in to.
	TargetIQN string
	// InitiatorIQN names this initiator (default DefaultInitiatorIQN).
	InitiatorIQN string
	// CHAP, when set, logs in with CHAP as this user and secret.
	CHAP proto.Credentials
	// MutualCHAP, when set, makes the target prove it knows this secret
	// (mutual CHAP); the target must answer as MutualCHAP.User.
	MutualCHAP proto.Credentials
	// MaxRecvDataSegmentLength is declared to the target (default 256 KiB).
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength and FirstBurstLength are offered (defaults
	// 16 MiB - 1 KiB and 1 MiB, so a default 1 MiB write needs no R2T);
	// the target may lower them.
	MaxBurstLength, FirstBurstLength uint32
	// InitialR2T, when true, asks for InitialR2T=Yes (no unsolicited
	// Data-Out); the default asks for No.
	InitialR2T bool
	// NoImmediateData asks for ImmediateData=No.
	NoImmediateData bool
	// HeaderDigest and DataDigest offer CRC32C digests.
	HeaderDigest, DataDigest bool
	// QueueDepth bounds the commands in flight (default 16); the target's
	// MaxCmdSN window bounds them too.
	QueueDepth int
	// DialTimeout bounds the TCP connect (default 10 s) and LoginTimeout
	// the login phase (default 15 s).
	DialTimeout, LoginTimeout time.Duration
	// CommandTimeout bounds each command when its context has no earlier
	// deadline (default 60 s). A command that times out ends the session.
	CommandTimeout time.Duration
	// Logger receives session events; nil discards them.
	Logger *slog.Logger
}

// String describes the configuration without secrets.
func (c Config) String() string {
	return fmt.Sprintf("iscsi.Config{Portal:%s TargetIQN:%s InitiatorIQN:%s CHAP:%v MutualCHAP:%v}",
		c.Portal, c.TargetIQN, c.InitiatorIQN, c.CHAP, c.MutualCHAP)
}

// GoString hides the secrets from %#v.
func (c Config) GoString() string { return c.String() }

// LogValue hides the secrets from slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("portal", c.Portal), slog.String("target", c.TargetIQN),
		slog.String("chap_user", c.CHAP.User), slog.Bool("mutual_chap", !c.MutualCHAP.IsZero()))
}

func (c Config) withDefaults() (Config, error) {
	if c.Portal == "" {
		return c, fmt.Errorf("%w: Portal is empty", ErrConfig)
	}
	if c.InitiatorIQN == "" {
		c.InitiatorIQN = DefaultInitiatorIQN
	}
	if !c.CHAP.IsZero() {
		if err := c.CHAP.Valid(); err != nil {
			return c, fmt.Errorf("%w: CHAP: %v", ErrConfig, err)
		}
	}
	if !c.MutualCHAP.IsZero() {
		if c.CHAP.IsZero() {
			return c, fmt.Errorf("%w: mutual CHAP needs CHAP", ErrConfig)
		}
		if err := c.MutualCHAP.Valid(); err != nil {
			return c, fmt.Errorf("%w: mutual CHAP: %v", ErrConfig, err)
		}
		if c.MutualCHAP.Secret == c.CHAP.Secret {
			return c, fmt.Errorf("%w: mutual CHAP secret must differ from the CHAP secret", ErrConfig)
		}
	}
	if c.MaxRecvDataSegmentLength == 0 {
		c.MaxRecvDataSegmentLength = 256 << 10
	}
	if c.MaxBurstLength == 0 {
		c.MaxBurstLength = 16<<20 - 1024
	}
	if c.FirstBurstLength == 0 {
		c.FirstBurstLength = 1 << 20
	}
	for _, v := range []uint32{c.MaxRecvDataSegmentLength, c.MaxBurstLength, c.FirstBurstLength} {
		if v < 512 || v > proto.MaxDataSegmentLength {
			return c, fmt.Errorf("%w: segment and burst lengths must be 512..%d", ErrConfig, proto.MaxDataSegmentLength)
		}
	}
	if c.QueueDepth <= 0 {
		c.QueueDepth = 16
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = 15 * time.Second
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Errors. ErrSessionLost is retryable (log in again); the others are not.
var (
	ErrConfig         = errors.New("invalid iscsi configuration")
	ErrSessionLost    = errors.New("iscsi session lost")
	ErrProtocol       = errors.New("iscsi protocol violation by the target")
	ErrRejected       = errors.New("target rejected the request")
	ErrBeyondCapacity = errors.New("write beyond the logical unit's capacity")
	ErrVerify         = errors.New("read-back verification failed")
	ErrWriterFailed   = errors.New("iscsi writer failed earlier")
	// Sense-based classes, matched with errors.Is on a *SCSIError.
	ErrLBAOutOfRange   = errors.New("logical block address out of range")
	ErrUnitAttention   = errors.New("unit attention")
	ErrNotReady        = errors.New("logical unit not ready")
	ErrInvalidOpcode   = errors.New("invalid command operation code")
	ErrWriteProtected  = errors.New("logical unit write protected")
	ErrLUNNotSupported = errors.New("logical unit not supported")
)

// SCSIError is a command that completed with a status other than GOOD.
type SCSIError struct {
	Op       byte
	Status   uint8
	HasSense bool
	Sense    proto.Sense
}

func (e *SCSIError) Error() string {
	s := fmt.Sprintf("scsi command 0x%02x: status 0x%02x", e.Op, e.Status)
	if e.HasSense {
		s += ": " + e.Sense.String()
	}
	return s
}

// Is maps sense data to the sentinel classes above.
func (e *SCSIError) Is(target error) bool {
	if !e.HasSense {
		return false
	}
	switch target {
	case ErrLBAOutOfRange:
		return e.Sense.Key == proto.SenseIllegalRequest && e.Sense.ASC == 0x21
	case ErrUnitAttention:
		return e.Sense.Key == proto.SenseUnitAttention
	case ErrNotReady:
		return e.Sense.Key == proto.SenseNotReady
	case ErrInvalidOpcode:
		return e.Sense.Key == proto.SenseIllegalRequest && e.Sense.ASC == 0x20
	case ErrWriteProtected:
		return e.Sense.Key == proto.SenseDataProtect
	case ErrLUNNotSupported:
		return e.Sense.Key == proto.SenseIllegalRequest && e.Sense.ASC == 0x25
	}
	return false
}
