package apiclient

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/shared/api"
)

// fakeIronic records requests and answers with a scripted status and body.
type fakeIronic struct {
	t      *testing.T
	status int
	body   string
	header http.Header
	got    []*http.Request
	bodies []string
}

func (f *fakeIronic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.got = append(f.got, r)
	f.bodies = append(f.bodies, string(b))
	for k, v := range f.header {
		w.Header()[k] = v
	}
	w.WriteHeader(f.status)
	io.WriteString(w, f.body)
}

func newClient(t *testing.T, f *fakeIronic) *Client {
	f.t = t
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return New(srv.URL+"/", srv.Client(), Options{UserAgent: "ingot-test/1", GlobalRequestID: "req-x"})
}

const lookupBody = `{"node": {"uuid": "858d1aa4-ca64-48d6-a14f-5af77aa6de16", "properties": {"root_device": {"serial": "s== X"}},
 "instance_info": {"image_url": "******"}, "driver_internal_info": {"is_whole_disk_image": true}, "links": []},
 "config": {"heartbeat_timeout": 300, "agent_token": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "agent_token_required": true,
 "agent_md5_checksum_enable": true, "permitted_image_formats": ["raw", "qcow2", "iso"], "metrics": {"backend": "noop"}}}`

func TestLookup(t *testing.T) {
	f := &fakeIronic{status: 200, body: lookupBody}
	c := newClient(t, f)
	got, err := c.Lookup(t.Context(), "1.62", LookupQuery{Addresses: []string{"52:54:00:12:34:58", "52:54:00:12:34:59"}, NodeUUID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	r := f.got[0]
	if r.URL.Path != "/v1/lookup" || r.Method != http.MethodGet {
		t.Errorf("request %s %s", r.Method, r.URL.Path)
	}
	if want := "addresses=52%3A54%3A00%3A12%3A34%3A58%2C52%3A54%3A00%3A12%3A34%3A59&node_uuid=u1"; r.URL.RawQuery != want {
		t.Errorf("query %q, want %q", r.URL.RawQuery, want)
	}
	for k, want := range map[string]string{api.VersionHeader: "1.62", "User-Agent": "ingot-test/1",
		"X-Openstack-Request-Id": "req-x", "Accept": "application/json"} {
		if v := r.Header.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	if got.Node.UUID != "858d1aa4-ca64-48d6-a14f-5af77aa6de16" || got.Config.HeartbeatTimeout != 300 ||
		got.Config.AgentToken == nil || len(*got.Config.AgentToken) != 43 || !got.Config.AgentMD5ChecksumEnable {
		t.Errorf("decoded %+v", got)
	}
}

func TestLookupErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		body       string
		header     http.Header
		wantCode   int
		wantFault  string
		wantDecode bool
		wantRetry  time.Duration
	}{
		{name: "node not enrolled yet", status: 404, wantCode: 404,
			body:      `{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Node could not be found.\", \"debuginfo\": null}"}`,
			wantFault: "Node could not be found."},
		{name: "node locked", status: 409, wantCode: 409, header: http.Header{"Retry-After": {"7"}}, wantRetry: 7 * time.Second,
			body:      `{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Node x is locked by host y\", \"debuginfo\": null}"}`,
			wantFault: "Node x is locked by host y"},
		{name: "server error with a text body", status: 500, body: "boom", wantCode: 500, wantFault: "boom"},
		{name: "malformed JSON", status: 200, body: `{"node": `, wantDecode: true},
		{name: "answer without node uuid", status: 200, body: `{"node": {}, "config": {}}`, wantDecode: true},
		{name: "negative heartbeat timeout", status: 200, body: `{"node": {"uuid": "u"}, "config": {"heartbeat_timeout": -1}}`, wantDecode: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeIronic{status: tc.status, body: tc.body, header: tc.header}
			_, err := newClient(t, f).Lookup(t.Context(), "1.62", LookupQuery{Addresses: []string{"52:54:00:00:00:01"}})
			if err == nil {
				t.Fatal("no error")
			}
			if tc.wantDecode != errors.Is(err, ErrDecode) {
				t.Errorf("errors.Is(ErrDecode) = %v for %v", !tc.wantDecode, err)
			}
			var se *StatusError
			if tc.wantCode != 0 {
				if !errors.As(err, &se) || se.Code != tc.wantCode || se.Fault != tc.wantFault || se.RetryAfter != tc.wantRetry {
					t.Errorf("err = %#v, want code %d fault %q retry %v", err, tc.wantCode, tc.wantFault, tc.wantRetry)
				}
				if StatusCode(err) != tc.wantCode {
					t.Errorf("StatusCode = %d", StatusCode(err))
				}
			}
		})
	}
	t.Run("nothing to look up", func(t *testing.T) {
		f := &fakeIronic{status: 200, body: lookupBody}
		if _, err := newClient(t, f).Lookup(t.Context(), "1.62", LookupQuery{}); err == nil || len(f.got) != 0 {
			t.Errorf("err %v, %d requests", err, len(f.got))
		}
	})
	t.Run("oversized answer", func(t *testing.T) {
		f := &fakeIronic{status: 200, body: `{"node": {"uuid": "` + strings.Repeat("x", 2<<20) + `"}}`}
		if _, err := newClient(t, f).Lookup(t.Context(), "1.62", LookupQuery{NodeUUID: "u"}); !errors.Is(err, ErrDecode) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		_, err := New(url, http.DefaultClient, Options{}).Lookup(t.Context(), "1.62", LookupQuery{NodeUUID: "u"})
		if err == nil || StatusCode(err) != 0 {
			t.Errorf("err = %v", err)
		}
	})
}

