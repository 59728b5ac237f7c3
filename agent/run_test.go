package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/agent/extension"
	"github.com/ingot-dev/ingot/shared/api"
)

type staticNICs []api.Interface

func (s staticNICs) Interfaces(context.Context) ([]api.Interface, error) { return s, nil }

func testConfig(f *fakeIronic) Config {
	return Config{APIURLs: []string{f.srv.URL}, BootIF: "52:54:00:12:34:56", LookupInterval: time.Millisecond,
		ListenHost: "127.0.0.1", ListenPort: 0, MinForcedHeartbeat: 10 * time.Millisecond, RetryPause: 50 * time.Millisecond,
		NICWait: time.Millisecond}
}

// syncBuffer is a log sink tests can read while the agent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAgent runs the agent until the test ends; the returned channel
// yields Run's result. Its debug log goes to the test output and, at the
// end, is checked for the agent token: secrets never reach logs.
func startAgent(t *testing.T, cfg Config, disk string) (<-chan error, context.CancelCauseFunc) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(t.Context())
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if strings.Contains(logs.String(), testToken) {
			t.Error("the agent token appears in the agent's log")
		}
	})
	deps := Deps{NICs: staticNICs{{Name: "eth0", MACAddress: "52:54:00:12:34:57"}}, Log: log,
		Extension: extension.Options{Disk: disk, Power: ProcessPower{Stop: cancel}, EFIVars: t.TempDir()}}
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() { done <- Run(ctx, cfg, deps); close(finished) }()
	t.Cleanup(func() {
		cancel(errors.New("test over"))
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return done, cancel
}

// command posts a command to the agent as a conductor does.
func command(t *testing.T, hc *http.Client, callback, token, name string, params any, wait bool) (int, api.CommandResult, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "params": params})
	w := "false"
	if wait {
		w = "true"
	}
	res, err := hc.Post(callback+"/v1/commands/?wait="+w+"&agent_token="+token, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var c api.CommandResult
	json.Unmarshal(b, &c)
	return res.StatusCode, c, string(b)
}

