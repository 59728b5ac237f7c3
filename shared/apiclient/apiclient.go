// Package apiclient is a typed HTTP client for the ramdisk half of Ironic's
// API, as an agent uses it: version discovery (GET /), lookup
// (GET /v1/lookup) and heartbeat (POST /v1/heartbeat/{node}). It speaks to a
// real Ironic and to Ingot's conductor alike, and conductor tests use it to
// act as a fake agent.
//
// It never retries: every method makes exactly one request and reports
// what happened; callers own retries and backoff. An HTTP error status
// becomes a *StatusError carrying the status, the fault string from either
// error envelope and any Retry-After. Tokens travel only in request bodies
// and never appear in errors.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/shared/api"
)

// Doer sends one HTTP request; *http.Client satisfies it, and so does a
// retrying client's standard adapter.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Options configure a Client. The zero value is usable.
type Options struct {
	// UserAgent is sent on every request; empty sends Go's default.
	UserAgent string
	// GlobalRequestID is sent as X-OpenStack-Request-ID when set
	// (ipa-global-request-id).
	GlobalRequestID string
	// MaxResponseBytes bounds how much of a response body is read;
	// 1 MiB when zero.
	MaxResponseBytes int64
}

// Client talks to one Ironic API endpoint.
type Client struct {
	base string
	hc   Doer
	opts Options
}

// New returns a client for the API at baseURL (scheme://host[:port][/path],
// a trailing slash is ignored).
func New(baseURL string, hc Doer, opts Options) *Client {
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = 1 << 20
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc, opts: opts}
}

// BaseURL returns the endpoint the client talks to.
func (c *Client) BaseURL() string { return c.base }

// StatusError is an HTTP error status from the API.
type StatusError struct {
	// Op names the call: "version discovery", "lookup" or "heartbeat".
	Op string
	// Code is the HTTP status.
	Code int
	// Fault is the human message from the error body.
	Fault string
	// RetryAfter is the server's Retry-After, zero when absent.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	if e.Fault == "" {
		return fmt.Sprintf("%s: HTTP %d %s", e.Op, e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("%s: HTTP %d: %s", e.Op, e.Code, e.Fault)
}

// StatusCode returns the HTTP status of err when it is (or wraps) a
// *StatusError, else 0.
func StatusCode(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// ErrDecode marks a response whose body is not what the API promises.
var ErrDecode = errors.New("malformed response")

func (c *Client) do(ctx context.Context, op, method, path string, query url.Values, version string, body any) ([]byte, *http.Response, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: encode request: %w", op, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: build request: %w", op, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if version != "" {
		req.Header.Set(api.VersionHeader, version)
	}
	if c.opts.UserAgent != "" {
		req.Header.Set("User-Agent", c.opts.UserAgent)
	}
	if c.opts.GlobalRequestID != "" {
		req.Header.Set("X-OpenStack-Request-ID", c.opts.GlobalRequestID)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxResponseBytes+1))
	if err != nil {
		return nil, resp, fmt.Errorf("%s: read response: %w", op, err)
	}
	if int64(len(b)) > c.opts.MaxResponseBytes {
		return nil, resp, fmt.Errorf("%s: response larger than %d bytes: %w", op, c.opts.MaxResponseBytes, ErrDecode)
	}
	if resp.StatusCode >= 400 {
		return b, resp, &StatusError{Op: op, Code: resp.StatusCode, Fault: api.FaultString(b),
			RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	return b, resp, nil
}

// ParseRetryAfter reads a Retry-After header: delay-seconds or an HTTP
// date (relative to now). Absent, malformed or past values give 0.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > 1<<31 {
			n = 1 << 31
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// APIVersion asks the server for its newest microversion (GET /,
// default_version.version), as IPA does before lookup.
func (c *Client) APIVersion(ctx context.Context) (string, error) {
	b, _, err := c.do(ctx, "version discovery", http.MethodGet, "/", nil, "", nil)
	if err != nil {
		return "", err
	}
	return DecodeVersion(b)
}

// DecodeVersion reads default_version.version from a GET / answer.
func DecodeVersion(b []byte) (string, error) {
	var root struct {
		DefaultVersion struct {
			Version string `json:"version"`
		} `json:"default_version"`
	}
	if err := json.Unmarshal(b, &root); err != nil {
		return "", fmt.Errorf("version discovery: %w: %v", ErrDecode, err)
	}
	if _, ok := ParseMicroversion(root.DefaultVersion.Version); !ok {
		return "", fmt.Errorf("version discovery: %w: default_version.version %q is not 1.<minor>", ErrDecode, root.DefaultVersion.Version)
	}
	return root.DefaultVersion.Version, nil
}

// ParseMicroversion reads "1.<minor>".
func ParseMicroversion(v string) (minor int, ok bool) {
	major, m, found := strings.Cut(v, ".")
	if !found || major != "1" || m == "" || len(m) > 4 {
		return 0, false
	}
	n, err := strconv.Atoi(m)
	if err != nil || n < 0 || strconv.Itoa(n) != m {
		return 0, false
	}
	return n, true
}

// MinVersion returns the older of two microversions; an unparsable server
// version yields want.
func MinVersion(server, want string) string {
	s, ok1 := ParseMicroversion(server)
	w, ok2 := ParseMicroversion(want)
	if !ok1 || !ok2 || w <= s {
		return want
	}
	return server
}

// LookupQuery selects the node to look up: by MAC addresses, by UUID, or
// both (the UUID takes precedence on the server).
type LookupQuery struct {
	Addresses []string
	NodeUUID  string
}

// Lookup asks which node this agent runs on (GET /v1/lookup) at the given
// microversion (1.62 or later to receive an agent token).
func (c *Client) Lookup(ctx context.Context, version string, q LookupQuery) (*api.LookupResponse, error) {
	if len(q.Addresses) == 0 && q.NodeUUID == "" {
		return nil, errors.New("lookup: no MAC address and no node UUID to look up")
	}
	v := url.Values{}
	if len(q.Addresses) > 0 {
		v.Set("addresses", strings.Join(q.Addresses, ","))
	}
	if q.NodeUUID != "" {
		v.Set("node_uuid", q.NodeUUID)
	}
	b, _, err := c.do(ctx, "lookup", http.MethodGet, "/v1/lookup", v, version, nil)
	if err != nil {
		return nil, err
	}
	return DecodeLookup(b)
}

// DecodeLookup parses and validates a lookup answer.
func DecodeLookup(b []byte) (*api.LookupResponse, error) {
	var r api.LookupResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("lookup: %w: %v", ErrDecode, err)
	}
	if r.Config.HeartbeatTimeout == 0 {
		// Servers before the "config" section sent it at the top level.
		var old struct {
			HeartbeatTimeout int `json:"heartbeat_timeout"`
		}
		if json.Unmarshal(b, &old) == nil {
			r.Config.HeartbeatTimeout = old.HeartbeatTimeout
		}
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("lookup: %w: %v", ErrDecode, err)
	}
	return &r, nil
}

// Heartbeat tells Ironic the agent is alive and where its command API
// listens (POST /v1/heartbeat/{node}); success is 202.
func (c *Client) Heartbeat(ctx context.Context, version, node string, req api.HeartbeatRequest) error {
	if node == "" {
		return errors.New("heartbeat: no node identity")
	}
	_, resp, err := c.do(ctx, "heartbeat", http.MethodPost, "/v1/heartbeat/"+url.PathEscape(node), nil, version, req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return &StatusError{Op: "heartbeat", Code: resp.StatusCode, Fault: "unexpected success status"}
	}
	return nil
}
