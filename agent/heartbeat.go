package agent

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Heartbeat timing, IPA's.
const (
	// DefaultHeartbeatTimeout applies when lookup gave none.
	DefaultHeartbeatTimeout = 300 * time.Second
	// DefaultMinForcedInterval coalesces forced heartbeats: at most one
	// per 5 s.
	DefaultMinForcedInterval = 5 * time.Second
	// errorRetryBase: after a failed heartbeat the next comes
	// 5 × U(1, 2) s later.
	errorRetryBase = 5 * time.Second
)

// Heartbeater sends heartbeats: one at once, then every heartbeat_timeout
// × U(0.3, 0.6) after a success and 5 × U(1, 2) s after a failure, plus a
// forced one (at most one per MinForced) whenever Force is called.
type Heartbeater struct {
	// Send makes one heartbeat.
	Send func(ctx context.Context) error
	// Timeout is Ironic's heartbeat_timeout.
	Timeout time.Duration
	// MinForced is the least time between a heartbeat and a forced one.
	MinForced time.Duration
	// Rand returns U(0, 1); math/rand when nil.
	Rand func() float64
	Log  *slog.Logger

	force chan struct{}
}

// NewHeartbeater returns a heartbeater with IPA's defaults for zero
// values.
func NewHeartbeater(send func(ctx context.Context) error, timeout, minForced time.Duration, log *slog.Logger) *Heartbeater {
	if timeout <= 0 {
		timeout = DefaultHeartbeatTimeout
	}
	if minForced <= 0 {
		minForced = DefaultMinForcedInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Heartbeater{Send: send, Timeout: timeout, MinForced: minForced, Rand: rand.Float64, Log: log, force: make(chan struct{}, 1)}
}

// Force asks for a heartbeat soon (coalesced); it never blocks.
func (h *Heartbeater) Force() {
	select {
	case h.force <- struct{}{}:
	default:
	}
}

// Interval returns the wait after a heartbeat that succeeded (ok) or
// failed.
func (h *Heartbeater) Interval(ok bool) time.Duration {
	base := errorRetryBase
	if ok {
		base = h.Timeout * 3 / 10
	}
	return base + time.Duration(float64(base)*h.Rand())
}

// Run heartbeats until ctx ends.
func (h *Heartbeater) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	due := time.Now()
	var last time.Time
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-h.force:
			at := last.Add(h.MinForced)
			if now := time.Now(); at.Before(now) {
				at = now
			}
			if at.Before(due) {
				due = at
				timer.Reset(time.Until(due))
			}
		case <-timer.C:
			err := h.Send(ctx)
			last = time.Now()
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			next := h.Interval(err == nil)
			switch {
			case err == nil && lastErr != "":
				h.Log.Info("heartbeat accepted again")
				lastErr = ""
			case err == nil:
				h.Log.Debug("heartbeat accepted", "next", next)
			case err.Error() != lastErr:
				h.Log.Warn("heartbeat failed", "err", err, "next", next)
				lastErr = err.Error()
			default:
				h.Log.Debug("heartbeat failed again", "err", err, "next", next)
			}
			due = last.Add(next)
			timer.Reset(next)
		}
	}
}
