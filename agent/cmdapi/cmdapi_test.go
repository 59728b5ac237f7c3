package cmdapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
)

const token = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

// rig is a server with a test registry: a sync echo command, an async
// command that blocks until released, failing and panicking commands.
type rig struct {
	srv     *Server
	ts      *httptest.Server
	release chan struct{}
	started chan struct{}
	runs    atomic.Int32
	done    atomic.Int32
}

func newRig(t *testing.T, opts Options) *rig {
	t.Helper()
	r := &rig{release: make(chan struct{}), started: make(chan struct{}, 10)}
	reg := Registry{
		"standby": {
			"sync": {Run: func(ctx context.Context, p Params, _ func(api.Progress)) (any, error) {
				r.runs.Add(1)
				return nil, nil
			}},
			"get_partition_uuids": {Run: func(ctx context.Context, p Params, _ func(api.Progress)) (any, error) {
				r.runs.Add(1)
				return map[string]string{"root uuid": "0x2b1ac57f"}, nil
			}},
			"power_off": {Async: true, Run: func(ctx context.Context, p Params, _ func(api.Progress)) (any, error) {
				r.runs.Add(1)
				return "powering off", nil
			}},
		},
		"deploy": {
			"execute_deploy_step": {Async: true,
				Validate: func(p Params) error {
					if _, ok := p["step"]; !ok {
						return errors.New("step is required")
					}
					return nil
				},
				Run: func(ctx context.Context, p Params, progress func(api.Progress)) (any, error) {
					r.runs.Add(1)
					progress(api.Progress{Phase: "write", Bytes: 512, Total: 1024, Percent: 50})
					r.started <- struct{}{}
					select {
					case <-r.release:
					case <-ctx.Done():
						return nil, ctx.Err()
					}
					var step map[string]any
					_ = json.Unmarshal(p["step"], &step)
					return map[string]any{"deploy_result": nil, "deploy_step": step}, nil
				}},
			"fail": {Run: func(context.Context, Params, func(api.Progress)) (any, error) {
				return nil, &Error{Type: "ImageChecksumError", Message: "Error verifying image checksum", Details: "expected aa, got bb"}
			}},
			"mismatch": {Async: true, Run: func(context.Context, Params, func(api.Progress)) (any, error) {
				return nil, errors.Join(ErrVersionMismatch, errors.New("want 1.2 got 1.1"))
			}},
			"panic": {Run: func(context.Context, Params, func(api.Progress)) (any, error) { panic("boom") }},
			"plain": {Run: func(context.Context, Params, func(api.Progress)) (any, error) { return nil, errors.New("disk on fire") }},
		},
		"log": {"collect_system_logs": {Sensitive: true, Run: func(context.Context, Params, func(api.Progress)) (any, error) {
			return map[string]string{"system_logs": "H4sIAAAA"}, nil
		}}},
	}
	if opts.Token == nil {
		opts.Token = func() string { return token }
	}
	opts.OnAsyncDone = func() { r.done.Add(1) }
	opts.Log = slog.New(slog.NewTextHandler(t.Output(), nil))
	r.srv = New(reg, opts)
	r.ts = httptest.NewServer(r.srv)
	t.Cleanup(func() {
		r.ts.Close()
		select {
		case <-r.release:
		default:
			close(r.release)
		}
		r.srv.Close()
	})
	return r
}

type resp struct {
	status int
	body   []byte
}

func (r resp) fault(t *testing.T) string {
	t.Helper()
	var f api.Fault
	if err := json.Unmarshal(r.body, &f); err != nil || f.Faultcode == "" {
		t.Fatalf("status %d body %s is not a fault: %v", r.status, r.body, err)
	}
	return f.Faultstring
}

func (r resp) result(t *testing.T) api.CommandResult {
	t.Helper()
	var c api.CommandResult
	if err := json.Unmarshal(r.body, &c); err != nil {
		t.Fatalf("status %d body %s: %v", r.status, r.body, err)
	}
	return c
}

func (r resp) list(t *testing.T) []api.CommandResult {
	t.Helper()
	var l api.CommandList
	if err := json.Unmarshal(r.body, &l); err != nil || l.Commands == nil {
		t.Fatalf("status %d body %s: %v", r.status, r.body, err)
	}
	return l.Commands
}

func (rg *rig) do(t *testing.T, method, path, body string) resp {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, rg.ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := rg.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, b}
}

const cmdPath = "/v1/commands/?agent_token=" + token

