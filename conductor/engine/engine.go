// Package engine applies the provision state machine to stored nodes. It is
// the single place where a node's provision state is persisted: API verbs,
// agent heartbeats and timeouts all arrive here as events, and the engine
// takes the node's reservation, asks package provision for the next state,
// runs the driver work the transition needs, and saves the result.
//
// The engine declares the small interfaces it consumes (Store, Drivers,
// Booter) and never imports the packages that implement them: main wires the
// store, the power drivers and the boot server in.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/provision"
)

// Store is the persistence the engine needs.
type Store interface {
	GetNode(ctx context.Context, ident string) (*node.Node, error)
	CreateNode(ctx context.Context, n *node.Node) error
	UpdateNode(ctx context.Context, n *node.Node) error
	UpdateNodeInternal(ctx context.Context, n *node.Node) error
	SetReservation(ctx context.Context, n *node.Node, holder string) error
	DeleteNode(ctx context.Context, uuid string, version int64) error
	ReleaseReservations(ctx context.Context, holder string) (int64, error)
	NodesInStates(ctx context.Context, states ...node.State) ([]*node.Node, error)
	NodeByMACs(ctx context.Context, macs []string) (*node.Node, error)

	GetPort(ctx context.Context, uuid string) (*node.Port, error)
	CreatePort(ctx context.Context, p *node.Port) error
	UpdatePort(ctx context.Context, p *node.Port) error
	DeletePort(ctx context.Context, uuid string) error
	PortsOfNode(ctx context.Context, nodeUUID string) ([]*node.Port, error)

	PutInventory(ctx context.Context, uuid string, inventory, pluginData []byte, at time.Time) error
	Inventory(ctx context.Context, uuid string) (inventory, pluginData []byte, err error)
}

// Power controls one node's power, through its power interface.
type Power interface {
	PowerState(ctx context.Context) (node.PowerState, error)
	// SetPowerState moves the node to target (on, off, soft off, reboot,
	// soft reboot) and returns once the BMC accepted the request.
	SetPowerState(ctx context.Context, target node.PowerState) error
}

// BootDevice is a boot device setting.
type BootDevice struct {
	Device     string `json:"boot_device"`
	Persistent bool   `json:"persistent"`
}

// Management sets one node's boot device, through its management interface.
type Management interface {
	// SetBootDevice sets the next boot device, for every boot when
	// persistent, in UEFI or legacy BIOS mode.
	SetBootDevice(ctx context.Context, device string, persistent, uefi bool) error
	// BootDevice reads the current setting; node.ErrUnsupported when the
	// interface cannot tell.
	BootDevice(ctx context.Context) (device string, persistent bool, err error)
	SupportedBootDevices() []string
}

// Drivers builds a node's power and management drivers from its
// power_interface, management_interface and driver_info.
type Drivers interface {
	Power(n *node.Node) (Power, error)
	Management(n *node.Node) (Management, error)
	// Validate reports what is missing for n's power and management
	// interfaces, keyed by interface kind; nil values mean valid.
	Validate(n *node.Node) map[string]error
}

// Booter prepares a node's network boot: the ramdisk for deploy and
// cleaning, the instance (local disk) once deployed. It owns every boot
// file or record; "fake" boot interfaces need none.
type Booter interface {
	PrepareRamdisk(ctx context.Context, n *node.Node, ports []*node.Port) error
	PrepareInstance(ctx context.Context, n *node.Node, ports []*node.Port) error
	CleanUp(ctx context.Context, n *node.Node, ports []*node.Port) error
}

