package ipmi_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power/ipmi"
)

func TestParseCredentials(t *testing.T) {
	defaults := ipmi.Credentials{Address: "192.0.2.1", Port: 623, PrivLevel: "ADMINISTRATOR", CipherSuite: -1, Protocol: "2.0", DisableBootTimeout: true}
	with := func(f func(c *ipmi.Credentials)) ipmi.Credentials {
		c := defaults
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		info    map[string]any
		want    ipmi.Credentials
		wantErr string
	}{
		{name: "only the address", info: map[string]any{"ipmi_address": "192.0.2.1"}, want: defaults},
		{name: "every key", info: map[string]any{
			"ipmi_address": "bmc.example.net", "ipmi_port": float64(6230), "ipmi_username": "admin", "ipmi_password": "pw",
			"ipmi_priv_level": "OPERATOR", "ipmi_cipher_suite": float64(3), "ipmi_protocol_version": "2.0",
			"ipmi_disable_boot_timeout": false,
		}, want: ipmi.Credentials{Address: "bmc.example.net", Port: 6230, Username: "admin", Password: "pw",
			PrivLevel: "OPERATOR", CipherSuite: 3, Protocol: "2.0"}},
		{name: "numbers as strings, as the CLI sends them", info: map[string]any{
			"ipmi_address": "192.0.2.1", "ipmi_port": "6231", "ipmi_cipher_suite": "17", "ipmi_disable_boot_timeout": "False",
		}, want: with(func(c *ipmi.Credentials) { c.Port, c.CipherSuite, c.DisableBootTimeout = 6231, 17, false })},
		{name: "json.Number", info: map[string]any{"ipmi_address": "192.0.2.1", "ipmi_port": json.Number("624")},
			want: with(func(c *ipmi.Credentials) { c.Port = 624 })},
		{name: "IPMI 1.5", info: map[string]any{"ipmi_address": "192.0.2.1", "ipmi_protocol_version": "1.5"},
			want: with(func(c *ipmi.Credentials) { c.Protocol = "1.5" })},
		{name: "IPv6 address", info: map[string]any{"ipmi_address": "2001:db8::1"},
			want: with(func(c *ipmi.Credentials) { c.Address = "2001:db8::1" })},
		{name: "null values mean unset", info: map[string]any{"ipmi_address": "192.0.2.1", "ipmi_port": nil, "ipmi_password": nil},
			want: defaults},
		{name: "empty cipher suite means unset", info: map[string]any{"ipmi_address": "192.0.2.1", "ipmi_cipher_suite": ""},
			want: defaults},

		{name: "no driver_info", info: nil,
			wantErr: "Missing the following IPMI credentials in node's driver_info: ['ipmi_address']."},
		{name: "empty address", info: map[string]any{"ipmi_address": " "},
			wantErr: "Missing the following IPMI credentials in node's driver_info: ['ipmi_address']."},
		{name: "address not a string", info: map[string]any{"ipmi_address": 10.0},
			wantErr: "Missing the following IPMI credentials in node's driver_info: ['ipmi_address']."},
		{name: "address with a path", info: map[string]any{"ipmi_address": "192.0.2.1/24"},
			wantErr: `ipmi_address "192.0.2.1/24" is not a host name or IP address.`},
		{name: "port not a number", info: map[string]any{"ipmi_address": "h", "ipmi_port": "ipmi"},
			wantErr: `ipmi_port "ipmi" is not a valid integer.`},
		{name: "port fractional", info: map[string]any{"ipmi_address": "h", "ipmi_port": 623.5},
			wantErr: `ipmi_port "623.5" is not a valid integer.`},
		{name: "port out of range", info: map[string]any{"ipmi_address": "h", "ipmi_port": float64(70000)},
			wantErr: `ipmi_port "70000" is out of range. Valid port numbers must be between 1 and 65535.`},
		{name: "port zero", info: map[string]any{"ipmi_address": "h", "ipmi_port": "0"},
			wantErr: `ipmi_port "0" is out of range. Valid port numbers must be between 1 and 65535.`},
		{name: "bad privilege level", info: map[string]any{"ipmi_address": "h", "ipmi_priv_level": "root"},
			wantErr: "Invalid privilege level value:root, the valid value can be one of ['ADMINISTRATOR', 'CALLBACK', 'OPERATOR', 'USER']"},
		{name: "privilege level is case sensitive, as in Ironic", info: map[string]any{"ipmi_address": "h", "ipmi_priv_level": "operator"},
			wantErr: "Invalid privilege level value:operator, the valid value can be one of ['ADMINISTRATOR', 'CALLBACK', 'OPERATOR', 'USER']"},
		{name: "bad protocol version", info: map[string]any{"ipmi_address": "h", "ipmi_protocol_version": "3.0"},
			wantErr: "Invalid IPMI protocol version value 3.0, the valid value can be one of ['2.0', '1.5']"},
		{name: "cipher suite out of range", info: map[string]any{"ipmi_address": "h", "ipmi_cipher_suite": float64(42)},
			wantErr: `ipmi_cipher_suite "42" is not a valid cipher suite: want an integer from 0 to 19.`},
		{name: "cipher suite not a number", info: map[string]any{"ipmi_address": "h", "ipmi_cipher_suite": "aes"},
			wantErr: `ipmi_cipher_suite "aes" is not a valid cipher suite: want an integer from 0 to 19.`},
		{name: "cipher suite with IPMI 1.5", info: map[string]any{"ipmi_address": "h", "ipmi_cipher_suite": "3", "ipmi_protocol_version": "1.5"},
			wantErr: "ipmi_cipher_suite is only valid with ipmi_protocol_version 2.0."},
		{name: "user name too long", info: map[string]any{"ipmi_address": "h", "ipmi_username": strings.Repeat("u", 17)},
			wantErr: "ipmi_username is longer than 16 characters."},
		{name: "password too long for 2.0", info: map[string]any{"ipmi_address": "h", "ipmi_password": strings.Repeat("p", 21)},
			wantErr: "ipmi_password is longer than 20 characters, the most IPMI 2.0 allows."},
		{name: "password too long for 1.5", info: map[string]any{"ipmi_address": "h", "ipmi_password": strings.Repeat("p", 17), "ipmi_protocol_version": "1.5"},
			wantErr: "ipmi_password is longer than 16 characters, the most IPMI 1.5 allows."},
		{name: "password not a string", info: map[string]any{"ipmi_address": "h", "ipmi_password": 1234.0},
			wantErr: "ipmi_password must be a string."},
		{name: "disable_boot_timeout not a boolean", info: map[string]any{"ipmi_address": "h", "ipmi_disable_boot_timeout": "maybe"},
			wantErr: `ipmi_disable_boot_timeout "maybe" is not a boolean.`},
		{name: "every problem at once", info: map[string]any{"ipmi_address": "h", "ipmi_port": "x", "ipmi_priv_level": "god"},
			wantErr: `ipmi_port "x" is not a valid integer. Invalid privilege level value:god, the valid value can be one of ['ADMINISTRATOR', 'CALLBACK', 'OPERATOR', 'USER']`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ipmi.ParseCredentials(tc.info)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v\nwant    %s", err, tc.wantErr)
				}
				if !errors.Is(err, node.ErrInvalid) {
					t.Errorf("error does not wrap node.ErrInvalid")
				}
				if verr := ipmi.Validate(&node.Node{DriverInfo: tc.info}); verr == nil || verr.Error() != tc.wantErr {
					t.Errorf("Validate = %v, want the same error", verr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("credentials (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCredentialsBMC(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.1", "192.0.2.1:623"},
		{"2001:db8::1", "[2001:db8::1]:623"},
		{"bmc.example.net", "bmc.example.net:623"},
	} {
		c, err := ipmi.ParseCredentials(map[string]any{"ipmi_address": tc.addr})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.BMC(); got != tc.want {
			t.Errorf("BMC() of %s = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

// FuzzParseCredentials feeds driver_info as the API receives it (any JSON
// object): parsing never panics, a valid result is within the documented
// ranges, and the password never shows: errors and the log value are the
// same whatever the password's bytes.
func FuzzParseCredentials(f *testing.F) {
	f.Add(`{"ipmi_address":"192.0.2.1","ipmi_port":623}`, "pw")
	f.Add(`{"ipmi_address":"h","ipmi_port":"x","ipmi_priv_level":"secret"}`, "secret")
	f.Add(`{"ipmi_address":"h","ipmi_cipher_suite":"17","ipmi_protocol_version":"1.5"}`, "")
	f.Add(`{"ipmi_address":"h","ipmi_port":1e300,"ipmi_disable_boot_timeout":"yes"}`, "ipmi_password")
	f.Add(`{"ipmi_address":"","ipmi_username":"aaaaaaaaaaaaaaaaaaaaaaa"}`, "0123456789012345678901")
	f.Fuzz(func(t *testing.T, raw, pw string) {
		var info map[string]any
		if json.Unmarshal([]byte(raw), &info) != nil || info == nil {
			return
		}
		parse := func(p string) (ipmi.Credentials, error) {
			if pw != "" {
				info["ipmi_password"] = p
			}
			return ipmi.ParseCredentials(info)
		}
		c, err := parse(pw)
		other, otherErr := parse(strings.Repeat("\x01", len(pw)))
		if (err == nil) != (otherErr == nil) || (err != nil && err.Error() != otherErr.Error()) {
			t.Fatalf("the password's bytes change the error: %v vs %v", err, otherErr)
		}
		if c.LogValue().String() != other.LogValue().String() {
			t.Fatalf("the password's bytes change the log value: %s vs %s", c.LogValue(), other.LogValue())
		}
		if err != nil {
			if !errors.Is(err, node.ErrInvalid) {
				t.Fatalf("error %v does not wrap node.ErrInvalid", err)
			}
			return
		}
		if c.Address == "" || c.Port < 1 || c.Port > 65535 || c.CipherSuite < -1 || c.CipherSuite > 19 ||
			(c.Protocol != "2.0" && c.Protocol != "1.5") {
			t.Fatalf("out-of-range credentials accepted: %+v", c)
		}
	})
}
