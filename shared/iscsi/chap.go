package iscsi

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// CHAPAlgorithmMD5 is the only CHAP_A value Ingot offers or accepts.
const CHAPAlgorithmMD5 = 5

// Secret lengths. RFC 7143 §12.1.3 forbids secrets shorter than 96 bits;
// 255 bytes keeps values small.
const (
	MinCHAPSecret = 12
	MaxCHAPSecret = 255
	// CHAPChallengeLength is the challenge length Ingot generates.
	CHAPChallengeLength = 16
	maxCHAPBinary       = 1024
)

// CHAP errors.
var (
	ErrCHAPSecret   = errors.New("CHAP secret must be 12 to 255 bytes")
	ErrCHAPEncoding = errors.New("malformed CHAP binary value")
)

// Credentials name a CHAP identity. They never print or log their secret.
type Credentials struct {
	User, Secret string
}

// Valid reports whether both fields are usable.
func (c Credentials) Valid() error {
	if c.User == "" {
		return errors.New("CHAP user is empty")
	}
	if len(c.Secret) < MinCHAPSecret || len(c.Secret) > MaxCHAPSecret {
		return ErrCHAPSecret
	}
	return nil
}

// IsZero reports whether no credentials are set.
func (c Credentials) IsZero() bool { return c.User == "" && c.Secret == "" }

// String hides the secret.
func (c Credentials) String() string {
	if c.IsZero() {
		return "none"
	}
	return c.User + ":<redacted>"
}

// LogValue hides the secret from slog.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", c.User), slog.String("secret", "<redacted>"))
}

// GoString hides the secret from %#v.
func (c Credentials) GoString() string { return "iscsi.Credentials{" + c.String() + "}" }

// CHAPResponse computes MD5(id || secret || challenge) (RFC 1994).
func CHAPResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// CHAPVerify checks a response in constant time.
func CHAPVerify(id byte, secret string, challenge, response []byte) bool {
	return subtle.ConstantTimeCompare(CHAPResponse(id, secret, challenge), response) == 1
}

// ParseCHAPBinary decodes a CHAP_C or CHAP_R value: 0x hexadecimal or 0b
// base64 (RFC 7143 §6.1).
func ParseCHAPBinary(v string) ([]byte, error) {
	if len(v) < 3 {
		return nil, fmt.Errorf("parse CHAP value %q: %w", v, ErrCHAPEncoding)
	}
	var b []byte
	var err error
	switch strings.ToLower(v[:2]) {
	case "0x":
		s := v[2:]
		if len(s)%2 == 1 {
			s = "0" + s
		}
		b, err = hex.DecodeString(s)
	case "0b":
		b, err = base64.StdEncoding.DecodeString(v[2:])
	default:
		err = ErrCHAPEncoding
	}
	if err != nil || len(b) == 0 || len(b) > maxCHAPBinary {
		return nil, fmt.Errorf("parse CHAP value: %w", ErrCHAPEncoding)
	}
	return b, nil
}

// FormatCHAPBinary encodes b as 0x hexadecimal.
func FormatCHAPBinary(b []byte) string { return "0x" + hex.EncodeToString(b) }