// Options configure an Engine. Zero values pick Ironic's defaults.
type Options struct {
	// Conductor is this conductor's name, recorded in reservations.
	Conductor string
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Workers bounds concurrent background tasks (64).
	Workers int
	// QueueSize bounds tasks waiting for a worker; beyond it verbs fail
	// with ErrBusy (1024).
	QueueSize int
	// LockRetries and LockRetryInterval: how long an API call waits for a
	// node's reservation before answering 409 (3 × 200 ms).
	LockRetries       int
	LockRetryInterval time.Duration
	// AutomatedClean runs cleaning on provide and undeploy unless a node
	// overrides it (Ironic's [conductor]automated_clean, default true).
	AutomatedClean *bool
	// PowerStateTimeout bounds the wait for the BMC to report the new
	// state after a power action (60 s).
	PowerStateTimeout time.Duration
	// ShutdownTimeout is how long Run waits for running tasks after its
	// context ends (30 s).
	ShutdownTimeout time.Duration
	// Booter serves network boot for pxe/ipxe boot interfaces; nil means
	// only "fake" boot works.
	Booter Booter
	// Agent talks to deploy agents; nil disables the direct deploy
	// interface.
	Agent Agent
	// Images is the conductor's image cache; nil means agents must fetch
	// images themselves.
	Images ImageCache

	// HeartbeatTimeout is handed to agents at lookup; they beat every
	// 0.3-0.6 of it (Ironic's [api]ramdisk_heartbeat_timeout, 300 s).
	HeartbeatTimeout time.Duration
	// DeployCallbackTimeout and CleanCallbackTimeout fail a deployment or
	// cleaning whose agent went silent (1800 s each); InspectWaitTimeout
	// likewise for inspection.
	DeployCallbackTimeout time.Duration
	CleanCallbackTimeout  time.Duration
	InspectWaitTimeout    time.Duration
	// CheckInterval is how often timeouts are checked (60 s).
	CheckInterval time.Duration
	// PowerSyncInterval is how often power states are compared with the
	// BMCs (120 s; negative disables); PowerSyncMaxFailures puts a node
	// that keeps failing into maintenance (3).
	PowerSyncInterval    time.Duration
	PowerSyncMaxFailures int
	// ProgressInterval is how often the agents of nodes writing an image
	// are asked for their progress (2 s; negative disables).
	ProgressInterval time.Duration
	// CommandPollInterval and CommandWaitTimeout bound the wait for an
	// agent command the conductor waits on (install_bootloader): 1 s and
	// 10 min.
	CommandPollInterval time.Duration
	CommandWaitTimeout  time.Duration
	// PostDeployPowerOffRetries × PostDeployPowerOffInterval is how long
	// tear_down_agent waits for the agent's power off (30 × 1 s: Ironic's 30 s
	// budget, polled more often; a status read costs milliseconds).
	PostDeployPowerOffRetries  int
	PostDeployPowerOffInterval time.Duration
	// CleanStepPriorities overrides the agent's priorities for automated
	// cleaning; 0 disables a step. Default: erase_devices_metadata 99,
	// erase_devices 0 (metadata-only erase, as most operators choose).
	CleanStepPriorities map[string]int
	// LookupLockWait is how long a lookup waits for a node's reservation
	// before answering 409 (2 s).
	LookupLockWait time.Duration
	// MD5Allowed lets agents accept MD5 image checksums.
	MD5Allowed bool
	// ImageDownloadSource is "http" (agents fetch images from their URLs)
	// or "local" (from the conductor's image cache); a node's
	// instance_info or driver_info image_download_source overrides it.
	ImageDownloadSource string
	// ISCSI configures the iscsi deploy interface (iscsi.go).
	ISCSI ISCSIOptions
}

// Engine applies provisioning to nodes.
type Engine struct {
	store   Store
	drivers Drivers
	log     *slog.Logger
	opts    Options
	now     func() time.Time

	tasks    chan task
	inflight sync.WaitGroup
	// progressCursor rotates PollProgress through large fleets.
	progressCursor atomic.Int64
}

type task struct {
	node string
	name string
	run  func(ctx context.Context)
}

// ErrBusy means the conductor has no free worker for a new task (Ironic's
// NoFreeConductorWorker, HTTP 503).
var ErrBusy = errors.New("no free conductor workers")

