package api

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestFaultString(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"ironic envelope", `{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Invalid or missing agent token received.\", \"debuginfo\": null}"}`, "Invalid or missing agent token received."},
		{"ironic 406", `{"error_message": "{\"code\": 406, \"title\": \"Not Acceptable\", \"description\": \"Version 1.99 was requested\"}"}`, "Version 1.99 was requested"},
		{"agent fault", `{"faultcode":"Client","faultstring":"Agent is busy: executing command x"}`, "Agent is busy: executing command x"},
		{"plain text", "oops\n", "oops"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FaultString([]byte(tc.body)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestImageInfoValidate(t *testing.T) {
	sha := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name    string
		info    ImageInfo
		md5     bool
		wantErr string
	}{
		{"os_hash pair", ImageInfo{ID: "i", URLs: []string{"http://x/i"}, OSHashAlgo: "sha256", OSHashValue: sha}, false, ""},
		{"sha256 checksum by length", ImageInfo{ID: "i", URLs: []string{"http://x/i"}, Checksum: sha}, false, ""},
		{"checksum URL", ImageInfo{ID: "i", URLs: []string{"http://x/i"}, Checksum: "http://x/SHA256SUMS"}, false, ""},
		{"md5 refused", ImageInfo{ID: "i", URLs: []string{"http://x/i"}, Checksum: strings.Repeat("b", 32)}, false, "MD5"},
		{"md5 allowed", ImageInfo{ID: "i", URLs: []string{"http://x/i"}, Checksum: strings.Repeat("b", 32)}, true, ""},
		{"no checksum", ImageInfo{ID: "i", URLs: []string{"http://x/i"}}, false, "no usable checksum"},
		{"no id", ImageInfo{URLs: []string{"http://x/i"}, Checksum: sha}, false, "id"},
		{"no urls", ImageInfo{ID: "i", Checksum: sha}, false, "urls"},
		{"ftp url", ImageInfo{ID: "i", URLs: []string{"ftp://x/i"}, Checksum: sha}, false, "http(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.info.Validate(tc.md5)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestCommandName(t *testing.T) {
	for name, ok := range map[string]bool{"deploy.execute_deploy_step": true, "standby.power_off": true,
		"power_off": false, ".x": false, "a.": false, "a.b.c": false} {
		_, _, err := (&CommandRequest{Name: name}).Split()
		if (err == nil) != ok {
			t.Errorf("Split(%q) = %v", name, err)
		}
	}
}

func TestHeartbeatValidate(t *testing.T) {
	for _, tc := range []struct {
		req HeartbeatRequest
		ok  bool
	}{
		{HeartbeatRequest{CallbackURL: "https://192.0.2.5:9999", AgentVersion: "1"}, true},
		{HeartbeatRequest{CallbackURL: "http://[2001:db8::1]:9999", AgentVersion: "1"}, true},
		{HeartbeatRequest{CallbackURL: "ftp://x", AgentVersion: "1"}, false},
		{HeartbeatRequest{CallbackURL: "http://x:9999"}, false},
	} {
		if err := tc.req.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.req, err)
		}
	}
}

// FuzzDecode: decoding untrusted bodies never panics and what decodes
// validates consistently.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"node":{"uuid":"x"},"config":{"heartbeat_timeout":300,"agent_token":"abc"}}`))
	f.Add([]byte(`{"name":"deploy.execute_deploy_step","params":{"step":{"interface":"deploy"}}}`))
	f.Add([]byte(`{"callback_url":"http://1.2.3.4:9999","agent_token":"t","agent_version":"1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var lr LookupResponse
		if json.Unmarshal(b, &lr) == nil {
			_ = lr.Validate()
		}
		var cr CommandRequest
		if json.Unmarshal(b, &cr) == nil {
			_, _, _ = cr.Split()
		}
		var hb HeartbeatRequest
		if json.Unmarshal(b, &hb) == nil {
			_ = hb.Validate()
		}
		var ii ImageInfo
		if json.Unmarshal(b, &ii) == nil {
			_ = ii.Validate(false)
		}
		_ = FaultString(b)
	})
}
