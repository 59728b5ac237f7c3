package ipmi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/ingot-dev/ingot/conductor/node"
)

// driver_info keys, as Ironic's ipmitool driver names them.
const (
	KeyAddress            = "ipmi_address"
	KeyPort               = "ipmi_port"
	KeyUsername           = "ipmi_username"
	KeyPassword           = "ipmi_password"
	KeyPrivLevel          = "ipmi_priv_level"
	KeyCipherSuite        = "ipmi_cipher_suite"
	KeyProtocolVersion    = "ipmi_protocol_version"
	KeyDisableBootTimeout = "ipmi_disable_boot_timeout"
)

// Privilege levels Ironic accepts for ipmi_priv_level.
var privLevels = []string{"ADMINISTRATOR", "CALLBACK", "OPERATOR", "USER"}

// Protocol versions: "2.0" is lanplus (RMCP+), "1.5" is lan.
const (
	Protocol20 = "2.0"
	Protocol15 = "1.5"
)

// Limits of the IPMI user table (IPMI v2.0 §22.28-22.30).
const (
	maxUsername   = 16
	maxPassword20 = 20
	maxPassword15 = 16
	maxCipher     = 19
)

// Secret is a password. It prints, marshals and logs as "******", so a
// Credentials value can go into a format string, a log line or JSON
// without leaking it.
type Secret string

const redacted = "******"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts %#v too.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON redacts the secret in JSON.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Credentials is what it takes to reach one node's BMC, parsed from the
// node's driver_info.
type Credentials struct {
	Address  string
	Port     int
	Username string
	Password Secret
	// PrivLevel is ADMINISTRATOR, OPERATOR, USER or CALLBACK.
	PrivLevel string
	// CipherSuite pins the RMCP+ cipher suite; -1 means not set (the
	// driver's configured list applies).
	CipherSuite int
	// Protocol is "2.0" (lanplus) or "1.5" (lan).
	Protocol string
	// DisableBootTimeout sends "don't clear the boot flags after 60 s"
	// before each boot device change, as Ironic does by default.
	DisableBootTimeout bool
}

// BMC is the BMC's address:port, the name errors and logs use.
func (c Credentials) BMC() string { return net.JoinHostPort(c.Address, strconv.Itoa(c.Port)) }

// LogValue logs the credentials without the password.
func (c Credentials) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("bmc", c.BMC()),
		slog.String("username", c.Username),
		slog.Any("password", c.Password),
		slog.String("priv_level", c.PrivLevel),
		slog.String("protocol", c.Protocol),
	}
	if c.CipherSuite >= 0 {
		attrs = append(attrs, slog.Int("cipher_suite", c.CipherSuite))
	}
	return slog.GroupValue(attrs...)
}

// Validate reports what is missing or wrong in n's driver_info for the
// ipmitool power and management interfaces, in Ironic's words; nil means
// valid. It is pure: it reads n and contacts nothing.
func Validate(n *node.Node) error {
	_, err := ParseCredentials(n.DriverInfo)
	return err
}

