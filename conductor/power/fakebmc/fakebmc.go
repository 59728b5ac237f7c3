// Package fakebmc is an in-memory BMC for tests and a development mode: it
// implements power.Controller and power.BootController, records every call
// for assertions ("power.SetBootDevice pxe", "power.Cycle"), and has fault
// knobs a real BMC shows in the field: fail the next N calls, hang, report
// the old power state for K polls after a change, ignore a soft power off.
//
// A Fleet hands out one BMC per node (keyed by driver_info ipmi_address,
// else the node's UUID) and builds power.PowerDriver and
// power.ManagementDriver values, so engine tests can put fake BMCs in a
// power.Drivers table and still reach each node's knobs.
//
// It does no I/O and starts no goroutines; every method is safe for
// concurrent use.
package fakebmc

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power"
)

// BMC is one simulated BMC and the machine behind it.
type BMC struct {
	name string

	mu         sync.Mutex
	on         bool
	prevOn     bool // what stale polls report
	stale      int  // polls still to report prevOn
	staleAfter int  // polls to report the old state after each change
	device     string
	persistent bool
	uefi       bool
	ignoreSoft bool
	failN      int
	failErr    error
	hang       time.Duration
	calls      []string
}

// New returns a BMC named name (used in error messages) whose machine is
// off and has no boot device override.
func New(name string) *BMC { return &BMC{name: name} }

// Name is the BMC's name.
func (b *BMC) Name() string { return b.name }

// SetOn sets the machine's power directly, as a test's starting point: it
// is not recorded and does not start a stale window.
func (b *BMC) SetOn(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on, b.prevOn, b.stale = on, on, 0
}

// On reports the machine's real power, whatever polls report.
func (b *BMC) On() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.on
}

// FailNext makes the next n calls (of any method) fail with err, leaving
// the machine unchanged. Use the power package's classes (power.ErrBusy,
// power.ErrUnreachable, ...) to exercise retry decisions.
func (b *BMC) FailNext(n int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failN, b.failErr = n, err
}

// Hang makes every following call wait d before it is served, or return
// the context's error if the context ends first; Hang(0) ends it.
func (b *BMC) Hang(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hang = d
}

// StalePolls makes PowerState report the previous state for k polls after
// each power change, as BMCs that update their status lazily do.
func (b *BMC) StalePolls(k int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.staleAfter = k
}

// IgnoreSoftPowerOff makes the machine ignore ACPI power-button requests
// (soft power off, soft reboot), like an OS that does not listen for them.
func (b *BMC) IgnoreSoftPowerOff(ignore bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ignoreSoft = ignore
}

// Calls returns every call received so far, reads included, in order:
// "power.PowerState", "power.SetPowerState power on", "power.Cycle",
// "power.Reset", "power.SetBootDevice pxe persistent uefi",
// "power.BootDevice".
func (b *BMC) Calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

// Actions returns the calls that ask for a change (Calls without the
// reads), the sequence scenario tests usually assert.
func (b *BMC) Actions() []string {
	var out []string
	for _, c := range b.Calls() {
		if c != callPowerState && c != callBootDevice {
			out = append(out, c)
		}
	}
	return out
}

// Count returns how many calls of method (e.g. "PowerState",
// "SetPowerState") were received, failed ones included.
func (b *BMC) Count(method string) int {
	n := 0
	for _, c := range b.Calls() {
		name, _, _ := strings.Cut(strings.TrimPrefix(c, "power."), " ")
		if name == method {
			n++
		}
	}
	return n
}

// ClearCalls forgets the recorded calls.
func (b *BMC) ClearCalls() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = nil
}

const (
	callPowerState = "power.PowerState"
	callBootDevice = "power.BootDevice"
)

// enter records call, serves the hang and fault knobs, and returns with
// b.mu held on success.
func (b *BMC) enter(ctx context.Context, call string) error {
	b.mu.Lock()
	b.calls = append(b.calls, call)
	hang := b.hang
	b.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fakebmc %s: %s: %w", b.name, call, err)
	}
	if hang > 0 {
		t := time.NewTimer(hang)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("fakebmc %s: %s: %w", b.name, call, ctx.Err())
		case <-t.C:
		}
	}
	b.mu.Lock()
	if b.failN > 0 {
		b.failN--
		err := b.failErr
		b.mu.Unlock()
		return fmt.Errorf("fakebmc %s: %s: %w", b.name, call, err)
	}
	return nil
}

// setLocked changes the machine's power, opening a stale window when the
// state flips. b.mu is held.
func (b *BMC) setLocked(on bool) {
	if on == b.on {
		return
	}
	if b.stale == 0 {
		b.prevOn = b.on
	}
	b.on = on
	b.stale = b.staleAfter
}

func powerOf(on bool) node.PowerState {
	if on {
		return node.PowerOn
	}
	return node.PowerOff
}