func TestSyncCommand(t *testing.T) {
	rg := newRig(t, Options{})
	r := rg.do(t, "POST", cmdPath+"&wait=true", `{"name": "standby.get_partition_uuids", "params": {}}`)
	c := r.result(t)
	if r.status != 200 || c.CommandName != "get_partition_uuids" || c.CommandStatus != api.StatusSucceeded ||
		c.CommandError != nil || string(c.CommandResult) != `{"root uuid":"0x2b1ac57f"}` || c.ID == "" {
		t.Errorf("status %d result %+v", r.status, c)
	}
	r = rg.do(t, "POST", cmdPath, `{"name": "standby.sync", "params": {}}`)
	if c := r.result(t); c.CommandStatus != api.StatusSucceeded || string(c.CommandResult) != "null" {
		t.Errorf("sync: %s", r.body)
	}
	if rg.done.Load() != 0 {
		t.Error("OnAsyncDone called for a sync command")
	}
}

func TestAsyncCommandLifecycle(t *testing.T) {
	rg := newRig(t, Options{})
	step := `{"interface": "deploy", "step": "write_image", "args": {"image_info": {"id": "x"}}}`
	r := rg.do(t, "POST", cmdPath+"&wait=false", `{"name": "deploy.execute_deploy_step", "params": {"step": `+step+`}}`)
	c := r.result(t)
	if r.status != 200 || c.CommandStatus != api.StatusRunning || c.CommandName != "execute_deploy_step" {
		t.Fatalf("status %d result %s", r.status, r.body)
	}
	<-rg.started

	t.Run("a running command shows its progress", func(t *testing.T) {
		l := rg.do(t, "GET", "/v1/commands/", "").list(t)
		if len(l) != 1 || l[0].CommandStatus != api.StatusRunning || l[0].Progress == nil || l[0].Progress.Bytes != 512 {
			t.Errorf("list %+v", l)
		}
	})
	t.Run("a command while one runs is refused with 409 and does not run", func(t *testing.T) {
		before := rg.runs.Load()
		r := rg.do(t, "POST", cmdPath+"&wait=true", `{"name": "standby.sync", "params": {}}`)
		if f := r.fault(t); r.status != 409 || f != "Agent is busy: executing command execute_deploy_step" {
			t.Errorf("status %d fault %q", r.status, f)
		}
		if rg.runs.Load() != before {
			t.Error("the refused command ran")
		}
	})

	waited := make(chan resp, 1)
	go func() { waited <- rg.do(t, "GET", "/v1/commands/"+c.ID+"?wait=true", "") }()
	close(rg.release)
	w := <-waited
	final := w.result(t)
	if final.CommandStatus != api.StatusSucceeded ||
		!strings.Contains(string(final.CommandResult), `"deploy_step":{"args":{"image_info":{"id":"x"}},"interface":"deploy","step":"write_image"}`) {
		t.Errorf("final %s", w.body)
	}
	if rg.done.Load() != 1 {
		t.Errorf("OnAsyncDone called %d times", rg.done.Load())
	}

	t.Run("history is oldest first with short names", func(t *testing.T) {
		rg.do(t, "POST", cmdPath+"&wait=true", `{"name": "standby.get_partition_uuids", "params": {}}`)
		r := rg.do(t, "POST", cmdPath+"&wait=true", `{"name": "standby.power_off", "params": {}}`)
		if c := r.result(t); c.CommandStatus != api.StatusSucceeded || string(c.CommandResult) != `{"result":"power_off: powering off"}` {
			t.Errorf("async string result %s", r.body)
		}
		var names []string
		for _, c := range rg.do(t, "GET", "/commands", "").list(t) {
			names = append(names, c.CommandName)
		}
		if got := strings.Join(names, ","); got != "execute_deploy_step,get_partition_uuids,power_off" {
			t.Errorf("history %s", got)
		}
	})
}

