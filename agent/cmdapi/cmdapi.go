// Package cmdapi serves the agent's command API on port 9999 exactly as
// ironic-python-agent does, so a real Ironic conductor can drive Ingot's
// agent: GET /v1/status, POST /v1/commands/ (wait=true|false,
// agent_token=...), GET /v1/commands/ and GET /v1/commands/{id}
// (wait=true), with or without the /v1 prefix and trailing slashes.
//
// It owns the command history (every command since the process started,
// oldest first), the one-command-at-a-time rule (409 "Agent is busy"),
// the agent token check (401) and the result shapes (short command_name,
// IPA's error objects). What commands do is not its business: they come
// from a Registry of small Command values. Every error becomes an HTTP
// status in one function, faultFor.
package cmdapi

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v5"
	"github.com/labstack/echo/v5/middleware"

	"github.com/ingot-dev/ingot/shared/api"
)

// Params are a command's parameters, undecoded.
type Params map[string]json.RawMessage

// Command is one extension command.
type Command struct {
	// Async commands run in the background: POST answers RUNNING unless
	// wait=true, and the outcome shows in the history.
	Async bool
	// Validate, when set, checks the parameters before the command is
	// accepted; an error answers 400 "Invalid command parameters" and
	// nothing runs.
	Validate func(p Params) error
	// Run does the work. A string result becomes {"result": ...} as IPA
	// reports it; other values are serialised as they are. progress
	// publishes what a running command has done so far.
	Run func(ctx context.Context, p Params, progress func(api.Progress)) (any, error)
	// Sensitive results (logs) are shown in GET answers only to requests
	// carrying the agent token.
	Sensitive bool
}

// Registry maps extension name to command name to Command.
type Registry map[string]map[string]Command