// PowerState reports the machine's power, or the previous state while a
// stale window lasts.
func (b *BMC) PowerState(ctx context.Context) (node.PowerState, error) {
	if err := b.enter(ctx, callPowerState); err != nil {
		return node.PowerError, err
	}
	defer b.mu.Unlock()
	if b.stale > 0 {
		b.stale--
		return powerOf(b.prevOn), nil
	}
	return powerOf(b.on), nil
}

// SetPowerState applies target: on, off, rebooting (off then on), soft
// power off and soft rebooting (ignored when IgnoreSoftPowerOff is set).
func (b *BMC) SetPowerState(ctx context.Context, target node.PowerState) error {
	switch target {
	case node.PowerOn, node.PowerOff, node.PowerReboot, node.PowerSoftOff, node.PowerSoftReboot:
	default:
		return node.Errorf(node.ErrInvalid, "fakebmc %s: unknown power target %q", b.name, target)
	}
	if err := b.enter(ctx, "power.SetPowerState "+string(target)); err != nil {
		return err
	}
	defer b.mu.Unlock()
	switch target {
	case node.PowerOn:
		b.setLocked(true)
	case node.PowerOff:
		b.setLocked(false)
	case node.PowerReboot:
		b.setLocked(false)
		b.setLocked(true)
	case node.PowerSoftOff:
		if !b.ignoreSoft {
			b.setLocked(false)
		}
	case node.PowerSoftReboot:
		if !b.ignoreSoft {
			b.setLocked(false)
			b.setLocked(true)
		}
	}
	return nil
}

// Cycle is a chassis power cycle: the machine ends up on.
func (b *BMC) Cycle(ctx context.Context) error {
	if err := b.enter(ctx, "power.Cycle"); err != nil {
		return err
	}
	defer b.mu.Unlock()
	b.setLocked(false)
	b.setLocked(true)
	return nil
}

// Reset is a chassis hard reset: a running machine restarts, an off one
// stays off.
func (b *BMC) Reset(ctx context.Context) error {
	if err := b.enter(ctx, "power.Reset"); err != nil {
		return err
	}
	b.mu.Unlock()
	return nil
}

// SetBootDevice records the boot device override.
func (b *BMC) SetBootDevice(ctx context.Context, device string, persistent, uefi bool) error {
	if !slices.Contains(power.AllBootDevices(), device) {
		return node.Errorf(node.ErrInvalid, "fakebmc %s: unknown boot device %q (supported: %s)", b.name, device, strings.Join(power.AllBootDevices(), ", "))
	}
	call := "power.SetBootDevice " + device
	if persistent {
		call += " persistent"
	}
	if uefi {
		call += " uefi"
	}
	if err := b.enter(ctx, call); err != nil {
		return err
	}
	defer b.mu.Unlock()
	b.device, b.persistent, b.uefi = device, persistent, uefi
	return nil
}

// BootDevice reports the override last set; "" when none was.
func (b *BMC) BootDevice(ctx context.Context) (string, bool, error) {
	if err := b.enter(ctx, callBootDevice); err != nil {
		return "", false, err
	}
	defer b.mu.Unlock()
	return b.device, b.persistent, nil
}

// UEFI reports whether the last boot device was set for UEFI boot.
func (b *BMC) UEFI() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.uefi
}

// SupportedBootDevices lists Ironic's ipmitool boot devices.
func (b *BMC) SupportedBootDevices() []string { return power.AllBootDevices() }

// Fleet hands out one BMC per node.
type Fleet struct {
	mu   sync.Mutex
	bmcs map[string]*BMC
}

// NewFleet returns an empty fleet.
func NewFleet() *Fleet { return &Fleet{bmcs: map[string]*BMC{}} }

// Key names the BMC of n: its driver_info ipmi_address when set, else its
// UUID.
func Key(n *node.Node) string {
	if a, ok := n.DriverInfo["ipmi_address"].(string); ok && a != "" {
		return a
	}
	return n.UUID
}

// BMC returns the BMC called key, creating it (off, no override) on first
// use; tests call it to reach a node's knobs before or after the engine
// does.
func (f *Fleet) BMC(key string) *BMC { return f.get(key, false) }

// For returns n's BMC. A BMC created here starts in the power state the
// node records (off when unknown).
func (f *Fleet) For(n *node.Node) *BMC { return f.get(Key(n), n.PowerState == node.PowerOn) }

func (f *Fleet) get(key string, on bool) *BMC {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.bmcs[key]
	if !ok {
		b = New(key)
		b.on, b.prevOn = on, on
		f.bmcs[key] = b
	}
	return b
}

// PowerDriver builds controllers from this fleet; it accepts every node.
func (f *Fleet) PowerDriver() power.PowerDriver {
	return power.PowerDriver{New: func(n *node.Node) (power.Controller, error) { return f.For(n), nil }}
}

// ManagementDriver builds boot controllers from this fleet; it accepts
// every node.
func (f *Fleet) ManagementDriver() power.ManagementDriver {
	return power.ManagementDriver{New: func(n *node.Node) (power.BootController, error) { return f.For(n), nil }}
}