func TestTokens(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		opts       Options
		method     string
		want       int
	}{
		{name: "POST without a token", method: "POST", path: "/v1/commands/?wait=true", want: 401},
		{name: "POST with a wrong token", method: "POST", path: "/v1/commands/?wait=true&agent_token=nope", want: 401},
		{name: "POST with the token twice", method: "POST", path: cmdPath + "&agent_token=" + token, want: 401},
		{name: "POST before the agent has a token", method: "POST", path: cmdPath,
			opts: Options{Token: func() string { return "" }}, want: 401},
		{name: "GET with a wrong token", method: "GET", path: "/v1/commands/?agent_token=nope", want: 401},
		{name: "GET without a token when required", method: "GET", path: "/v1/commands/", opts: Options{RequireTokenOnGet: true}, want: 401},
		{name: "GET without a token (Ironic 21.4 sends none)", method: "GET", path: "/v1/commands/", want: 200},
		{name: "POST with the token", method: "POST", path: cmdPath, want: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRig(t, tc.opts)
			body := `{"name": "standby.sync", "params": {}}`
			r := rg.do(t, tc.method, tc.path, body)
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			if tc.want == 401 {
				if f := r.fault(t); f != "401 Unauthorized: Token invalid." {
					t.Errorf("fault %q", f)
				}
				list := "/v1/commands"
				if tc.opts.RequireTokenOnGet {
					list += "?agent_token=" + token
				}
				if rg.runs.Load() != 0 || len(rg.do(t, "GET", list, "").list(t)) != 0 {
					t.Error("something ran or was recorded")
				}
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		want             int
		wantFault        string
	}{
		{"malformed JSON", cmdPath, `{"name": "standby.sync", `, 400, "Invalid request body"},
		{"not an object", cmdPath, `[1]`, 400, "Invalid request body"},
		{"params not an object", cmdPath, `{"name": "standby.sync", "params": [1]}`, 400, "Invalid request body"},
		{"trailing data", cmdPath, `{"name": "standby.sync"} {}`, 400, "trailing data"},
		{"name without extension", cmdPath, `{"name": "sync"}`, 400, "invalid command name"},
		{"unknown extension", cmdPath, `{"name": "iscsi.start_iscsi_target"}`, 404, "Extension with id iscsi not found"},
		{"unknown command", cmdPath, `{"name": "standby.cache_everything"}`, 400, "Unknown command: standby.cache_everything"},
		{"invalid parameters", cmdPath, `{"name": "deploy.execute_deploy_step", "params": {}}`, 400, "Invalid command parameters: step is required"},
		{"bad wait", cmdPath + "&wait=maybe", `{"name": "standby.sync"}`, 400, "wait"},
		{"body too large", cmdPath, `{"name": "standby.sync", "params": {"x": "` + strings.Repeat("a", maxBody) + `"}}`, 400, "larger than"},
		{"unknown route", "/v2/things", ``, 404, "Not Found"},
		{"unknown command id", "/v1/commands/nope", ``, 404, "Command with id nope not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRig(t, Options{})
			method := "POST"
			if tc.body == "" {
				method = "GET"
			}
			r := rg.do(t, method, tc.path, tc.body)
			if f := r.fault(t); r.status != tc.want || !strings.Contains(f, tc.wantFault) {
				t.Errorf("status %d fault %q, want %d %q", r.status, f, tc.want, tc.wantFault)
			}
			if rg.runs.Load() != 0 || len(rg.do(t, "GET", "/v1/commands", "").list(t)) != 0 {
				t.Error("a refused command ran or was recorded")
			}
		})
	}
	t.Run("method not allowed", func(t *testing.T) {
		r := newRig(t, Options{}).do(t, "DELETE", "/v1/commands/", "")
		if f := r.fault(t); r.status != 405 || f == "" {
			t.Errorf("status %d fault %q", r.status, f)
		}
	})
}

func TestFailures(t *testing.T) {
	rg := newRig(t, Options{})
	for _, tc := range []struct {
		name, cmd                string
		wantStatus, wantType     string
		wantDetails, wantMessage string
	}{
		{"typed error", "deploy.fail", api.StatusFailed, "ImageChecksumError", "expected aa, got bb", "Error verifying image checksum"},
		{"plain error", "deploy.plain", api.StatusFailed, "CommandExecutionError", "disk on fire", "Command execution failed"},
		{"panic", "deploy.panic", api.StatusFailed, "CommandExecutionError", "command panicked: boom", "Command execution failed"},
		{"version mismatch", "deploy.mismatch", api.StatusCleanVersionMismach, "CommandExecutionError", "want 1.2 got 1.1", "Command execution failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rg.do(t, "POST", cmdPath+"&wait=true", `{"name": "`+tc.cmd+`", "params": {}}`)
			c := r.result(t)
			if r.status != 200 || c.CommandStatus != tc.wantStatus || c.CommandError == nil || c.CommandError.Type != tc.wantType ||
				!strings.Contains(c.CommandError.Details, tc.wantDetails) || c.CommandError.Message != tc.wantMessage || c.CommandError.Code != 500 {
				t.Errorf("status %d: %s", r.status, r.body)
			}
		})
	}
}