// New returns an Engine. Call Run to start its workers.
func New(store Store, drivers Drivers, log *slog.Logger, opts Options) *Engine {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Conductor == "" {
		opts.Conductor = "ingot"
	}
	if opts.Workers == 0 {
		opts.Workers = 64
	}
	if opts.QueueSize == 0 {
		opts.QueueSize = 1024
	}
	if opts.LockRetries == 0 {
		opts.LockRetries = 3
	}
	if opts.LockRetryInterval == 0 {
		opts.LockRetryInterval = 200 * time.Millisecond
	}
	if opts.AutomatedClean == nil {
		t := true
		opts.AutomatedClean = &t
	}
	if opts.PowerStateTimeout == 0 {
		opts.PowerStateTimeout = 60 * time.Second
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	defaults := []struct {
		d *time.Duration
		v time.Duration
	}{
		{&opts.HeartbeatTimeout, 300 * time.Second}, {&opts.DeployCallbackTimeout, 1800 * time.Second},
		{&opts.CleanCallbackTimeout, 1800 * time.Second}, {&opts.InspectWaitTimeout, 1800 * time.Second},
		{&opts.CheckInterval, 60 * time.Second}, {&opts.PowerSyncInterval, 120 * time.Second},
		{&opts.CommandPollInterval, time.Second}, {&opts.CommandWaitTimeout, 10 * time.Minute},
		{&opts.PostDeployPowerOffInterval, time.Second}, {&opts.LookupLockWait, 2 * time.Second},
		{&opts.ProgressInterval, 2 * time.Second},
	}
	for _, d := range defaults {
		if *d.d == 0 {
			*d.d = d.v
		}
	}
	if opts.PowerSyncMaxFailures == 0 {
		opts.PowerSyncMaxFailures = 3
	}
	if opts.PostDeployPowerOffRetries == 0 {
		opts.PostDeployPowerOffRetries = 30
	}
	opts.ISCSI.defaults(opts.DeployCallbackTimeout)
	if opts.CleanStepPriorities == nil {
		opts.CleanStepPriorities = map[string]int{stepEraseMetadata: 99, stepEraseDevices: 0}
	}
	return &Engine{
		store:   store,
		drivers: drivers,
		log:     log,
		opts:    opts,
		now:     opts.Now,
		tasks:   make(chan task, opts.QueueSize),
	}
}

// Conductor returns the name this engine reserves nodes under.
func (e *Engine) Conductor() string { return e.opts.Conductor }

// Run executes background tasks until ctx ends. It then stops taking tasks
// and waits up to ShutdownTimeout for running ones, which see their context
// cancelled after that. Call Recover before Run and before serving any
// request.
func (e *Engine) Run(ctx context.Context) error {
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var workers sync.WaitGroup
	for range e.opts.Workers {
		workers.Go(func() {
			for ctx.Err() == nil {
				select {
				case <-ctx.Done():
					return
				case t := <-e.tasks:
					e.runTask(workCtx, t)
				}
			}
		})
	}
	var periodic sync.WaitGroup
	periodic.Go(func() { every(ctx, e.opts.CheckInterval, e.CheckTimeouts) })
	periodic.Go(func() { every(ctx, e.opts.PowerSyncInterval, e.SyncPowerStates) })
	periodic.Go(func() { every(ctx, e.opts.ProgressInterval, e.PollProgress) })
	<-ctx.Done()
	periodic.Wait()
	e.drainQueued(workCtx)
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(e.opts.ShutdownTimeout):
		e.log.Warn("shutdown timeout: cancelling running tasks")
		cancelWork()
		<-done
	}
	e.drainQueued(workCtx)
	return nil
}

// drainQueued drops tasks that never started and frees the reservations
// they were handed; the nodes stay in their current state, which recover
// handles on the next start.
func (e *Engine) drainQueued(ctx context.Context) {
	for {
		select {
		case t := <-e.tasks:
			e.releaseByUUID(context.WithoutCancel(ctx), t.node)
			e.inflight.Done()
		default:
			return
		}
	}
}

func (e *Engine) runTask(ctx context.Context, t task) {
	defer e.inflight.Done()
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("task panicked", "node", t.node, "task", t.name, "panic", r)
			e.releaseByUUID(context.WithoutCancel(ctx), t.node)
		}
	}()
	t.run(ctx)
}

// spawn queues background work for a node whose reservation the caller
// holds; the work must release it.
func (e *Engine) spawn(uuid, name string, run func(ctx context.Context)) error {
	e.inflight.Add(1)
	select {
	case e.tasks <- task{node: uuid, name: name, run: run}:
		return nil
	default:
		e.inflight.Done()
		return node.Errorf(ErrBusy, "Requested action cannot be performed due to lack of free conductor workers.")
	}
}

// startTask runs work in the background on a node this conductor holds;
// the task releases the node when it ends. A task that cannot be queued
// releases the node at once.
func (e *Engine) startTask(ctx context.Context, n *node.Node, name string, work func(ctx context.Context)) error {
	err := e.spawn(n.UUID, name, func(ctx context.Context) {
		defer e.release(context.WithoutCancel(ctx), n)
		work(ctx)
	})
	if err != nil {
		e.release(context.WithoutCancel(ctx), n)
	}
	return err
}

// Wait blocks until no background task is queued or running. Tests use it
// to observe the state a verb ends in.
func (e *Engine) Wait() { e.inflight.Wait() }

// Recover runs once when a conductor starts, before it serves anything: it
// frees reservations a previous run of this conductor left behind and fails
// nodes stuck in a transient state nobody is working on, as Ironic does on
// takeover. Waiting states keep their provision_updated_at, so their
// timeouts still fire.
func (e *Engine) Recover(ctx context.Context) error {
	freed, err := e.store.ReleaseReservations(ctx, e.opts.Conductor)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if freed > 0 {
		e.log.Info("released stale reservations", "count", freed)
	}
	var transient []node.State
	for _, s := range node.States() {
		if provision.Transient(s) {
			transient = append(transient, s)
		}
	}
	stuck, err := e.store.NodesInStates(ctx, transient...)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, n := range stuck {
		if n.Reservation != "" {
			continue // another live conductor is working on it
		}
		msg := fmt.Sprintf("Conductor %s restarted while the node was in state %q; the operation was interrupted.", e.opts.Conductor, n.ProvisionState)
		if err := e.transition(ctx, n, node.EventFail, msg); err != nil {
			e.log.Error("recover: fail interrupted node", "node", n.UUID, "err", err)
			continue
		}
		e.log.Warn("failed interrupted node", "node", n.UUID, "state", n.ProvisionState)
	}
	return nil
}

