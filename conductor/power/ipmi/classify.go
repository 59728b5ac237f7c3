package ipmi

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ingot-dev/ingot/conductor/power"
)

// phase says where an attempt failed: setting up the session or running a
// command inside it. An unrecognised failure to set up a session is
// retryable (Ironic retries session setup); an unrecognised failure of a
// command the BMC answered is not.
type phase int

const (
	phaseConnect phase = iota
	phaseCommand
)

// Message fragments that identify a failure when go-ipmi flattens the
// error chain (it joins per-cipher-suite session errors with %v), matched
// lower-case. Order of the checks in classify matters: a session attempt
// that tried several cipher suites reports each suite's failure, and an
// authentication failure on any of them outranks the others.
var (
	authFragments = []string{
		"rakp authentication failed", // wrong password (RAKP2/RAKP4 mismatch)
		"unauthorized name",          // unknown user
		"unauthorized role",          // privilege level not allowed
		"invalid role",
		"invalid integrity check value", // wrong password, as some BMCs report it at RAKP3
		"unauthorized guid",
		"insufficient privilege",
		"invalid user name",
	}
	busyFragments = []string{
		"insufficient resources", // no free session slot (RMCP+ status 01h/0Bh)
		"node busy",
		"bmc initialization in progress",
		"out of space",
		"invalid session id", // session evicted under us
		"inactive session id",
	}
	unreachableFragments = []string{
		"timeout",
		"timed out",
		"deadline exceeded",
		"connection refused",
		"no matching ipmi response",
		"no udp datagram matched",
		"network is unreachable",
		"no route to host",
		"no such host",
		"udp exchange error",
	}
	rejectedSessionFragments = []string{
		"no cipher suite match",
		"invalid authentication algorithm",
		"invalid integrity algorithm",
		"invalid confidentiality algorithm",
		"no matching authentication payload",
		"no matching integrity payload",
		"not valid cipher suite",
		"unpack session setup response failed", // BMC answered Open Session with an error (e.g. suite 17 on ipmi_sim)
	}
)

// classify returns the power error class of a failed attempt.
func classify(ph phase, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return power.ErrUnreachable
	}
	if re, ok := types.IsResponseError(err); ok {
		return classifyCode(re.CompletionCode())
	}
	var cc types.CompletionCode
	if errors.As(err, &cc) {
		return classifyCode(cc)
	}
	var rs *types.RmcpStatusError
	if errors.As(err, &rs) {
		return classifyStatus(rs.StatusCode())
	}
	msg := strings.ToLower(err.Error())
	switch {
	case containsAny(msg, authFragments):
		return power.ErrAuth
	case containsAny(msg, busyFragments):
		return power.ErrBusy
	case containsAny(msg, unreachableFragments):
		return power.ErrUnreachable
	case containsAny(msg, rejectedSessionFragments):
		return power.ErrRejected
	}
	var nerr net.Error
	if errors.As(err, &nerr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, net.ErrClosed) {
		return power.ErrUnreachable
	}
	if ph == phaseConnect {
		return power.ErrUnreachable
	}
	return power.ErrRejected
}

// classifyCode maps an IPMI completion code (IPMI v2.0 §5.2).
func classifyCode(cc types.CompletionCode) error {
	switch cc {
	case types.CodeNodeBusy, types.CodeProcessTimeout, types.CodeOutOfSpace,
		types.CodeCannotProvideResponseSDRRInUpdate, types.CodeCannotProvideResponseFirmwareUpdate,
		types.CodeCannotProvideResponseBMCInitialize, types.CodeDestinationUnavailable,
		types.CodeCannotProvideResponse:
		return power.ErrBusy
	case types.CodeInsufficientPrivilege:
		return power.ErrAuth
	}
	return power.ErrRejected
}

// classifyStatus maps an RMCP+ session setup status (IPMI v2.0 §13.24).
func classifyStatus(s types.RmcpStatusCode) error {
	switch s {
	case types.RmcpStatusCodeNoResToCreateSess, types.RmcpStatusCodeNoResToCreateSessAtRole,
		types.RmcpStatusCodeInvalidSessionID, types.RmcpStatusCodeInactiveSessionID:
		return power.ErrBusy
	case types.RmcpStatusCodeInvalidRole, types.RmcpStatusCodeUnauthorizedRoleOfPriLevel,
		types.RmcpStatusCodeInvalidNameLength, types.RmcpStatusCodeUnauthorizedName,
		types.RmcpStatusCodeUnauthorizedGUID, types.RmcpStatusCodeInvalidIntegrityCheckValue:
		return power.ErrAuth
	}
	return power.ErrRejected
}

func containsAny(s string, frags []string) bool {
	for _, f := range frags {
		if strings.Contains(s, f) {
			return true
		}
	}
	return false
}

// scrubbed hides a secret in an error's message, in case a library ever
// echoes it; errors.Is/As still see the original.
type scrubbed struct {
	err    error
	secret string
}

func scrub(err error, secret Secret) error {
	if err == nil || len(secret) < 3 || !strings.Contains(err.Error(), string(secret)) {
		return err
	}
	return &scrubbed{err: err, secret: string(secret)}
}

func (s *scrubbed) Error() string { return strings.ReplaceAll(s.err.Error(), s.secret, redacted) }
func (s *scrubbed) Unwrap() error { return s.err }