func TestSensitiveResultsNeedTheToken(t *testing.T) {
	rg := newRig(t, Options{})
	r := rg.do(t, "POST", cmdPath+"&wait=true", `{"name": "log.collect_system_logs", "params": {}}`)
	c := r.result(t)
	if string(c.CommandResult) != `{"system_logs":"H4sIAAAA"}` {
		t.Fatalf("POST answer %s", r.body)
	}
	if l := rg.do(t, "GET", "/v1/commands/", "").list(t); string(l[0].CommandResult) != "null" {
		t.Errorf("logs shown without a token: %s", l[0].CommandResult)
	}
	if g := rg.do(t, "GET", "/v1/commands/"+c.ID, "").result(t); string(g.CommandResult) != "null" {
		t.Errorf("logs shown without a token: %s", g.CommandResult)
	}
	if l := rg.do(t, "GET", "/v1/commands?agent_token="+token, "").list(t); string(l[0].CommandResult) != `{"system_logs":"H4sIAAAA"}` {
		t.Errorf("logs hidden from the token holder: %s", l[0].CommandResult)
	}
}

func TestStatusAndDiscovery(t *testing.T) {
	started := time.Date(2026, 11, 24, 12, 0, 0, 500_000_000, time.UTC)
	rg := newRig(t, Options{Version: "1.2.3", StartedAt: started})
	for _, p := range []string{"/v1/status", "/v1/status/", "/status"} {
		r := rg.do(t, "GET", p, "")
		var st api.AgentStatus
		if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 || st.Version != "1.2.3" || st.StartedAt != 1795521600.5 {
			t.Errorf("%s: %d %s", p, r.status, r.body)
		}
	}
	for _, p := range []string{"/", "/v1", "/v1/"} {
		if r := rg.do(t, "GET", p, ""); r.status != 200 || !strings.Contains(string(r.body), `"links"`) {
			t.Errorf("%s: %d %s", p, r.status, r.body)
		}
	}
}

func TestCloseCancelsRunningCommands(t *testing.T) {
	rg := newRig(t, Options{})
	step := `{"name": "deploy.execute_deploy_step", "params": {"step": {"step": "write_image"}}}`
	c := rg.do(t, "POST", cmdPath, step).result(t)
	<-rg.started
	rg.srv.Close()
	g := rg.do(t, "GET", "/v1/commands/"+c.ID, "").result(t)
	if g.CommandStatus != api.StatusFailed || !strings.Contains(g.CommandError.Details, "context canceled") {
		t.Errorf("after Close: %+v", g)
	}
	if r := rg.do(t, "POST", cmdPath, `{"name": "standby.sync"}`); r.status != 503 {
		t.Errorf("POST after Close: %d %s", r.status, r.body)
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, b := newID(), newID()
	if !re.MatchString(a) || a == b {
		t.Errorf("ids %s %s", a, b)
	}
}

func TestServe(t *testing.T) {
	before := runtime.NumGoroutine()
	srv := New(Registry{"standby": {"sync": {Run: func(context.Context, Params, func(api.Progress)) (any, error) { return nil, nil }}}},
		Options{Token: func() string { return token }})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	var serveErr error
	go func() { defer wg.Done(); serveErr = srv.Serve(ctx, ln, nil) }()
	res, err := http.Post("http://"+ln.Addr().String()+cmdPath, "application/json", strings.NewReader(`{"name": "standby.sync"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("status %d", res.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	wg.Wait()
	if serveErr != nil {
		t.Errorf("Serve: %v", serveErr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines leaked", n-before)
	}
}

// FuzzCommandRequest: command bodies come from the network; whatever they
// hold, the server answers with a fault or a result, never panics and
// never fails with a server error.
func FuzzCommandRequest(f *testing.F) {
	for _, s := range []string{`{"name": "standby.sync", "params": {}}`, `{"name": "deploy.execute_deploy_step", "params": {"step": {"step": "x"}}}`,
		`{"name": "a.b.c"}`, `{"name": 1}`, `{"params": null}`, `[]`, `{"name": "log.collect_system_logs"}`, `{"name": "deploy.panic"}`} {
		f.Add(s, "true")
	}
	srv := New(Registry{
		"standby": {"sync": {Run: func(context.Context, Params, func(api.Progress)) (any, error) { return nil, nil }}},
		"deploy": {
			"execute_deploy_step": {Async: true, Validate: func(p Params) error {
				var step map[string]any
				return json.Unmarshal(p["step"], &step)
			}, Run: func(context.Context, Params, func(api.Progress)) (any, error) { return "ok", nil }},
			"panic": {Run: func(context.Context, Params, func(api.Progress)) (any, error) { panic("boom") }},
		},
	}, Options{Token: func() string { return token }})
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, body, wait string) {
		req := httptest.NewRequest("POST", "/v1/commands/?wait=true&agent_token="+token, strings.NewReader(body))
		req.URL.RawQuery = "agent_token=" + token + "&wait=" + url.QueryEscape(wait)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("answer is not JSON: %q", rec.Body)
		}
		if rec.Code >= 400 && out["faultstring"] == nil {
			t.Fatalf("error without faultstring: %s", rec.Body)
		}
	})
}
