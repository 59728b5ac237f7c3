package engine_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/store"
)

// flakyPower is a power driver whose calls fail while failures > 0.
type flakyPower struct {
	mu       sync.Mutex
	state    node.PowerState
	failures int
	calls    []string
}

func (f *flakyPower) PowerState(context.Context) (node.PowerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "state")
	if f.failures > 0 {
		return node.PowerError, errors.New("BMC 10.0.0.9:623 did not answer")
	}
	return f.state, nil
}

func (f *flakyPower) SetPowerState(_ context.Context, t node.PowerState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "set "+string(t))
	if f.failures > 0 {
		f.failures--
		return errors.New("BMC 10.0.0.9:623 did not answer")
	}
	switch t {
	case node.PowerOff, node.PowerSoftOff:
		f.state = node.PowerOff
	default:
		f.state = node.PowerOn
	}
	return nil
}

type noopMgmt struct{}

func (noopMgmt) SetBootDevice(context.Context, string, bool, bool) error { return nil }
func (noopMgmt) BootDevice(context.Context) (string, bool, error) {
	return "", false, node.ErrUnsupported
}
func (noopMgmt) SupportedBootDevices() []string { return []string{"pxe", "disk"} }

type testDrivers struct{ power *flakyPower }

func (d testDrivers) Power(*node.Node) (engine.Power, error)           { return d.power, nil }
func (d testDrivers) Management(*node.Node) (engine.Management, error) { return noopMgmt{}, nil }
func (d testDrivers) Validate(*node.Node) map[string]error             { return map[string]error{} }

type env struct {
	db    *store.DB
	eng   *engine.Engine
	power *flakyPower
}

func newEnv(t *testing.T, run bool, opts engine.Options) *env {
	t.Helper()
	db, err := store.Open(t.Context(), store.SQLiteURL(filepath.Join(t.TempDir(), "state.db")), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p := &flakyPower{state: node.PowerOff}
	if opts.Conductor == "" {
		opts.Conductor = "c1"
	}
	opts.LockRetryInterval = time.Millisecond
	eng := engine.New(db, testDrivers{p}, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), opts)
	if err := eng.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { eng.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return &env{db: db, eng: eng, power: p}
}

func (e *env) create(t *testing.T, name string) *node.Node {
	t.Helper()
	n, err := e.eng.CreateNode(t.Context(), &node.Node{Name: name, Driver: "fake-hardware"}, engine.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) get(t *testing.T, ident string) *node.Node {
	t.Helper()
	n, err := e.db.GetNode(t.Context(), ident)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConcurrentVerbsOneWins(t *testing.T) {
	e := newEnv(t, true, engine.Options{LockRetries: 1})
	for round := range 10 {
		n := e.create(t, "")
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = e.eng.Provision(t.Context(), n.UUID, engine.ProvisionRequest{Target: "manage"}) })
		}
		wg.Wait()
		e.eng.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, node.ErrLocked), errors.Is(err, node.ErrInvalidTransition):
			default:
				t.Errorf("round %d: unexpected error %v", round, err)
			}
		}
		got := e.get(t, n.UUID)
		if ok != 1 || got.ProvisionState != node.StateManageable || got.Reservation != "" {
			t.Errorf("round %d: %d verbs succeeded, node %s reserved by %q", round, ok, got.ProvisionState, got.Reservation)
		}
	}
}

func TestRecoverAfterACrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := store.Open(t.Context(), store.SQLiteURL(path), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, st node.State, resv string, updated time.Time) {
		n := &node.Node{UUID: "", Name: name, Driver: "fake-hardware", ProvisionState: st, Reservation: resv, ProvisionUpdatedAt: updated}
		n.UUID = strings.Repeat(string(rune('a'+len(name)%6)), 8) + "-0000-4000-8000-" + strings.Repeat("0", 11) + string(rune('0'+len(name)))
		if err := db.CreateNode(t.Context(), n); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-time.Hour).UTC()
	mk("deploying-mine", node.StateDeploying, "c1", then)
	mk("cleaning-free", node.StateCleaning, "", then)
	mk("waiting", node.StateDeployWait, "c1", then)
	mk("active-other", node.StateActive, "c2", then)
	db.Close()

	db, err = store.Open(t.Context(), store.SQLiteURL(path), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	eng := engine.New(db, testDrivers{&flakyPower{}}, slog.New(slog.DiscardHandler), engine.Options{Conductor: "c1"})
	if err := eng.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		wantState node.State
		wantResv  string
		wantError bool
	}{
		{"deploying-mine", node.StateDeployFailed, "", true},
		{"cleaning-free", node.StateCleanFailed, "", true},
		{"waiting", node.StateDeployWait, "", false},
		{"active-other", node.StateActive, "c2", false},
	} {
		n, err := db.GetNode(t.Context(), tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if n.ProvisionState != tc.wantState || n.Reservation != tc.wantResv || (n.LastError != "") != tc.wantError {
			t.Errorf("%s: state %q reservation %q last_error %q", tc.name, n.ProvisionState, n.Reservation, n.LastError)
		}
		if tc.name == "waiting" && !n.ProvisionUpdatedAt.Equal(then.Truncate(time.Microsecond)) {
			t.Errorf("a waiting node's deadline moved: %v -> %v", then, n.ProvisionUpdatedAt)
		}
	}
}

