package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// beats records when Send was called, failing the calls listed in fail.
type beats struct {
	mu    sync.Mutex
	start time.Time
	at    []time.Duration
	fail  map[int]bool
}

func (b *beats) send(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.at)
	b.at = append(b.at, time.Since(b.start))
	if b.fail[n] {
		return errors.New("HTTP 409: node locked")
	}
	return nil
}

func (b *beats) times() []time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Duration(nil), b.at...)
}

func newTestHeartbeater(t *testing.T, b *beats, u float64) *Heartbeater {
	h := NewHeartbeater(b.send, 100*time.Second, 5*time.Second, slog.New(slog.NewTextHandler(t.Output(), nil)))
	h.Rand = func() float64 { return u }
	return h
}

func TestHeartbeatSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &beats{start: time.Now(), fail: map[int]bool{2: true}}
		h := newTestHeartbeater(t, b, 0.5)
		ctx, cancel := context.WithCancel(t.Context())
		go h.Run(ctx)
		time.Sleep(200 * time.Second)
		cancel()
		synctest.Wait()
		// first at once; then 100 s × 0.45 = 45 s after each success;
		// after the failure at 90 s, 5 s × 1.5 = 7.5 s; then 45 s again.
		want := []time.Duration{0, 45 * time.Second, 90 * time.Second, 97500 * time.Millisecond, 142500 * time.Millisecond, 187500 * time.Millisecond}
		if got := b.times(); !equalDurations(got, want) {
			t.Errorf("heartbeats at %v, want %v", got, want)
		}
	})
}

func TestHeartbeatIntervalBounds(t *testing.T) {
	h := NewHeartbeater(nil, 300*time.Second, 0, nil)
	for _, u := range []float64{0, 0.999999} {
		h.Rand = func() float64 { return u }
		if ok := h.Interval(true); ok < 90*time.Second || ok > 180*time.Second {
			t.Errorf("success interval %v outside 90-180 s", ok)
		}
		if bad := h.Interval(false); bad < 5*time.Second || bad > 10*time.Second {
			t.Errorf("error interval %v outside 5-10 s", bad)
		}
	}
	if h.MinForced != DefaultMinForcedInterval {
		t.Errorf("MinForced default %v", h.MinForced)
	}
}

func TestForcedHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &beats{start: time.Now()}
		h := newTestHeartbeater(t, b, 0.5)
		ctx, cancel := context.WithCancel(t.Context())
		go h.Run(ctx)
		synctest.Wait() // first heartbeat at 0

		time.Sleep(2 * time.Second)
		h.Force() // at 2 s: too soon after 0, sent at 5 s
		h.Force() // coalesced with the previous one
		synctest.Wait()
		time.Sleep(20 * time.Second) // 22 s
		h.Force()                    // sent at once: the last was at 5 s
		synctest.Wait()
		time.Sleep(10 * time.Second) // 32 s
		cancel()
		synctest.Wait()
		want := []time.Duration{0, 5 * time.Second, 22 * time.Second}
		if got := b.times(); !equalDurations(got, want) {
			t.Errorf("heartbeats at %v, want %v", got, want)
		}
	})
}

func TestForcedHeartbeatNeverDelaysAnEarlierOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &beats{start: time.Now(), fail: map[int]bool{0: true}}
		h := newTestHeartbeater(t, b, 0) // error retry after exactly 5 s
		h.MinForced = 30 * time.Second
		ctx, cancel := context.WithCancel(t.Context())
		go h.Run(ctx)
		synctest.Wait()
		h.Force() // would be due at 30 s; the retry at 5 s stays
		time.Sleep(6 * time.Second)
		cancel()
		synctest.Wait()
		if got := b.times(); !equalDurations(got, []time.Duration{0, 5 * time.Second}) {
			t.Errorf("heartbeats at %v", got)
		}
	})
}

func TestHeartbeatStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		h := NewHeartbeater(func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-block:
				return nil
			}
		}, time.Minute, 0, nil)
		ctx, cancel := context.WithCancelCause(t.Context())
		done := make(chan error)
		go func() { done <- h.Run(ctx) }()
		synctest.Wait()
		stop := errors.New("powered off")
		cancel(stop)
		if err := <-done; !errors.Is(err, stop) {
			t.Errorf("Run = %v", err)
		}
	})
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