// Error is a command failure with IPA's error fields: Type is the IPA
// exception class name Ironic shows (ImageChecksumError,
// DeviceNotFound, ...).
type Error struct {
	Type    string
	Code    int
	Message string
	Details string
	Err     error
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Message + ": " + e.Details
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// ErrVersionMismatch makes a command end in CLEAN_VERSION_MISMATCH (the
// conductor's hardware manager versions differ from the agent's).
var ErrVersionMismatch = errors.New("hardware manager version mismatch")

// Options configure the server.
type Options struct {
	// Token returns the agent token commands must carry; "" means the
	// agent has none yet, and every POST is refused.
	Token func() string
	// RequireTokenOnGet refuses GET requests without the token. Ironic 21.4
	// sends no token on GET, so it is off by default; a wrong token is
	// refused either way.
	RequireTokenOnGet bool
	// OnAsyncDone is called after every asynchronous command finishes; the
	// agent forces a heartbeat there, since conductors advance only on
	// heartbeats.
	OnAsyncDone func()
	// Version is the agent version reported by GET /v1/status.
	Version string
	// StartedAt is reported by GET /v1/status; now when zero.
	StartedAt time.Time
	// Log receives request and command logs (never parameters or tokens).
	Log *slog.Logger
}

// Server is the command API.
type Server struct {
	reg  Registry
	opts Options
	echo *echo.Echo

	mu      sync.Mutex
	history []*entry
	closed  bool
	// stop cancels running asynchronous commands on Close.
	stop chan struct{}
	wg   sync.WaitGroup
}

// entry is one command in the history.
type entry struct {
	id        string
	name      string // short
	sensitive bool
	done      chan struct{}

	// guarded by Server.mu
	status   string
	err      *api.CommandError
	result   json.RawMessage
	progress *api.Progress
}

// New builds the server.
func New(reg Registry, opts Options) *Server {
	if opts.Token == nil {
		opts.Token = func() string { return "" }
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.StartedAt.IsZero() {
		opts.StartedAt = time.Now()
	}
	s := &Server{reg: reg, opts: opts, stop: make(chan struct{})}
	e := echo.NewWithConfig(echo.Config{Logger: opts.Log, HTTPErrorHandler: s.handleError})
	e.Pre(middleware.RemoveTrailingSlash())
	e.Use(middleware.Recover())
	for _, prefix := range []string{"/v1", ""} {
		e.GET(prefix+"/status", s.status)
		e.GET(prefix+"/commands", s.list)
		e.POST(prefix+"/commands", s.run)
		e.GET(prefix+"/commands/:id", s.get)
	}
	e.GET("/", s.root)
	e.GET("/v1", s.v1)
	s.echo = e
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Serve answers on ln (over TLS when tlsCfg is set) until ctx ends, then
// shuts the listener down gracefully and stops running commands.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second, TLSConfig: tlsCfg,
		ErrorLog: slog.NewLogLogger(s.opts.Log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("serve command API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	s.Close()
	if err != nil {
		return fmt.Errorf("shut down command API: %w", err)
	}
	return nil
}

// Close cancels running asynchronous commands and waits for them to end.
// The history stays readable; new commands are refused.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// --- handlers ----------------------------------------------------------------

func (s *Server) root(c *echo.Context) error {
	base := scheme(c.Request()) + "://" + c.Request().Host
	v1 := map[string]any{"id": "v1", "links": []api.Link{{Href: base + "/v1/", Rel: "self"}}}
	return c.JSON(http.StatusOK, map[string]any{
		"name":            "OpenStack Ironic Python Agent API",
		"description":     "Ironic Python Agent is a provisioning agent for OpenStack Ironic (served by Ingot's deploy agent)",
		"versions":        []any{v1},
		"default_version": v1,
	})
}

func (s *Server) v1(c *echo.Context) error {
	base := scheme(c.Request()) + "://" + c.Request().Host + "/v1/"
	return c.JSON(http.StatusOK, map[string]any{
		"id":          "v1",
		"links":       []api.Link{{Href: base, Rel: "self"}},
		"media_types": []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.ironic-python-agent.v1+json"}},
		"commands":    []api.Link{{Href: base + "commands", Rel: "self"}},
		"status":      []api.Link{{Href: base + "status", Rel: "self"}},
	})
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func (s *Server) status(c *echo.Context) error {
	st := s.opts.StartedAt
	return c.JSON(http.StatusOK, api.AgentStatus{StartedAt: float64(st.UnixNano()) / 1e9, Version: s.opts.Version})
}

// authorize checks the agent_token query parameter.
func (s *Server) authorize(c *echo.Context, required bool) (bool, error) {
	given, present := c.Request().URL.Query()["agent_token"]
	if !present && !required {
		return false, nil
	}
	want := s.opts.Token()
	if !present || want == "" || len(given) != 1 || subtle.ConstantTimeCompare([]byte(given[0]), []byte(want)) != 1 {
		return false, fault(http.StatusUnauthorized, "401 Unauthorized: Token invalid.")
	}
	return true, nil
}

func (s *Server) list(c *echo.Context) error {
	authed, err := s.authorize(c, s.opts.RequireTokenOnGet)
	if err != nil {
		return err
	}
	s.mu.Lock()
	out := api.CommandList{Commands: make([]api.CommandResult, 0, len(s.history))}
	for _, e := range s.history {
		out.Commands = append(out.Commands, e.view(authed))
	}
	s.mu.Unlock()
	return c.JSON(http.StatusOK, out)
}

func (s *Server) get(c *echo.Context) error {
	authed, err := s.authorize(c, s.opts.RequireTokenOnGet)
	if err != nil {
		return err
	}
	id := c.Param("id")
	s.mu.Lock()
	var e *entry
	for _, h := range s.history {
		if h.id == id {
			e = h
		}
	}
	s.mu.Unlock()
	if e == nil {
		return fault(http.StatusNotFound, fmt.Sprintf("Requested object not found: Command with id %s not found.", id))
	}
	if wait, err := boolParam(c, "wait"); err != nil {
		return err
	} else if wait {
		select {
		case <-e.done:
		case <-c.Request().Context().Done():
			return c.Request().Context().Err()
		}
	}
	s.mu.Lock()
	v := e.view(authed)
	s.mu.Unlock()
	return c.JSON(http.StatusOK, v)
}

// maxBody bounds a command request (image_info, node and ports).
const maxBody = 8 << 20

func (s *Server) run(c *echo.Context) error {
	if _, err := s.authorize(c, true); err != nil {
		return err
	}
	wait, err := boolParam(c, "wait")
	if err != nil {
		return err
	}
	var req api.CommandRequest
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), c.Request().Body, maxBody))
	if err := dec.Decode(&req); err != nil {
		return fault(http.StatusBadRequest, "Invalid request body: "+jsonError(err))
	}
	if dec.More() {
		return fault(http.StatusBadRequest, "Invalid request body: trailing data after the JSON object")
	}
	ext, name, err := req.Split()
	if err != nil {
		return fault(http.StatusBadRequest, "Invalid request body: "+err.Error())
	}
	cmds, ok := s.reg[ext]
	if !ok {
		return fault(http.StatusNotFound, fmt.Sprintf("Requested object not found: Extension with id %s not found.", ext))
	}
	cmd, ok := cmds[name]
	if !ok {
		return fault(http.StatusBadRequest, fmt.Sprintf("Invalid command: Unknown command: %s", req.Name))
	}
	params := Params(req.Params)
	if params == nil {
		params = Params{}
	}
	if cmd.Validate != nil {
		if err := cmd.Validate(params); err != nil {
			return fault(http.StatusBadRequest, "Invalid command parameters: "+err.Error())
		}
	}

	e := &entry{id: newID(), name: name, sensitive: cmd.Sensitive, status: api.StatusRunning, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fault(http.StatusServiceUnavailable, "The agent is shutting down.")
	}
	if n := len(s.history); n > 0 && s.history[n-1].status == api.StatusRunning {
		busy := s.history[n-1].name
		s.mu.Unlock()
		return fault(http.StatusConflict, "Agent is busy: executing command "+busy)
	}
	s.history = append(s.history, e)
	if cmd.Async {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	log := s.opts.Log.With("command", req.Name, "id", e.id)
	log.Info("command accepted", "async", cmd.Async)

	if !cmd.Async {
		s.execute(c.Request().Context(), e, cmd, params, log)
	} else {
		ctx, cancel := context.WithCancel(context.WithoutCancel(c.Request().Context()))
		go func() {
			defer s.wg.Done()
			defer cancel()
			go func() {
				select {
				case <-s.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			s.execute(ctx, e, cmd, params, log)
			if s.opts.OnAsyncDone != nil {
				s.opts.OnAsyncDone()
			}
		}()
		if wait {
			select {
			case <-e.done:
			case <-c.Request().Context().Done():
				return c.Request().Context().Err()
			}
		}
	}
	s.mu.Lock()
	v := e.view(true)
	s.mu.Unlock()
	return c.JSON(http.StatusOK, v)
}

// execute runs a command and records its outcome.
func (s *Server) execute(ctx context.Context, e *entry, cmd Command, p Params, log *slog.Logger) {
	progress := func(pr api.Progress) {
		s.mu.Lock()
		if e.status == api.StatusRunning {
			e.progress = &pr
		}
		s.mu.Unlock()
	}
	start := time.Now()
	res, err := safeRun(ctx, cmd, p, progress)
	status, cerr, raw := outcome(e.name, cmd.Async, res, err)
	s.mu.Lock()
	e.status, e.err, e.result = status, cerr, raw
	s.mu.Unlock()
	close(e.done)
	if cerr != nil {
		log.Warn("command failed", "status", status, "err", cerr.Error(), "duration", time.Since(start))
	} else {
		log.Info("command finished", "status", status, "duration", time.Since(start))
	}
}

func safeRun(ctx context.Context, cmd Command, p Params, progress func(api.Progress)) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("command panicked: %v", r)
		}
	}()
	return cmd.Run(ctx, p, progress)
}

// outcome turns a command's return values into IPA's status, error and
// result.
func outcome(name string, async bool, res any, err error) (string, *api.CommandError, json.RawMessage) {
	if err != nil {
		ce := &api.CommandError{Type: "CommandExecutionError", Code: http.StatusInternalServerError,
			Message: "Command execution failed", Details: err.Error()}
		var e *Error
		if errors.As(err, &e) {
			ce = &api.CommandError{Type: e.Type, Code: e.Code, Message: e.Message, Details: e.Details}
			if ce.Code == 0 {
				ce.Code = http.StatusInternalServerError
			}
		}
		status := api.StatusFailed
		if errors.Is(err, ErrVersionMismatch) {
			status = api.StatusCleanVersionMismach
		}
		return status, ce, json.RawMessage("null")
	}
	if str, ok := res.(string); ok {
		if async {
			str = name + ": " + str
		}
		res = map[string]string{"result": str}
	}
	b, merr := json.Marshal(res)
	if merr != nil {
		return api.StatusFailed, &api.CommandError{Type: "CommandExecutionError", Code: http.StatusInternalServerError,
			Message: "Command execution failed", Details: "encode result: " + merr.Error()}, json.RawMessage("null")
	}
	return api.StatusSucceeded, nil, b
}

// view renders an entry; the caller holds the lock.
func (e *entry) view(authed bool) api.CommandResult {
	r := api.CommandResult{ID: e.id, CommandName: e.name, CommandStatus: e.status, CommandError: e.err,
		CommandResult: e.result, Progress: e.progress}
	if r.CommandResult == nil || (e.sensitive && !authed) {
		r.CommandResult = json.RawMessage("null")
	}
	return r
}

func boolParam(c *echo.Context, name string) (bool, error) {
	v := c.QueryParam(name)
	switch strings.ToLower(v) {
	case "", "0", "false", "f", "no", "n", "off":
		return false, nil
	case "1", "true", "t", "yes", "y", "on":
		return true, nil
	}
	return false, fault(http.StatusBadRequest, fmt.Sprintf("Invalid request: %s=%q is not a boolean", name, v))
}

func jsonError(err error) string {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Sprintf("larger than %d bytes", mbe.Limit)
	}
	return err.Error()
}

// --- errors ----------------------------------------------------------------

// faultError is an error with an explicit status and faultstring.
type faultError struct {
	status int
	msg    string
}

func (f *faultError) Error() string { return f.msg }

func fault(status int, msg string) error { return &faultError{status, msg} }

// faultFor is the one place errors become HTTP statuses.
func faultFor(err error) (int, string) {
	var fe *faultError
	var he *echo.HTTPError
	var coder echo.HTTPStatusCoder
	switch {
	case errors.As(err, &fe):
		return fe.status, fe.msg
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "Request cancelled: " + err.Error()
	case errors.As(err, &he):
		return he.Code, he.Message
	case errors.As(err, &coder) && coder.StatusCode() != 0:
		return coder.StatusCode(), fmt.Sprintf("%d %s", coder.StatusCode(), http.StatusText(coder.StatusCode()))
	}
	return http.StatusInternalServerError, err.Error()
}

func (s *Server) handleError(c *echo.Context, err error) {
	if r, _ := echo.UnwrapResponse(c.Response()); r != nil && r.Committed {
		return
	}
	status, msg := faultFor(err)
	code := "Client"
	if status >= 500 {
		code = "Server"
		s.opts.Log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	} else {
		s.opts.Log.Debug("request refused", "method", c.Request().Method, "path", c.Request().URL.Path, "status", status, "fault", msg)
	}
	_ = c.JSON(status, api.Fault{Faultcode: code, Faultstring: msg})
}

// newID returns a random (version 4) UUID, as IPA names commands.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
