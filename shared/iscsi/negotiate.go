package iscsi

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Params are the operational parameters of a session and connection.
// Booleans and numbers carry this side's wish before negotiation and the
// agreed value after it.
type Params struct {
	HeaderDigest, DataDigest bool
	// MaxRecvDataSegmentLength is what this side declares it can receive.
	MaxRecvDataSegmentLength uint32
	// MaxXmitDataSegmentLength is what the peer declared: the largest data
	// segment this side may send. Not negotiated by this side.
	MaxXmitDataSegmentLength uint32
	MaxBurstLength           uint32
	FirstBurstLength         uint32
	InitialR2T               bool
	ImmediateData            bool
	MaxOutstandingR2T        uint32
	DataPDUInOrder           bool
	DataSequenceInOrder      bool
	ErrorRecoveryLevel       uint32
	DefaultTime2Wait         uint32
	DefaultTime2Retain       uint32
	MaxConnections           uint32
}

// DefaultParams are RFC 7143's defaults: what applies to a key nobody
// negotiated.
func DefaultParams() Params {
	return Params{
		MaxRecvDataSegmentLength: 8192,
		MaxXmitDataSegmentLength: 8192,
		MaxBurstLength:           262144,
		FirstBurstLength:         65536,
		InitialR2T:               true,
		ImmediateData:            true,
		MaxOutstandingR2T:        1,
		DataPDUInOrder:           true,
		DataSequenceInOrder:      true,
		DefaultTime2Wait:         2,
		DefaultTime2Retain:       20,
		MaxConnections:           1,
	}
}

// Negotiation errors.
var (
	ErrNegotiation = errors.New("negotiation failed")
)

type resultFunc uint8

const (
	resDeclarative resultFunc = iota
	resOR
	resAND
	resMin
	resMax
	resDigest
)

type keyRule struct {
	fn     resultFunc
	lo, hi uint32
}

// operationalKeys lists the keys the Negotiator handles, in the order an
// offer lists them.
func operationalKeys() []string {
	return []string{"HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength", "InitialR2T", "ImmediateData",
		"MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait", "DefaultTime2Retain", "MaxOutstandingR2T",
		"DataPDUInOrder", "DataSequenceInOrder", "ErrorRecoveryLevel", "MaxConnections"}
}

func ruleFor(key string) (keyRule, bool) {
	const maxLen = MaxDataSegmentLength
	switch key {
	case "HeaderDigest", "DataDigest":
		return keyRule{fn: resDigest}, true
	case "MaxRecvDataSegmentLength":
		return keyRule{fn: resDeclarative, lo: 512, hi: maxLen}, true
	case "InitialR2T", "DataPDUInOrder", "DataSequenceInOrder":
		return keyRule{fn: resOR}, true
	case "ImmediateData":
		return keyRule{fn: resAND}, true
	case "MaxBurstLength", "FirstBurstLength":
		return keyRule{fn: resMin, lo: 512, hi: maxLen}, true
	case "DefaultTime2Wait":
		return keyRule{fn: resMax, lo: 0, hi: 3600}, true
	case "DefaultTime2Retain":
		return keyRule{fn: resMin, lo: 0, hi: 3600}, true
	case "MaxOutstandingR2T", "MaxConnections":
		return keyRule{fn: resMin, lo: 1, hi: 65535}, true
	case "ErrorRecoveryLevel":
		return keyRule{fn: resMin, lo: 0, hi: 2}, true
	}
	return keyRule{}, false
}

// informationalKeys are declarations the login code handles; the
// Negotiator records them without answering.
func informationalKey(key string) bool {
	switch key {
	case "TargetName", "InitiatorName", "TargetAlias", "InitiatorAlias", "TargetAddress",
		"TargetPortalGroupTag", "SessionType", "AuthMethod":
		return true
	}
	return strings.HasPrefix(key, "CHAP_")
}

func (p *Params) boolPtr(key string) *bool {
	switch key {
	case "HeaderDigest":
		return &p.HeaderDigest
	case "DataDigest":
		return &p.DataDigest
	case "InitialR2T":
		return &p.InitialR2T
	case "ImmediateData":
		return &p.ImmediateData
	case "DataPDUInOrder":
		return &p.DataPDUInOrder
	case "DataSequenceInOrder":
		return &p.DataSequenceInOrder
	}
	return nil
}

