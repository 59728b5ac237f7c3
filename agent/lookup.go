package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/ingot-dev/ingot/shared/api"
	"github.com/ingot-dev/ingot/shared/apiclient"
	"github.com/ingot-dev/ingot/shared/buildinfo"
)

// IPA's lookup timing.
const (
	DefaultLookupTimeout  = 600 * time.Second
	DefaultLookupInterval = time.Second
	MaxLookupInterval     = 60 * time.Second
)

// DefaultConflictPauses are IPA's extra waits after successive 409
// answers (the node is locked while the conductor mints the token).
var DefaultConflictPauses = []time.Duration{5 * time.Second, 10 * time.Second, 30 * time.Second}

// ErrLookupTimeout means no lookup succeeded within the lookup timeout.
var ErrLookupTimeout = errors.New("lookup timed out")

// LookupConfig configures Lookup.
type LookupConfig struct {
	// URLs are the API endpoints, tried in order; a connection failure
	// moves to the next.
	URLs []string
	// Timeout bounds the whole lookup (ipa-lookup-timeout, 600 s).
	Timeout time.Duration
	// Interval is the first backoff (ipa-lookup-interval, 1 s); waits grow
	// exponentially with jitter up to MaxInterval (60 s).
	Interval, MaxInterval time.Duration
	// ConflictPauses are added after the 1st, 2nd, 3rd... 409 (the last
	// repeats); DefaultConflictPauses when nil.
	ConflictPauses []time.Duration
	// HTTPClient makes each request (TLS settings, per-request timeout).
	HTTPClient *http.Client
	// Version overrides version discovery (ipa-ironic-api-version).
	Version         string
	GlobalRequestID string
	// Rand returns U(0, 1); math/rand when nil.
	Rand func() float64
	Log  *slog.Logger
}

// LookupResult is a successful lookup.
type LookupResult struct {
	Response *api.LookupResponse
	// URL is the endpoint that answered; heartbeats go there.
	URL string
	// HeartbeatVersion is min(server, 1.68), or the override.
	HeartbeatVersion string
}

