// Package agentclient is the conductor's client of a deploy agent's command
// API (ironic-python-agent's /v1/commands/), used on agent heartbeats to run
// deploy and clean steps. It behaves as Ironic's agent client does: a
// per-request timeout, bounded retries of connection errors, 409 or "agent
// is busy" reported as ErrBusy (retry on the next heartbeat), and a POST
// whose answer was lost counted as delivered when the agent's command list
// shows it.
//
// Agent URLs and tokens come from heartbeats; tokens travel only in the
// query string, as IPA expects, and never appear in errors or logs.
package agentclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/buildinfo"
)

// Endpoint says where an agent listens and how to authenticate to it.
type Endpoint struct {
	URL      string // the agent's callback_url, e.g. https://192.0.2.5:9999
	Token    string // the agent token minted at lookup
	VerifyCA string // PEM of the agent's self-signed certificate (agent_verify_ca), for https
}

// Errors callers classify with errors.Is.
var (
	// ErrBusy: the agent runs another command; retry on a later heartbeat.
	ErrBusy = errors.New("agent is busy")
	// ErrUnreachable: the agent did not answer after the retries.
	ErrUnreachable = errors.New("agent is unreachable")
	// ErrAPI: the agent answered with an error status.
	ErrAPI = errors.New("agent API error")
)

// Options tune a Client. Zero values are Ironic's defaults.
type Options struct {
	Timeout     time.Duration // per request ([agent]command_timeout, 60 s)
	MaxAttempts int           // per command on connection errors ([agent]max_command_attempts, 3)
	RetryDelay  time.Duration // between attempts (1 s)
	Log         *slog.Logger
}

// Client talks to agents.
type Client struct {
	opts Options

	mu         sync.Mutex
	transports map[string]*http.Transport // by pinned CA ("" for plain HTTP)
}

// maxTransports bounds the pinned-certificate transports kept (one per
// TLS agent); beyond it the oldest is closed.
const maxTransports = 256

// New returns a Client.
func New(opts Options) *Client {
	if opts.Timeout == 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 3
	}
	if opts.RetryDelay == 0 {
		opts.RetryDelay = time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Client{opts: opts, transports: map[string]*http.Transport{}}
}

// httpClient returns a client for an endpoint. Transports are shared (one
// for plain HTTP, one per pinned agent certificate) so the agent polled on
// every heartbeat is reached over a kept-alive connection.
func (c *Client) httpClient(ep Endpoint) (*http.Client, error) {
	key := ""
	if strings.HasPrefix(ep.URL, "https://") {
		key = "tls:" + ep.VerifyCA
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if tr, ok := c.transports[key]; ok {
		return &http.Client{Transport: tr, Timeout: c.opts.Timeout}, nil
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: c.opts.Timeout,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
	}
	if key != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if ep.VerifyCA != "" {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM([]byte(ep.VerifyCA)) {
				return nil, errors.New("agent_verify_ca holds no PEM certificate")
			}
			// The agent's self-signed certificate names its IP in the SAN;
			// the pool pins exactly that certificate.
			cfg.RootCAs = pool
		}
		tr.TLSClientConfig = cfg
	}
	if len(c.transports) >= maxTransports {
		for k, old := range c.transports {
			if k != "" {
				old.CloseIdleConnections()
				delete(c.transports, k)
				break
			}
		}
	}
	c.transports[key] = tr
	return &http.Client{Transport: tr, Timeout: c.opts.Timeout}, nil
}

// commandsURL builds <agent>/v1/commands/ with the query.
func commandsURL(ep Endpoint, q url.Values) (string, error) {
	u, err := url.Parse(strings.TrimRight(ep.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("invalid agent URL %q", ep.URL)
	}
	u.Path += "/v1/commands/"
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Execute runs "<extension>.<command>" on the agent. With wait the agent
// answers when the command finished; without it, asynchronous commands come
// back RUNNING and finish in the command list.
func (c *Client) Execute(ctx context.Context, ep Endpoint, name string, params any, wait bool) (*api.CommandResult, error) {
	if params == nil {
		params = map[string]any{}
	}
	body, err := json.Marshal(map[string]any{"name": name, "params": params})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", name, err)
	}
	q := url.Values{"wait": {fmt.Sprint(wait)}, "agent_token": {ep.Token}}
	target, err := commandsURL(ep, q)
	if err != nil {
		return nil, err
	}
	hc, err := c.httpClient(ep)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 1; attempt <= c.opts.MaxAttempts; attempt++ {
		res, err := c.post(ctx, hc, target, body)
		if err == nil || !errors.Is(err, ErrUnreachable) {
			return res, err
		}
		lastErr = err
		// The command may have arrived even though its answer did not: if
		// the agent's last command is this one, it was delivered.
		if cmds, lerr := c.Commands(ctx, ep); lerr == nil && len(cmds) > 0 {
			_, short, _ := strings.Cut(name, ".")
			if last := cmds[len(cmds)-1]; last.CommandName == short {
				c.opts.Log.Info("agent command delivered though its answer was lost", "command", name)
				return &last, nil
			}
		}
		if attempt < c.opts.MaxAttempts {
			if err := sleep(ctx, c.opts.RetryDelay); err != nil {
				return nil, err
			}
		}
	}
	return nil, lastErr
}

func (c *Client) post(ctx context.Context, hc *http.Client, target string, body []byte) (*api.CommandResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", buildinfo.UserAgent("conductor"))
	resp, err := hc.Do(req)
	if err != nil {
		return nil, unreachable(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, unreachable(ctx, err)
	}
	if err := statusError(resp.StatusCode, b); err != nil {
		return nil, err
	}
	var res api.CommandResult
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("%w: malformed command result: %v", ErrAPI, err)
	}
	if res.CommandStatus == "" {
		return nil, fmt.Errorf("%w: command result has no command_status", ErrAPI)
	}
	return &res, nil
}

// Commands lists every command the agent ran since it booted, oldest first.
func (c *Client) Commands(ctx context.Context, ep Endpoint) ([]api.CommandResult, error) {
	target, err := commandsURL(ep, url.Values{"agent_token": {ep.Token}})
	if err != nil {
		return nil, err
	}
	hc, err := c.httpClient(ep)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 1; attempt <= c.opts.MaxAttempts; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("User-Agent", buildinfo.UserAgent("conductor"))
		resp, err := hc.Do(req)
		if err != nil {
			lastErr = unreachable(ctx, err)
			if attempt < c.opts.MaxAttempts {
				if err := sleep(ctx, c.opts.RetryDelay); err != nil {
					return nil, err
				}
			}
			continue
		}
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if rerr != nil {
			lastErr = unreachable(ctx, rerr)
			continue
		}
		if err := statusError(resp.StatusCode, b); err != nil {
			return nil, err
		}
		var list api.CommandList
		if err := json.Unmarshal(b, &list); err != nil {
			return nil, fmt.Errorf("%w: malformed command list: %v", ErrAPI, err)
		}
		return list.Commands, nil
	}
	return nil, lastErr
}

func statusError(status int, body []byte) error {
	if status < 400 {
		return nil
	}
	msg := api.FaultString(body)
	if status == http.StatusConflict || strings.Contains(strings.ToLower(msg), "agent is busy") {
		return fmt.Errorf("%w: %s", ErrBusy, msg)
	}
	return fmt.Errorf("%w: HTTP %d: %s", ErrAPI, status, msg)
}

func unreachable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL carries the token: never repeat it
	}
	return fmt.Errorf("%w: %v", ErrUnreachable, err)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
