package agent

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/apiclient"
)

func testLookupConfig(t *testing.T, urls ...string) LookupConfig {
	return LookupConfig{URLs: urls, Timeout: 10 * time.Second, Interval: time.Millisecond, MaxInterval: 20 * time.Millisecond,
		ConflictPauses: []time.Duration{30 * time.Millisecond, 60 * time.Millisecond},
		Log:            slog.New(slog.NewTextHandler(t.Output(), nil))}
}

var macs = apiclient.LookupQuery{Addresses: []string{"52:54:00:12:34:56", "52:54:00:12:34:57"}}

func TestLookupRetriesUntilTheNodeIsThere(t *testing.T) {
	f := newFakeIronic(t)
	f.set(func(f *fakeIronic) { f.notFound, f.errors500, f.garbage = 3, 2, 1 })
	res, err := Lookup(t.Context(), testLookupConfig(t, f.srv.URL), macs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Response.Node.UUID != nodeUUID || *res.Response.Config.AgentToken != testToken || res.HeartbeatVersion != "1.68" || res.URL != f.srv.URL {
		t.Errorf("result %+v", res)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.discovery != 1 || len(f.lookups) != 7 {
		t.Errorf("%d discoveries, %d lookups; want 1 and 7", f.discovery, len(f.lookups))
	}
	r := f.lookups[0]
	if r.Header.Get(api.VersionHeader) != "1.62" || r.URL.Query().Get("addresses") != "52:54:00:12:34:56,52:54:00:12:34:57" {
		t.Errorf("lookup request %s %v", r.URL, r.Header)
	}
}

func TestLookupRetriesASlowServer(t *testing.T) {
	f := newFakeIronic(t)
	f.set(func(f *fakeIronic) { f.slow = 2 })
	cfg := testLookupConfig(t, f.srv.URL)
	cfg.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond} // ipa-http-request-timeout
	res, err := Lookup(t.Context(), cfg, macs)
	if err != nil || res.Response.Node.UUID != nodeUUID {
		t.Fatalf("got %+v, %v", res, err)
	}
	if n := f.lookupCount(); n != 3 {
		t.Errorf("%d lookups, want 2 timed out and 1 answered", n)
	}
}

func TestLookupConflictPauses(t *testing.T) {
	f := newFakeIronic(t)
	f.set(func(f *fakeIronic) { f.conflicts = 3 })
	start := time.Now()
	if _, err := Lookup(t.Context(), testLookupConfig(t, f.srv.URL), macs); err != nil {
		t.Fatal(err)
	}
	// 30 + 60 + 60 ms of extra pauses on top of the backoff.
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("three 409s took only %v", d)
	}
}

func TestLookupCapsRetryAfter(t *testing.T) {
	f := newFakeIronic(t)
	f.set(func(f *fakeIronic) { f.unavailable, f.retryAfter = 2, "3600" })
	start := time.Now()
	if _, err := Lookup(t.Context(), testLookupConfig(t, f.srv.URL), macs); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Retry-After: 3600 was not capped: %v", d)
	}
}

func TestLookupTimesOut(t *testing.T) {
	f := newFakeIronic(t)
	f.set(func(f *fakeIronic) { f.notFound = 1 << 30 })
	cfg := testLookupConfig(t, f.srv.URL)
	cfg.Timeout = 200 * time.Millisecond
	start := time.Now()
	_, err := Lookup(t.Context(), cfg, macs)
	if !errors.Is(err, ErrLookupTimeout) {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("gave up after %v", d)
	}
	if f.lookupCount() < 3 {
		t.Errorf("only %d lookups", f.lookupCount())
	}
}

func TestLookupFailsOverToTheNextURL(t *testing.T) {
	f := newFakeIronic(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	res, err := Lookup(t.Context(), testLookupConfig(t, dead, f.srv.URL), macs)
	if err != nil {
		t.Fatal(err)
	}
	if res.URL != f.srv.URL {
		t.Errorf("heartbeats would go to %s", res.URL)
	}
}

func TestLookupAgainstAnOldServer(t *testing.T) {
	f := newFakeIronic(t)
	f.set(func(f *fakeIronic) { f.maxVersion = "1.46" })
	res, err := Lookup(t.Context(), testLookupConfig(t, f.srv.URL), macs)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	v := f.lookups[0].Header.Get(api.VersionHeader)
	f.mu.Unlock()
	if v != "1.46" || res.HeartbeatVersion != "1.46" {
		t.Errorf("lookup at %s, heartbeat at %s", v, res.HeartbeatVersion)
	}
	t.Run("an explicit version skips discovery", func(t *testing.T) {
		f := newFakeIronic(t)
		cfg := testLookupConfig(t, f.srv.URL)
		cfg.Version = "1.70"
		res, err := Lookup(t.Context(), cfg, macs)
		if err != nil || f.discovery != 0 || f.lookups[0].Header.Get(api.VersionHeader) != "1.70" || res.HeartbeatVersion != "1.70" {
			t.Errorf("err %v discovery %d", err, f.discovery)
		}
	})
}

func TestLookupWithoutURLs(t *testing.T) {
	if _, err := Lookup(t.Context(), LookupConfig{}, macs); err == nil {
		t.Error("no error")
	}
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n          int
		retryAfter time.Duration
		u          float64
		want       time.Duration
	}{
		{"first retry at least the interval", 0, 0, 0, time.Second},
		{"grows exponentially", 3, 0, 1, 8 * time.Second},
		{"jitter within the window", 3, 0, 0.5, 4500 * time.Millisecond},
		{"capped at the maximum", 20, 0, 1, 60 * time.Second},
		{"huge attempt numbers do not overflow", 200, 0, 1, 60 * time.Second},
		{"Retry-After lengthens the wait", 0, 10 * time.Second, 0, 10 * time.Second},
		{"Retry-After is capped", 0, time.Hour, 0, 60 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Backoff(time.Second, 60*time.Second, tc.n, tc.retryAfter, tc.u); got != tc.want {
				t.Errorf("Backoff = %v, want %v", got, tc.want)
			}
		})
	}
}

var _ http.Handler = (*fakeIronic)(nil)