func (p *Params) numPtr(key string) *uint32 {
	switch key {
	case "MaxRecvDataSegmentLength":
		return &p.MaxRecvDataSegmentLength
	case "MaxBurstLength":
		return &p.MaxBurstLength
	case "FirstBurstLength":
		return &p.FirstBurstLength
	case "DefaultTime2Wait":
		return &p.DefaultTime2Wait
	case "DefaultTime2Retain":
		return &p.DefaultTime2Retain
	case "MaxOutstandingR2T":
		return &p.MaxOutstandingR2T
	case "ErrorRecoveryLevel":
		return &p.ErrorRecoveryLevel
	case "MaxConnections":
		return &p.MaxConnections
	}
	return nil
}

// ParseBool parses an iSCSI boolean ("Yes" or "No").
func ParseBool(v string) (bool, error) {
	switch v {
	case "Yes":
		return true, nil
	case "No":
		return false, nil
	}
	return false, fmt.Errorf("parse boolean %q: %w", v, ErrNegotiation)
}

// FormatBool formats an iSCSI boolean.
func FormatBool(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// ParseNumber parses a numerical value (decimal, or hexadecimal with 0x)
// within [lo, hi].
func ParseNumber(v string, lo, hi uint32) (uint32, error) {
	var n uint64
	var err error
	if len(v) > 2 && (v[:2] == "0x" || v[:2] == "0X") {
		n, err = strconv.ParseUint(v[2:], 16, 64)
	} else {
		if len(v) > 1 && v[0] == '0' { // RFC: no leading zeros in decimal constants
			err = strconv.ErrSyntax
		} else {
			n, err = strconv.ParseUint(v, 10, 64)
		}
	}
	if err != nil || n < uint64(lo) || n > uint64(hi) {
		return 0, fmt.Errorf("parse number %q (want %d..%d): %w", v, lo, hi, ErrNegotiation)
	}
	return uint32(n), nil
}

func formatDigest(on bool) string {
	if on {
		return "CRC32C"
	}
	return "None"
}

// Negotiator runs operational-parameter negotiation (RFC 7143 §6.2) for
// one side of a login. Feed it every key the peer sends with Receive and
// send back what Receive returns; Offer lists this side's proposals. Both
// the initiator and the target use it, so the result functions live in one
// place.
type Negotiator struct {
	target  bool
	want    Params
	got     Params
	offered map[string]string
	settled map[string]bool
	// Declared holds informational keys the peer sent (TargetAlias,
	// TargetPortalGroupTag, ...).
	Declared map[string]string
}

// NewNegotiator starts a negotiation for the initiator (target false) or
// the target. want holds this side's preferences and limits;
// want.MaxRecvDataSegmentLength is declared to the peer.
func NewNegotiator(target bool, want Params) *Negotiator {
	got := DefaultParams()
	got.MaxRecvDataSegmentLength = want.MaxRecvDataSegmentLength
	return &Negotiator{target: target, want: want, got: got,
		offered: map[string]string{}, settled: map[string]bool{}, Declared: map[string]string{}}
}

func (n *Negotiator) mine(key string) string {
	if b := n.want.boolPtr(key); b != nil {
		if key == "HeaderDigest" || key == "DataDigest" {
			if *b {
				return "CRC32C,None"
			}
			return "None"
		}
		return FormatBool(*b)
	}
	return strconv.FormatUint(uint64(*n.want.numPtr(key)), 10)
}

// Offer returns proposals for the given keys (all operational keys when
// none are named) that are not settled or already offered.
func (n *Negotiator) Offer(keys ...string) []KeyValue {
	if len(keys) == 0 {
		keys = operationalKeys()
	}
	var out []KeyValue
	for _, k := range keys {
		if _, ok := ruleFor(k); !ok || n.settled[k] {
			continue
		}
		if _, ok := n.offered[k]; ok {
			continue
		}
		v := n.mine(k)
		if k == "MaxRecvDataSegmentLength" {
			n.settled[k] = true // declarative: no answer expected
		} else {
			n.offered[k] = v
		}
		out = append(out, KeyValue{k, v})
	}
	return out
}

// Pending reports whether offers await answers.
func (n *Negotiator) Pending() bool { return len(n.offered) > 0 }

// Result returns the negotiated parameters, checking the cross-key rule
// FirstBurstLength ≤ MaxBurstLength.
func (n *Negotiator) Result() (Params, error) {
	p := n.got
	if p.FirstBurstLength > p.MaxBurstLength {
		if n.target {
			return p, fmt.Errorf("negotiate: FirstBurstLength %d > MaxBurstLength %d: %w", p.FirstBurstLength, p.MaxBurstLength, ErrNegotiation)
		}
		p.FirstBurstLength = p.MaxBurstLength
	}
	return p, nil
}

// Receive processes the peer's keys. Answers to this side's offers set the
// result (an answer outside what the result function allows is an error);
// the peer's own offers are answered in reply; unknown keys are answered
// NotUnderstood.
func (n *Negotiator) Receive(kvs []KeyValue) (reply []KeyValue, err error) {
	seen := map[string]bool{}
	for _, kv := range kvs {
		if seen[kv.Key] {
			return nil, fmt.Errorf("negotiate: key %s sent twice: %w", kv.Key, ErrNegotiation)
		}
		seen[kv.Key] = true
		if informationalKey(kv.Key) {
			n.Declared[kv.Key] = kv.Value
			continue
		}
		rule, known := ruleFor(kv.Key)
		if !known {
			if kv.Value == ValueNotUnderstood || kv.Value == ValueIrrelevant || kv.Value == ValueReject {
				continue // the peer's answer to something we never offered: ignore
			}
			reply = append(reply, KeyValue{kv.Key, ValueNotUnderstood})
			continue
		}
		if rule.fn == resDeclarative {
			v, err := ParseNumber(kv.Value, rule.lo, rule.hi)
			if err != nil {
				if kv.Value == ValueNotUnderstood || kv.Value == ValueIrrelevant || kv.Value == ValueReject {
					continue
				}
				return nil, fmt.Errorf("negotiate %s: %w", kv.Key, err)
			}
			n.got.MaxXmitDataSegmentLength = v
			continue
		}
		if offer, ok := n.offered[kv.Key]; ok {
			delete(n.offered, kv.Key)
			n.settled[kv.Key] = true
			if err := n.accept(kv.Key, rule, offer, kv.Value); err != nil {
				return nil, err
			}
			continue
		}
		ans, err := n.respond(kv.Key, rule, kv.Value)
		if err != nil {
			reply = append(reply, KeyValue{kv.Key, ValueReject})
			continue
		}
		n.settled[kv.Key] = true
		reply = append(reply, KeyValue{kv.Key, ans})
	}
	return reply, nil
}

// accept takes the peer's answer to our offer.
func (n *Negotiator) accept(key string, rule keyRule, offer, answer string) error {
	switch answer {
	case ValueNotUnderstood, ValueReject, ValueIrrelevant:
		return nil // the default stays
	}
	bad := func() error {
		return fmt.Errorf("negotiate %s: offered %q, answer %q not allowed: %w", key, offer, answer, ErrNegotiation)
	}
	switch rule.fn {
	case resDigest:
		if !slices.Contains(SplitList(offer), answer) {
			return bad()
		}
		*n.got.boolPtr(key) = answer == "CRC32C"
	case resOR, resAND:
		b, err := ParseBool(answer)
		if err != nil {
			return bad()
		}
		o, _ := ParseBool(offer)
		if rule.fn == resOR && o && !b || rule.fn == resAND && !o && b {
			return bad()
		}
		*n.got.boolPtr(key) = b
	case resMin, resMax:
		v, err := ParseNumber(answer, rule.lo, rule.hi)
		if err != nil {
			return bad()
		}
		o, _ := ParseNumber(offer, rule.lo, rule.hi)
		if rule.fn == resMin && v > o || rule.fn == resMax && v < o {
			return bad()
		}
		*n.got.numPtr(key) = v
	}
	return nil
}

// respond answers the peer's offer with the result function.
func (n *Negotiator) respond(key string, rule keyRule, offer string) (string, error) {
	switch rule.fn {
	case resDigest:
		// The first offered value this side supports wins (the originator
		// lists its preference first); CRC32C only when this side wants it.
		wantCRC := *n.want.boolPtr(key)
		pick := ""
		for _, o := range SplitList(offer) {
			if o == "None" || o == "CRC32C" && wantCRC {
				pick = o
				break
			}
		}
		if pick == "" {
			return "", ErrNegotiation
		}
		*n.got.boolPtr(key) = pick == "CRC32C"
		return pick, nil
	case resOR, resAND:
		o, err := ParseBool(offer)
		if err != nil {
			return "", err
		}
		m := *n.want.boolPtr(key)
		r := o || m
		if rule.fn == resAND {
			r = o && m
		}
		*n.got.boolPtr(key) = r
		return FormatBool(r), nil
	case resMin, resMax:
		o, err := ParseNumber(offer, rule.lo, rule.hi)
		if err != nil {
			return "", err
		}
		m := *n.want.numPtr(key)
		r := min(o, m)
		if rule.fn == resMax {
			r = max(o, m)
		}
		*n.got.numPtr(key) = r
		return strconv.FormatUint(uint64(r), 10), nil
	}
	return "", ErrNegotiation
}