func TestNoFreeWorkerIsBusyAndReleases(t *testing.T) {
	e := newEnv(t, false, engine.Options{QueueSize: 1})
	a, b := e.create(t, "a"), e.create(t, "b")
	if err := e.eng.Provision(t.Context(), a.UUID, engine.ProvisionRequest{Target: "manage"}); err != nil {
		t.Fatal(err)
	}
	err := e.eng.Provision(t.Context(), b.UUID, engine.ProvisionRequest{Target: "manage"})
	if !errors.Is(err, engine.ErrBusy) {
		t.Fatalf("second verb with a full queue: %v, want ErrBusy", err)
	}
	if got := e.get(t, b.UUID); got.Reservation != "" {
		t.Errorf("a refused task kept its reservation: %q", got.Reservation)
	}
}

func TestPowerFailureIsRecorded(t *testing.T) {
	e := newEnv(t, true, engine.Options{PowerStateTimeout: 200 * time.Millisecond})
	n := e.create(t, "p")
	e.power.failures = 1
	if err := e.eng.SetPower(t.Context(), n.UUID, engine.PowerRequest{Target: node.PowerOn}); err != nil {
		t.Fatal(err)
	}
	e.eng.Wait()
	got := e.get(t, n.UUID)
	if !strings.Contains(got.LastError, "Failed to change power state to 'power on'") || !strings.Contains(got.LastError, "10.0.0.9:623") {
		t.Errorf("last_error %q", got.LastError)
	}
	if got.TargetPowerState != "" || got.Reservation != "" || got.PowerState != "" {
		t.Errorf("after a failed power action: target %q reservation %q power %q", got.TargetPowerState, got.Reservation, got.PowerState)
	}
	if err := e.eng.SetPower(t.Context(), n.UUID, engine.PowerRequest{Target: node.PowerReboot}); err != nil {
		t.Fatal(err)
	}
	e.eng.Wait()
	if got := e.get(t, n.UUID); got.PowerState != node.PowerOn {
		t.Errorf("power state after reboot: %q", got.PowerState)
	}
}

func TestVerifyFailureReturnsToEnroll(t *testing.T) {
	e := newEnv(t, true, engine.Options{})
	n := e.create(t, "v")
	e.power.failures = 1
	if err := e.eng.Provision(t.Context(), n.UUID, engine.ProvisionRequest{Target: "manage"}); err != nil {
		t.Fatal(err)
	}
	e.eng.Wait()
	got := e.get(t, n.UUID)
	if got.ProvisionState != node.StateEnroll || !strings.Contains(got.LastError, "Failed to get power state") {
		t.Errorf("state %q last_error %q", got.ProvisionState, got.LastError)
	}
}

func TestShutdownReleasesQueuedWork(t *testing.T) {
	e := newEnv(t, false, engine.Options{QueueSize: 4})
	n := e.create(t, "q")
	if err := e.eng.Provision(t.Context(), n.UUID, engine.ProvisionRequest{Target: "manage"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run starts already cancelled: the queued task never runs
	if err := e.eng.Run(ctx); err != nil {
		t.Fatal(err)
	}
	got := e.get(t, n.UUID)
	if got.Reservation != "" {
		t.Errorf("queued task's reservation survived shutdown: %q", got.Reservation)
	}
	if got.ProvisionState != node.StateVerifying {
		t.Errorf("state %q", got.ProvisionState)
	}
}
