package iscsi

import (
	"errors"
	"fmt"
	"strings"
)

// KeyValue is one key=value pair of a Login or Text data segment.
type KeyValue struct {
	Key, Value string
}

// Special values a responder may answer instead of a regular value.
const (
	ValueNotUnderstood = "NotUnderstood"
	ValueIrrelevant    = "Irrelevant"
	ValueReject        = "Reject"
)

// Limits from RFC 7143 §6.1: keys are at most 63 bytes; a value at most
// 8192 bytes (255 for most keys; checked per key by the negotiation rules).
const (
	MaxKeyLength   = 63
	MaxValueLength = 8192
)

// Text parsing errors.
var (
	ErrTextSyntax   = errors.New("malformed text key")
	ErrTextTooLong  = errors.New("text key or value too long")
	ErrTextTooLarge = errors.New("text data too large")
)

// ParseText splits a data segment of NUL-terminated key=value pairs. A
// missing final NUL is tolerated (some targets omit it); empty strings
// between NULs (padding) are skipped. Keys must be non-empty and use the
// characters RFC 7143 §6.1 allows.
func ParseText(data []byte) ([]KeyValue, error) {
	var kvs []KeyValue
	for len(data) > 0 {
		i := indexByte(data, 0)
		item := data
		if i >= 0 {
			item, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(item) == 0 {
			continue
		}
		eq := indexByte(item, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("parse text %q: %w", truncate(item), ErrTextSyntax)
		}
		key, val := item[:eq], item[eq+1:]
		if len(key) > MaxKeyLength || len(val) > MaxValueLength {
			return nil, fmt.Errorf("parse text %q: %w", truncate(item), ErrTextTooLong)
		}
		for _, c := range key {
			if !keyChar(c) {
				return nil, fmt.Errorf("parse text %q: %w", truncate(item), ErrTextSyntax)
			}
		}
		kvs = append(kvs, KeyValue{Key: string(key), Value: string(val)})
	}
	return kvs, nil
}

func keyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '-' || c == '+' || c == '@' || c == '_'
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// EncodeText appends each pair as key=value followed by a NUL.
func EncodeText(dst []byte, kvs []KeyValue) []byte {
	for _, kv := range kvs {
		dst = append(dst, kv.Key...)
		dst = append(dst, '=')
		dst = append(dst, kv.Value...)
		dst = append(dst, 0)
	}
	return dst
}

// Lookup returns the value of key in kvs.
func Lookup(kvs []KeyValue, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// TextAssembler joins text data spread over several PDUs with the C bit
// (RFC 7143 §6.4) and bounds the total.
type TextAssembler struct {
	// Max bounds the joined data (0 means 64 KiB).
	Max int
	buf []byte
}

// Add appends one PDU's data. When more is false the joined data is parsed
// and the assembler resets.
func (a *TextAssembler) Add(data []byte, more bool) (kvs []KeyValue, complete bool, err error) {
	limit := a.Max
	if limit <= 0 {
		limit = 64 << 10
	}
	if len(a.buf)+len(data) > limit {
		a.buf = nil
		return nil, false, ErrTextTooLarge
	}
	a.buf = append(a.buf, data...)
	if more {
		return nil, false, nil
	}
	kvs, err = ParseText(a.buf)
	a.buf = a.buf[:0]
	return kvs, true, err
}

// Pending reports whether a continued text is being assembled.
func (a *TextAssembler) Pending() bool { return len(a.buf) > 0 }

// SplitList splits a comma-separated list value.
func SplitList(v string) []string { return strings.Split(v, ",") }
