package power

import (
	"errors"
	"fmt"
)

// Classes of BMC failure. A driver's error wraps exactly one of them (and
// usually a *BMCError saying which BMC and what failed), so callers decide
// with errors.Is whether trying again later can help.
var (
	// ErrUnreachable: the BMC did not answer (timeouts, nothing listening,
	// the session could not be set up). Retryable.
	ErrUnreachable = errors.New("bmc unreachable")
	// ErrBusy: the BMC answered but cannot serve the request now (node
	// busy, no free session slot, initialising). Retryable.
	ErrBusy = errors.New("bmc busy")
	// ErrAuth: the BMC refused the credentials or the privilege level
	// (wrong password, unknown user). Permanent until driver_info changes.
	ErrAuth = errors.New("bmc rejected the credentials")
	// ErrRejected: the BMC refused the command itself (unsupported
	// command or parameter, invalid data). Permanent.
	ErrRejected = errors.New("bmc rejected the request")
)

// Retryable reports whether err is a BMC failure that may go away if the
// same request is sent again later.
func Retryable(err error) bool {
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrBusy)
}

// BMCError is a failed request to a node's BMC. Its message names the BMC
// (address:port) and the operation, and never carries credentials.
type BMCError struct {
	// BMC is the BMC's address:port.
	BMC string
	// Op is what was asked, e.g. "power on" or "set boot device pxe".
	Op string
	// Attempts is how many times the request was sent.
	Attempts int
	// Class is one of ErrUnreachable, ErrBusy, ErrAuth, ErrRejected.
	Class error
	// Err is the underlying failure.
	Err error
}

func (e *BMCError) Error() string {
	s := fmt.Sprintf("bmc %s: %s", e.BMC, e.Op)
	if e.Attempts > 1 {
		s += fmt.Sprintf(" (%d attempts)", e.Attempts)
	}
	s += ": " + e.Class.Error()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap exposes both the class and the underlying error to errors.Is/As.
func (e *BMCError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Class}
	}
	return []error{e.Class, e.Err}
}
