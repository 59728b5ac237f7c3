package iscsi

import "fmt"

// LoginStatus is a Login Response's status class and detail
// (class<<8 | detail, RFC 7143 §11.13.5). A non-zero LoginStatus is an
// error, so errors.Is(err, LoginAuthFailure) works across packages.
type LoginStatus uint16

// Login statuses.
const (
	LoginSuccess             LoginStatus = 0x0000
	LoginTargetMovedTemp     LoginStatus = 0x0101
	LoginTargetMovedPerm     LoginStatus = 0x0102
	LoginInitiatorError      LoginStatus = 0x0200
	LoginAuthFailure         LoginStatus = 0x0201
	LoginAuthorizationFailed LoginStatus = 0x0202
	LoginNotFound            LoginStatus = 0x0203
	LoginTargetRemoved       LoginStatus = 0x0204
	LoginUnsupportedVersion  LoginStatus = 0x0205
	LoginTooManyConnections  LoginStatus = 0x0206
	LoginMissingParameter    LoginStatus = 0x0207
	LoginCantIncludeInSess   LoginStatus = 0x0208
	LoginSessionTypeNotSupp  LoginStatus = 0x0209
	LoginSessionDoesNotExist LoginStatus = 0x020a
	LoginInvalidDuringLogin  LoginStatus = 0x020b
	LoginTargetError         LoginStatus = 0x0300
	LoginServiceUnavailable  LoginStatus = 0x0301
	LoginOutOfResources      LoginStatus = 0x0302
)

// MakeLoginStatus joins a class and detail.
func MakeLoginStatus(class, detail uint8) LoginStatus {
	return LoginStatus(class)<<8 | LoginStatus(detail)
}

// Class is the status class (0 success, 1 redirection, 2 initiator error,
// 3 target error).
func (s LoginStatus) Class() uint8 { return uint8(s >> 8) }

// Detail is the status detail.
func (s LoginStatus) Detail() uint8 { return uint8(s) }

func (s LoginStatus) Error() string {
	var what string
	switch s {
	case LoginSuccess:
		what = "success"
	case LoginTargetMovedTemp:
		what = "target moved temporarily"
	case LoginTargetMovedPerm:
		what = "target moved permanently"
	case LoginInitiatorError:
		what = "initiator error"
	case LoginAuthFailure:
		what = "authentication failure"
	case LoginAuthorizationFailed:
		what = "authorization failure"
	case LoginNotFound:
		what = "target not found"
	case LoginTargetRemoved:
		what = "target removed"
	case LoginUnsupportedVersion:
		what = "unsupported version"
	case LoginTooManyConnections:
		what = "too many connections"
	case LoginMissingParameter:
		what = "missing parameter"
	case LoginCantIncludeInSess:
		what = "cannot include in session"
	case LoginSessionTypeNotSupp:
		what = "session type not supported"
	case LoginSessionDoesNotExist:
		what = "session does not exist"
	case LoginInvalidDuringLogin:
		what = "invalid request during login"
	case LoginTargetError:
		what = "target error"
	case LoginServiceUnavailable:
		what = "service unavailable"
	case LoginOutOfResources:
		what = "out of resources"
	default:
		what = "unknown status"
	}
	return fmt.Sprintf("login status %d/%d: %s", s.Class(), s.Detail(), what)
}