// get loads a node by UUID or name.
func (e *Engine) get(ctx context.Context, ident string) (*node.Node, error) {
	return e.store.GetNode(ctx, ident)
}

// acquire reserves the node for this conductor, waiting briefly for a held
// reservation. It returns the reserved node; the caller must release it.
// Losing a race for the reservation counts as finding it held.
func (e *Engine) acquire(ctx context.Context, ident string) (*node.Node, error) {
	waits := 0
	for conflicts := 0; ; {
		n, err := e.get(ctx, ident)
		if err != nil {
			return nil, err
		}
		if n.Reservation != "" {
			if waits >= e.opts.LockRetries {
				return nil, &node.LockedError{Node: n.UUID, Holder: n.Reservation}
			}
			waits++
			if err := sleep(ctx, e.opts.LockRetryInterval); err != nil {
				return nil, err
			}
			continue
		}
		err = e.store.SetReservation(ctx, n, e.opts.Conductor)
		if errors.Is(err, node.ErrConflict) && conflicts < 20 {
			conflicts++ // someone wrote the node meanwhile; look again
			continue
		}
		if err != nil {
			return nil, err
		}
		return n, nil
	}
}

// acquireWithin reserves the node, polling for up to wait while another
// task holds it.
func (e *Engine) acquireWithin(ctx context.Context, uuid string, wait time.Duration) (*node.Node, error) {
	deadline := time.Now().Add(wait)
	for {
		n, err := e.get(ctx, uuid)
		if err != nil {
			return nil, err
		}
		if n.Reservation == "" {
			err = e.store.SetReservation(ctx, n, e.opts.Conductor)
			if err == nil {
				return n, nil
			}
			if !errors.Is(err, node.ErrConflict) {
				return nil, err
			}
		}
		if time.Now().After(deadline) {
			holder := n.Reservation
			if holder == "" {
				holder = "another request"
			}
			return nil, &node.LockedError{Node: n.UUID, Holder: holder}
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// release frees a reservation this conductor holds. It tolerates a node
// deleted meanwhile.
func (e *Engine) release(ctx context.Context, n *node.Node) {
	for range 5 {
		if n.Reservation != e.opts.Conductor {
			return
		}
		err := e.store.SetReservation(ctx, n, "")
		if err == nil || errors.Is(err, node.ErrNotFound) {
			return
		}
		if !errors.Is(err, node.ErrConflict) {
			e.log.Error("release reservation", "node", n.UUID, "err", err)
			return
		}
		fresh, gerr := e.store.GetNode(ctx, n.UUID)
		if gerr != nil {
			return
		}
		*n = *fresh
	}
}

func (e *Engine) releaseByUUID(ctx context.Context, uuid string) {
	n, err := e.store.GetNode(ctx, uuid)
	if err != nil {
		return
	}
	e.release(ctx, n)
}

// save persists non-state changes to a node the caller holds or that are
// version-checked.
func (e *Engine) save(ctx context.Context, n *node.Node) error {
	return e.store.UpdateNode(ctx, n)
}

// transition is the one place a provision state changes: it applies ev to
// n, sets the target state, provision_updated_at and last_error (cleared
// when lastError is empty and the new state is not a failure), and saves.
func (e *Engine) transition(ctx context.Context, n *node.Node, ev node.Event, lastError string) error {
	from := n.ProvisionState
	to, err := provision.Next(from, ev)
	if err != nil {
		return &node.TransitionError{Node: n.UUID, Action: string(ev), State: from}
	}
	prev := *n
	n.ProvisionState = to
	n.TargetProvisionState = provision.Target(to)
	if to == node.StateCleaning || to == node.StateCleanWait || to == node.StateCleanFailed {
		// Manual cleaning works towards manageable; keep that target.
		if prev.TargetProvisionState == node.StateManageable {
			n.TargetProvisionState = node.StateManageable
		}
	}
	n.ProvisionUpdatedAt = e.now()
	switch {
	case lastError != "":
		n.LastError = lastError
	case !provision.Failed(to):
		n.LastError = ""
	}
	if err := e.store.UpdateNode(ctx, n); err != nil {
		*n = prev
		return err
	}
	e.log.Info("provision state changed", "node", n.UUID, "from", from, "to", to, "event", ev)
	return nil
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