func TestRunLookupHeartbeatCommands(t *testing.T) {
	f := newFakeIronic(t)
	f.set(func(f *fakeIronic) { f.notFound = 2 })
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, bytes.Repeat([]byte{0xff}, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	done, _ := startAgent(t, testConfig(f), disk)

	hb := f.nextHeartbeat(t, 10*time.Second)
	if hb.path != "/v1/heartbeat/"+nodeUUID || hb.version != "1.68" || hb.body.AgentToken != testToken ||
		hb.body.AgentVersion == "" || hb.body.AgentVerifyCA != "" || !strings.HasPrefix(hb.body.CallbackURL, "http://127.0.0.1:") {
		t.Fatalf("heartbeat %+v", hb)
	}
	f.mu.Lock()
	q := f.lookups[len(f.lookups)-1].URL.Query().Get("addresses")
	f.mu.Unlock()
	if q != "52:54:00:12:34:56,52:54:00:12:34:57" {
		t.Errorf("lookup addresses %q", q)
	}
	cb := hb.body.CallbackURL
	hc := &http.Client{Timeout: 10 * time.Second}

	t.Run("a wrong token gets 401 and runs nothing", func(t *testing.T) {
		status, _, body := command(t, hc, cb, "wrong", "clean.execute_clean_step",
			map[string]any{"step": map[string]any{"step": "erase_devices_metadata"}}, true)
		if status != 401 || !strings.Contains(body, "Token invalid") {
			t.Errorf("%d %s", status, body)
		}
		if b, _ := os.ReadFile(disk); b[0] != 0xff {
			t.Error("the disk was touched")
		}
	})
	t.Run("a finished asynchronous command forces a heartbeat", func(t *testing.T) {
		status, c, body := command(t, hc, cb, testToken, "clean.execute_clean_step",
			map[string]any{"step": map[string]any{"interface": "deploy", "step": "erase_devices_metadata"}, "node": map[string]any{}}, false)
		if status != 200 || c.CommandStatus != api.StatusRunning && c.CommandStatus != api.StatusSucceeded {
			t.Fatalf("%d %s", status, body)
		}
		// heartbeat_timeout is 300 s: only a forced heartbeat comes this soon.
		hb := f.nextHeartbeat(t, 10*time.Second)
		if hb.at.Sub(time.Now()) > time.Second {
			t.Errorf("heartbeat %+v", hb)
		}
		if b, _ := os.ReadFile(disk); !bytes.Equal(b[:4096], make([]byte, 4096)) {
			t.Error("the disk metadata was not wiped")
		}
		res, err := hc.Get(cb + "/v1/commands/")
		if err != nil {
			t.Fatal(err)
		}
		var l api.CommandList
		json.NewDecoder(res.Body).Decode(&l)
		res.Body.Close()
		if len(l.Commands) != 1 || l.Commands[0].CommandStatus != api.StatusSucceeded {
			t.Errorf("history %+v", l)
		}
	})
	t.Run("power off ends the agent through the power seam", func(t *testing.T) {
		status, _, body := command(t, hc, cb, testToken, "standby.power_off", map[string]any{}, false)
		if status != 200 {
			t.Fatalf("%d %s", status, body)
		}
		select {
		case err := <-done:
			if !errors.Is(err, ErrPoweredOff) {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the agent did not stop")
		}
	})
}

func TestRunWithAutoTLS(t *testing.T) {
	f := newFakeIronic(t)
	cfg := testConfig(f)
	cfg.TLS = "auto"
	startAgent(t, cfg, "")
	hb := f.nextHeartbeat(t, 10*time.Second)
	if !strings.HasPrefix(hb.body.CallbackURL, "https://127.0.0.1:") || !strings.Contains(hb.body.AgentVerifyCA, "BEGIN CERTIFICATE") {
		t.Fatalf("heartbeat %+v", hb.body)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(hb.body.AgentVerifyCA)) {
		t.Fatal("agent_verify_ca is not a PEM certificate")
	}
	// The conductor verifies the agent with agent_verify_ca alone.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	res, err := hc.Get(hb.body.CallbackURL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil {
		t.Errorf("status %d", res.StatusCode)
	}
	cert := res.TLS.PeerCertificates[0]
	if cert.PublicKeyAlgorithm != x509.ECDSA || cert.NotBefore.After(time.Now().Add(-50*time.Minute)) {
		t.Errorf("certificate %v from %v", cert.PublicKeyAlgorithm, cert.NotBefore)
	}
	if _, err := http.Get(hb.body.CallbackURL + "/v1/status"); err == nil {
		t.Error("an unverified client was accepted")
	}
}

func TestRunMaskedToken(t *testing.T) {
	t.Run("without a pre-generated token the agent waits and looks up again", func(t *testing.T) {
		f := newFakeIronic(t)
		f.set(func(f *fakeIronic) { f.masked = true })
		startAgent(t, testConfig(f), "")
		deadline := time.Now().Add(10 * time.Second)
		for f.lookupCount() < 2 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		f.mu.Lock()
		beats := len(f.heartbeats)
		f.mu.Unlock()
		if f.lookupCount() < 2 || beats != 0 {
			t.Fatalf("%d lookups, %d heartbeats", f.lookupCount(), beats)
		}
		// The conductor wipes the token (power cycle): the next lookup mints one.
		f.set(func(f *fakeIronic) { f.masked = false })
		if hb := f.nextHeartbeat(t, 10*time.Second); hb.body.AgentToken != testToken {
			t.Errorf("heartbeat %+v", hb.body)
		}
	})
	t.Run("a pre-generated token is used", func(t *testing.T) {
		f := newFakeIronic(t)
		f.set(func(f *fakeIronic) { f.masked = true })
		cfg := testConfig(f)
		cfg.AgentToken = testToken
		startAgent(t, cfg, "")
		if hb := f.nextHeartbeat(t, 10*time.Second); hb.body.AgentToken != testToken {
			t.Errorf("heartbeat %+v", hb.body)
		}
	})
}

func TestRunNeverReturnsOnRecoverableErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(f *fakeIronic) Config
	}{
		{"no API URL", func(*fakeIronic) Config { c := testConfig(newFakeIronic(t)); c.APIURLs = nil; return c }},
		{"lookup times out", func(f *fakeIronic) Config {
			f.set(func(f *fakeIronic) { f.notFound = 1 << 30 })
			c := testConfig(f)
			c.LookupTimeout = 20 * time.Millisecond
			return c
		}},
		{"the port is taken", func(f *fakeIronic) Config {
			c := testConfig(f)
			c.ListenPort = portOf(t, f.srv.URL)
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIronic(t)
			done, cancel := startAgent(t, tc.cfg(f), "")
			select {
			case err := <-done:
				t.Fatalf("Run returned %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			stop := errors.New("shutdown")
			cancel(stop)
			if err := <-done; !errors.Is(err, stop) {
				t.Errorf("Run = %v", err)
			}
		})
	}
}

// flakyNetwork fails its first bring-up.
type flakyNetwork struct {
	mu    sync.Mutex
	calls []string
}

func (n *flakyNetwork) Up(ctx context.Context, bootIF, iface string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, bootIF+"/"+iface)
	if len(n.calls) == 1 {
		return errors.New("no DHCP offer")
	}
	return nil
}

func TestRunBringsTheNetworkUpFirst(t *testing.T) {
	f := newFakeIronic(t)
	cfg := testConfig(f)
	cfg.Interface = "eno1"
	net := &flakyNetwork{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go Run(ctx, cfg, Deps{Network: net, Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	f.nextHeartbeat(t, 10*time.Second)
	net.mu.Lock()
	defer net.mu.Unlock()
	if len(net.calls) != 2 || net.calls[1] != "52:54:00:12:34:56/eno1" {
		t.Errorf("bring-up calls %v", net.calls)
	}
	if n := f.lookupCount(); n != 1 {
		t.Errorf("%d lookups: the failed bring-up was not retried before looking up", n)
	}
}

func portOf(t *testing.T, u string) int {
	t.Helper()
	i := strings.LastIndexByte(u, ':')
	var p int
	for _, c := range u[i+1:] {
		p = p*10 + int(c-'0')
	}
	return p
}

func TestHeartbeatErrorsAreRetriedFast(t *testing.T) {
	f := newFakeIronic(t)
	f.set(func(f *fakeIronic) { f.hbStatus = 409 })
	startAgent(t, testConfig(f), "")
	first := f.nextHeartbeat(t, 10*time.Second)
	f.set(func(f *fakeIronic) { f.hbStatus = 0 })
	second := f.nextHeartbeat(t, 15*time.Second)
	if d := second.at.Sub(first.at); d < 5*time.Second || d > 11*time.Second {
		t.Errorf("retry after %v, want 5-10 s", d)
	}
}

func TestRunLeavesNoGoroutines(t *testing.T) {
	f := newFakeIronic(t)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	cfg := testConfig(f)
	cfg.TLS = "auto"
	go func() { done <- Run(ctx, cfg, Deps{Log: slog.New(slog.DiscardHandler)}) }()
	f.nextHeartbeat(t, 10*time.Second)
	cancel()
	<-done
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines left after Run returned:\n%s", n-before, buf[:runtime.Stack(buf, true)])
	}
}