func TestLookupLegacyTopLevelHeartbeatTimeout(t *testing.T) {
	r, err := DecodeLookup([]byte(`{"node": {"uuid": "u"}, "heartbeat_timeout": 120}`))
	if err != nil || r.Config.HeartbeatTimeout != 120 {
		t.Fatalf("got %+v, %v", r, err)
	}
}

func TestHeartbeat(t *testing.T) {
	f := &fakeIronic{status: 202}
	c := newClient(t, f)
	req := api.HeartbeatRequest{CallbackURL: "https://192.0.2.5:9999", AgentToken: "tok", AgentVersion: "1.0",
		AgentVerifyCA: "-----BEGIN CERTIFICATE-----\n"}
	if err := c.Heartbeat(t.Context(), "1.68", "node 1", req); err != nil {
		t.Fatal(err)
	}
	r := f.got[0]
	if r.Method != http.MethodPost || r.URL.EscapedPath() != "/v1/heartbeat/node%201" || r.Header.Get(api.VersionHeader) != "1.68" ||
		r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("request %s %s %v", r.Method, r.URL.EscapedPath(), r.Header)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(f.bodies[0]), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"callback_url": "https://192.0.2.5:9999", "agent_token": "tok", "agent_version": "1.0",
		"agent_verify_ca": "-----BEGIN CERTIFICATE-----\n"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}

	t.Run("a wrong token is a 400 with Ironic's message and no token in the error", func(t *testing.T) {
		f := &fakeIronic{status: 400, body: `{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Invalid or missing agent token received.\", \"debuginfo\": null}"}`}
		err := newClient(t, f).Heartbeat(t.Context(), "1.68", "u", api.HeartbeatRequest{AgentToken: "secret-token-value", AgentVersion: "1"})
		if StatusCode(err) != 400 || !strings.Contains(err.Error(), "Invalid or missing agent token") || strings.Contains(err.Error(), "secret-token-value") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("no node", func(t *testing.T) {
		if err := c.Heartbeat(t.Context(), "1.68", "", req); err == nil {
			t.Error("no error")
		}
	})
}

func TestAPIVersion(t *testing.T) {
	f := &fakeIronic{status: 200, body: `{"default_version": {"version": "1.82", "min_version": "1.1", "id": "v1"}, "versions": []}`}
	v, err := newClient(t, f).APIVersion(t.Context())
	if err != nil || v != "1.82" || f.got[0].URL.Path != "/" || f.got[0].Header.Get(api.VersionHeader) != "" {
		t.Errorf("got %q, %v", v, err)
	}
	for _, body := range []string{`{}`, `{"default_version": {"version": "2.0"}}`, `[`} {
		if _, err := DecodeVersion([]byte(body)); !errors.Is(err, ErrDecode) {
			t.Errorf("DecodeVersion(%s) = %v", body, err)
		}
	}
}

func TestMinVersion(t *testing.T) {
	for _, tc := range []struct{ server, want, got string }{
		{"1.82", "1.62", "1.62"}, {"1.46", "1.62", "1.46"}, {"1.62", "1.68", "1.62"}, {"garbage", "1.68", "1.68"}, {"1.100", "1.68", "1.68"},
	} {
		if got := MinVersion(tc.server, tc.want); got != tc.got {
			t.Errorf("MinVersion(%s, %s) = %s, want %s", tc.server, tc.want, got, tc.got)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0}, {"5", 5 * time.Second}, {"-3", 0}, {"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"99999999999999", time.Duration(1<<31) * time.Second},
	} {
		if got := ParseRetryAfter(tc.v, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

// FuzzDecodeLookup: a lookup answer comes from the network; decoding never
// panics and what it accepts always carries a node UUID.
func FuzzDecodeLookup(f *testing.F) {
	f.Add([]byte(lookupBody))
	f.Add([]byte(`{"node": {"uuid": "u"}, "heartbeat_timeout": 120}`))
	f.Add([]byte(`{"node": {"uuid": "u"}, "config": {"agent_token": null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeLookup(b)
		if err == nil && (r.Node.UUID == "" || r.Config.HeartbeatTimeout < 0) {
			t.Fatalf("accepted %+v", r)
		}
		_, _ = DecodeVersion(b)
	})
}