// ParseCredentials reads driver_info as Ironic's ipmitool driver does:
// ipmi_address is required, ipmi_port defaults to 623, ipmi_priv_level to
// ADMINISTRATOR, ipmi_protocol_version to 2.0 and ipmi_disable_boot_timeout
// to true. Every problem is reported (wrapping node.ErrInvalid); the
// password never appears in the error.
func ParseCredentials(info map[string]any) (Credentials, error) {
	c := Credentials{Port: 623, PrivLevel: "ADMINISTRATOR", CipherSuite: -1, Protocol: Protocol20, DisableBootTimeout: true}
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	addr, ok := text(info[KeyAddress])
	if !ok || strings.TrimSpace(addr) == "" {
		return c, node.Errorf(node.ErrInvalid, "Missing the following IPMI credentials in node's driver_info: ['%s'].", KeyAddress)
	}
	c.Address = strings.TrimSpace(addr)
	if strings.ContainsAny(c.Address, " \t\r\n/") {
		bad("%s %q is not a host name or IP address.", KeyAddress, c.Address)
	}
	if v, set := info[KeyPort]; set && v != nil {
		p, err := integer(v)
		switch {
		case err != nil:
			bad("%s %q is not a valid integer.", KeyPort, show(v))
		case p < 1 || p > 65535:
			bad("%s \"%d\" is out of range. Valid port numbers must be between 1 and 65535.", KeyPort, p)
		default:
			c.Port = p
		}
	}
	if v, set := info[KeyUsername]; set && v != nil {
		u, ok := text(v)
		switch {
		case !ok:
			bad("%s must be a string.", KeyUsername)
		case len(u) > maxUsername:
			bad("%s is longer than %d characters.", KeyUsername, maxUsername)
		default:
			c.Username = u
		}
	}
	if v, set := info[KeyPassword]; set && v != nil {
		p, ok := text(v)
		if !ok {
			bad("%s must be a string.", KeyPassword) // never show the value
		} else {
			c.Password = Secret(p)
		}
	}
	if v, set := info[KeyPrivLevel]; set && v != nil {
		p, _ := text(v)
		if !slices.Contains(privLevels, p) {
			bad("Invalid privilege level value:%s, the valid value can be one of %s", show(v), pyList(privLevels))
		} else {
			c.PrivLevel = p
		}
	}
	if v, set := info[KeyProtocolVersion]; set && v != nil {
		p, _ := text(v)
		if p != Protocol20 && p != Protocol15 {
			bad("Invalid IPMI protocol version value %s, the valid value can be one of %s", show(v), pyList([]string{Protocol20, Protocol15}))
		} else {
			c.Protocol = p
		}
	}
	if v, set := info[KeyCipherSuite]; set && v != nil && v != "" {
		cs, err := integer(v)
		switch {
		case err != nil || cs < 0 || cs > maxCipher:
			bad("%s %q is not a valid cipher suite: want an integer from 0 to %d.", KeyCipherSuite, show(v), maxCipher)
		case c.Protocol == Protocol15:
			bad("%s is only valid with %s %s.", KeyCipherSuite, KeyProtocolVersion, Protocol20)
		default:
			c.CipherSuite = cs
		}
	}
	if v, set := info[KeyDisableBootTimeout]; set && v != nil {
		b, err := boolean(v)
		if err != nil {
			bad("%s %q is not a boolean.", KeyDisableBootTimeout, show(v))
		} else {
			c.DisableBootTimeout = b
		}
	}
	maxPw := maxPassword20
	if c.Protocol == Protocol15 {
		maxPw = maxPassword15
	}
	if len(c.Password) > maxPw {
		bad("%s is longer than %d characters, the most IPMI %s allows.", KeyPassword, maxPw, c.Protocol)
	}
	if len(errs) > 0 {
		return c, node.Errorf(node.ErrInvalid, "%s", strings.Join(errs, " "))
	}
	return c, nil
}

// text reads a JSON string.
func text(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// integer reads a JSON number or a decimal string as an int.
func integer(v any) (int, error) {
	switch t := v.(type) {
	case float64:
		if t != math.Trunc(t) || t < math.MinInt32 || t > math.MaxInt32 {
			return 0, errors.New("not an integer")
		}
		return int(t), nil
	case int:
		return t, nil
	case int64:
		if t < math.MinInt32 || t > math.MaxInt32 {
			return 0, errors.New("out of range")
		}
		return int(t), nil
	case json.Number:
		i, err := strconv.ParseInt(string(t), 10, 32)
		return int(i), err
	case string:
		i, err := strconv.ParseInt(strings.TrimSpace(t), 10, 32)
		return int(i), err
	}
	return 0, fmt.Errorf("%T is not an integer", v)
}

// boolean reads a JSON boolean or Ironic's string spellings of one.
func boolean(v any) (bool, error) {
	switch t := v.(type) {
	case bool:
		return t, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(t)) {
		case "true", "yes", "on", "1", "t", "y":
			return true, nil
		case "false", "no", "off", "0", "f", "n":
			return false, nil
		}
	}
	return false, fmt.Errorf("%T is not a boolean", v)
}

// show renders a driver_info value for an error message, shortened so a
// huge value cannot flood the API's error.
func show(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return s
}

// pyList renders names as Python prints a list, the way Ironic's messages
// show them.
func pyList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "'" + n + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
}
