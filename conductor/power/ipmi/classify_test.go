package ipmi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ingot-dev/ingot/conductor/power"
)

func TestClassify(t *testing.T) {
	// Messages are what go-ipmi v0.9.1 returned against ipmi_sim 2.0.33
	// and its own reference BMC; go-ipmi flattens session errors with %v,
	// so they are matched as text.
	tests := []struct {
		name  string
		phase phase
		err   error
		want  error
	}{
		{"wrong password (RAKP2 mismatch)", phaseConnect, errors.New("connect20 failed after try all cipher suite ids ([3]), errs: \ncmd: rakp1 failed with cipher suite id (3), err: validate rakp2 message failed, err: RAKP2 authentication code mismatch: RAKP authentication failed"), power.ErrAuth},
		{"unknown user", phaseConnect, errors.New("connect20 failed after try all cipher suite ids ([3]), errs: \ncmd: rakp1 failed with cipher suite id (3), err: validate rakp2 message failed, err: RMCP+ status 0x0d: Unauthorized name"), power.ErrAuth},
		{"wrong password after suite 17 was refused", phaseConnect, errors.New("connect20 failed after try all cipher suite ids ([17 3]), errs: \ncmd: RMCP+ Open Session failed with cipher suite id (17), err: client exchange failed, err: unpack session setup response failed, err: unpacked data is too short (2/8)\ncmd: rakp1 failed with cipher suite id (3), err: validate rakp2 message failed, err: RAKP2 authentication code mismatch: RAKP authentication failed"), power.ErrAuth},
		{"privilege level refused", phaseConnect, errors.New("cmd: rakp1 failed: RMCP+ status 0x0a: Unauthorized role of privilege level requested"), power.ErrAuth},
		{"no free session", phaseConnect, errors.New("connect20 failed after try all cipher suite ids ([17 3]), errs: \ncmd: RMCP+ Open Session failed with cipher suite id (17), err: RMCP+ status 0x01: Insufficient resources to create a session"), power.ErrBusy},
		{"suite 17 refused by ipmi_sim", phaseConnect, errors.New("connect20 failed after try all cipher suite ids ([17]), errs: \ncmd: RMCP+ Open Session failed with cipher suite id (17), err: client exchange failed, err: unpack session setup response failed, err: unpacked data is too short (2/8)"), power.ErrRejected},
		{"no cipher suite match", phaseConnect, errors.New("cmd: RMCP+ Open Session failed with cipher suite id (17), err: RMCP+ status 0x11: No Cipher Suite match with proposed security algorithms"), power.ErrRejected},
		{"connection refused", phaseConnect, errors.New("cmd: Get Channel Authentication Capabilities failed, err: IPMI LAN: UDP exchange error after 1 attempt(s): read from conn failed, err: read udp 127.0.0.1:41418->127.0.0.1:16299: read: connection refused"), power.ErrUnreachable},
		{"no answer", phaseConnect, errors.New("cmd: Get Channel Authentication Capabilities failed, err: IPMI LAN: no matching IPMI response (expected rqSeq 0x01, command 0x38) before UDP read deadline after 2 attempt(s): udp exchange: no datagram matched before deadline"), power.ErrUnreachable},
		{"unknown session setup failure is retryable", phaseConnect, errors.New("session not activated"), power.ErrUnreachable},
		{"unknown command failure is permanent", phaseCommand, errors.New("unpack response failed"), power.ErrRejected},

		{"node busy", phaseCommand, fmt.Errorf("ChassisControl: %w", types.NewResponseError(types.CodeNodeBusy, "busy")), power.ErrBusy},
		{"BMC initialising", phaseCommand, types.NewResponseError(types.CodeCannotProvideResponseBMCInitialize, ""), power.ErrBusy},
		{"command timeout on the BMC", phaseCommand, types.NewResponseError(types.CodeProcessTimeout, ""), power.ErrBusy},
		{"invalid command", phaseCommand, types.NewResponseError(types.CodeInvalidCommand, ""), power.ErrRejected},
		{"invalid data field", phaseCommand, types.NewResponseError(types.CodeRequestDataFieldInvalid, ""), power.ErrRejected},
		{"unspecified error (ipmi_sim's answer to boot device safe)", phaseCommand, types.NewResponseError(types.CodeUnspecifiedError, ""), power.ErrRejected},
		{"parameter not supported", phaseCommand, types.NewResponseError(types.CodeParameterNotSupported, ""), power.ErrRejected},
		{"insufficient privilege", phaseCommand, types.NewResponseError(types.CodeInsufficientPrivilege, ""), power.ErrAuth},
		{"bare completion code", phaseCommand, types.CodeNodeBusy, power.ErrBusy},
		{"RMCP+ status, typed", phaseConnect, fmt.Errorf("open: %w", types.NewRmcpStatusError(types.RmcpStatusCodeNoResToCreateSess)), power.ErrBusy},
		{"RMCP+ bad integrity check, typed", phaseConnect, types.NewRmcpStatusError(types.RmcpStatusCodeInvalidIntegrityCheckValue), power.ErrAuth},
		{"RMCP+ illegal parameter, typed", phaseConnect, types.NewRmcpStatusError(types.RmcpStatusCodeIllegalParameter), power.ErrRejected},
		{"attempt deadline", phaseCommand, fmt.Errorf("canceled from caller: %w", context.DeadlineExceeded), power.ErrUnreachable},
		{"network timeout", phaseCommand, &net.OpError{Op: "read", Net: "udp", Err: os.ErrDeadlineExceeded}, power.ErrUnreachable},
		{"ECONNREFUSED", phaseCommand, &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("read", syscall.ECONNREFUSED)}, power.ErrUnreachable},
		{"DNS failure", phaseConnect, &net.DNSError{Err: "no such host", Name: "bmc.invalid", IsNotFound: true}, power.ErrUnreachable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.phase, tc.err); got != tc.want {
				t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestScrub(t *testing.T) {
	inner := fmt.Errorf("wrap: %w", types.CodeNodeBusy)
	echo := fmt.Errorf("login as admin/hunter22 failed: %w", inner)
	got := scrub(echo, "hunter22")
	if got.Error() != "login as admin/****** failed: wrap: IPMI completion code Node busy" {
		t.Errorf("scrubbed = %q", got)
	}
	if !errors.Is(got, types.CodeNodeBusy) {
		t.Error("scrubbing lost the error chain")
	}
	if scrub(inner, "hunter22") != inner || scrub(echo, "") != echo {
		t.Error("scrub changed an error without the secret")
	}
}