func (c *LookupConfig) defaults() {
	if c.Timeout <= 0 {
		c.Timeout = DefaultLookupTimeout
	}
	if c.Interval <= 0 {
		c.Interval = DefaultLookupInterval
	}
	if c.MaxInterval <= 0 {
		c.MaxInterval = MaxLookupInterval
	}
	if c.ConflictPauses == nil {
		c.ConflictPauses = DefaultConflictPauses
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Backoff is the wait before retry n (0-based): uniformly random between
// min and min·2^n, capped at max; a Retry-After is honoured up to max.
func Backoff(min, max time.Duration, n int, retryAfter time.Duration, u float64) time.Duration {
	upper := max
	if n < 30 && min<<n > 0 && min<<n < max {
		upper = min << n
	}
	wait := min + time.Duration(float64(upper-min)*u)
	if retryAfter > wait {
		wait = retryAfter
	}
	if wait > max {
		wait = max
	}
	return wait
}

// lookupState is shared by one Lookup's retry hooks.
type lookupState struct {
	mu        sync.Mutex
	urls      []*url.URL
	cur       int
	conflicts int
	lastMsg   string
	connErr   bool
}

// retryingClient builds the go-retryablehttp client for small JSON calls:
// it retries connection errors and every non-2xx answer (IPA retries
// lookup on anything but success) until ctx ends.
func retryingClient(cfg LookupConfig, st *lookupState) *http.Client {
	rc := retryablehttp.NewClient()
	rc.HTTPClient = cfg.HTTPClient
	rc.Logger = quietLogger{cfg.Log}
	rc.RetryMax = 1 << 30 // bounded by the context
	rc.RetryWaitMin, rc.RetryWaitMax = cfg.Interval, cfg.MaxInterval
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	rc.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		st.connErr = err != nil
		var msg string
		switch {
		case err != nil:
			msg = "cannot reach the API: " + err.Error()
		case resp.StatusCode < 300:
			return false, nil
		case resp.StatusCode == http.StatusNotFound:
			msg = "node not found (not enrolled, no port with our MAC, or not waiting for an agent)"
		case resp.StatusCode == http.StatusConflict:
			msg = "node is locked"
		default:
			msg = fmt.Sprintf("HTTP %d", resp.StatusCode)
		}
		if msg != st.lastMsg {
			cfg.Log.Warn("lookup: retrying", "reason", msg)
			st.lastMsg = msg
		} else {
			cfg.Log.Debug("lookup: retrying", "reason", msg)
		}
		return true, nil
	}
	rc.Backoff = func(lo, hi time.Duration, n int, resp *http.Response) time.Duration {
		var ra time.Duration
		extra := time.Duration(0)
		if resp != nil {
			ra = apiclient.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
			if resp.StatusCode == http.StatusConflict {
				st.mu.Lock()
				i := min(st.conflicts, len(cfg.ConflictPauses)-1)
				st.conflicts++
				st.mu.Unlock()
				if i >= 0 {
					extra = cfg.ConflictPauses[i]
				}
			}
		}
		return Backoff(lo, hi, n, ra, cfg.Rand()) + extra
	}
	rc.PrepareRetry = func(req *http.Request) error {
		st.mu.Lock()
		defer st.mu.Unlock()
		if !st.connErr || len(st.urls) < 2 {
			return nil
		}
		from := st.urls[st.cur]
		st.cur = (st.cur + 1) % len(st.urls)
		to := st.urls[st.cur]
		cfg.Log.Info("lookup: trying the next API URL", "from", from.Host, "to", to.Host)
		req.URL.Scheme, req.URL.Host = to.Scheme, to.Host
		req.Host = to.Host
		return nil
	}
	return rc.StandardClient()
}

// Lookup finds the node this agent runs on, as IPA does: discover the
// server's newest microversion (GET /), then GET /v1/lookup at
// min(server, 1.62) with backoff and jitter until it answers with a node,
// or the timeout passes (ErrLookupTimeout).
func Lookup(ctx context.Context, cfg LookupConfig, q apiclient.LookupQuery) (LookupResult, error) {
	cfg.defaults()
	if len(cfg.URLs) == 0 {
		return LookupResult{}, errors.New("lookup: no API URL (ipa-api-url)")
	}
	st := &lookupState{}
	for _, u := range cfg.URLs {
		pu, err := url.Parse(u)
		if err != nil {
			return LookupResult{}, fmt.Errorf("lookup: API URL %q: %w", u, err)
		}
		st.urls = append(st.urls, pu)
	}
	lctx, cancel := context.WithTimeoutCause(ctx, cfg.Timeout, ErrLookupTimeout)
	defer cancel()
	hc := retryingClient(cfg, st)
	opts := apiclient.Options{UserAgent: buildinfo.UserAgent("deploy-agent"), GlobalRequestID: cfg.GlobalRequestID}
	base := func() string {
		st.mu.Lock()
		defer st.mu.Unlock()
		u := *st.urls[st.cur]
		return u.String()
	}

	lookupVer, hbVer := api.LookupVersion, api.HeartbeatVersion
	if cfg.Version != "" {
		lookupVer, hbVer = cfg.Version, cfg.Version
	} else {
		v, err := apiclient.New(base(), hc, opts).APIVersion(lctx)
		switch {
		case lctx.Err() != nil:
			return LookupResult{}, lookupErr(ctx, lctx)
		case err != nil:
			cfg.Log.Warn("version discovery failed; assuming a current server", "err", err)
		default:
			lookupVer, hbVer = apiclient.MinVersion(v, api.LookupVersion), apiclient.MinVersion(v, api.HeartbeatVersion)
			if lookupVer != api.LookupVersion {
				cfg.Log.Error("the API is older than 1.62 and hands out no agent token", "server", v)
			}
		}
	}
	for n := 0; ; n++ {
		c := apiclient.New(base(), hc, opts)
		resp, err := c.Lookup(lctx, lookupVer, q)
		if err == nil {
			return LookupResult{Response: resp, URL: c.BaseURL(), HeartbeatVersion: hbVer}, nil
		}
		if lctx.Err() != nil {
			return LookupResult{}, lookupErr(ctx, lctx)
		}
		// The HTTP layer gave up or the answer was unusable (bad JSON, no
		// node): wait and ask again.
		wait := Backoff(cfg.Interval, cfg.MaxInterval, n, 0, cfg.Rand())
		cfg.Log.Warn("lookup failed; retrying", "err", err, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-lctx.Done():
			t.Stop()
			return LookupResult{}, lookupErr(ctx, lctx)
		case <-t.C:
		}
	}
}

func lookupErr(parent, lctx context.Context) error {
	if parent.Err() != nil {
		return context.Cause(parent)
	}
	return context.Cause(lctx)
}

// quietLogger passes go-retryablehttp's per-attempt logs at debug level;
// the lookup loop logs what matters itself.
type quietLogger struct{ l *slog.Logger }

func (q quietLogger) Error(msg string, kv ...any) { q.l.Debug(msg, kv...) }
func (q quietLogger) Info(msg string, kv ...any)  { q.l.Debug(msg, kv...) }
func (q quietLogger) Debug(msg string, kv ...any) { q.l.Debug(msg, kv...) }
func (q quietLogger) Warn(msg string, kv ...any)  { q.l.Debug(msg, kv...) }
