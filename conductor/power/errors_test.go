package power_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ingot-dev/ingot/conductor/power"
)

func TestBMCError(t *testing.T) {
	cause := errors.New("RAKP2 authentication code mismatch")
	tests := []struct {
		name      string
		err       error
		wantMsg   string
		wantClass error
		retryable bool
	}{
		{name: "one attempt", err: &power.BMCError{BMC: "10.0.0.5:623", Op: "power on", Attempts: 1, Class: power.ErrAuth, Err: cause},
			wantMsg: "bmc 10.0.0.5:623: power on: bmc rejected the credentials: RAKP2 authentication code mismatch", wantClass: power.ErrAuth},
		{name: "several attempts", err: &power.BMCError{BMC: "[2001:db8::1]:623", Op: "get power state", Attempts: 5, Class: power.ErrUnreachable, Err: context.DeadlineExceeded},
			wantMsg: "bmc [2001:db8::1]:623: get power state (5 attempts): bmc unreachable: context deadline exceeded", wantClass: power.ErrUnreachable, retryable: true},
		{name: "no cause", err: &power.BMCError{BMC: "h:623", Op: "power off", Attempts: 2, Class: power.ErrBusy},
			wantMsg: "bmc h:623: power off (2 attempts): bmc busy", wantClass: power.ErrBusy, retryable: true},
		{name: "wrapped further", err: fmt.Errorf("set power of node n-1: %w", &power.BMCError{BMC: "h:623", Op: "power off", Attempts: 1, Class: power.ErrRejected}),
			wantMsg: "set power of node n-1: bmc h:623: power off: bmc rejected the request", wantClass: power.ErrRejected},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.wantMsg {
				t.Errorf("message = %q\nwant      %q", got, tc.wantMsg)
			}
			if !errors.Is(tc.err, tc.wantClass) {
				t.Errorf("errors.Is(err, %v) = false", tc.wantClass)
			}
			if got := power.Retryable(tc.err); got != tc.retryable {
				t.Errorf("Retryable = %v, want %v", got, tc.retryable)
			}
			var be *power.BMCError
			if !errors.As(tc.err, &be) {
				t.Error("errors.As(*power.BMCError) = false")
			}
		})
	}
	if !errors.Is(tests[1].err, context.DeadlineExceeded) {
		t.Error("the cause is not reachable with errors.Is")
	}
	if power.Retryable(errors.New("other")) || power.Retryable(nil) {
		t.Error("an unclassified error is retryable")
	}
}
