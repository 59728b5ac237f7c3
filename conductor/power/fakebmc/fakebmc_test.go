package fakebmc_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power"
	"github.com/ingot-dev/ingot/conductor/power/fakebmc"
	"github.com/ingot-dev/ingot/conductor/power/powertest"
)

func TestContract(t *testing.T) {
	t.Run("prompt BMC", func(t *testing.T) { contract(t, 0) })
	t.Run("BMC reporting the old state for 3 polls", func(t *testing.T) { contract(t, 3) })
}

func contract(t *testing.T, stale int) {
	powertest.Run(t, func(t *testing.T) powertest.Target {
		b := fakebmc.New("bmc-1")
		b.StalePolls(stale)
		return powertest.Target{
			Power: b,
			Boot:  b,
			Hang: func(*testing.T) func() {
				b.Hang(time.Hour)
				return func() { b.Hang(0) }
			},
			Break: func(*testing.T) { b.FailNext(1<<30, power.ErrUnreachable) },
		}
	}, powertest.Caps{})
}

func TestFailNext(t *testing.T) {
	ctx := t.Context()
	b := fakebmc.New("bmc-1")
	b.FailNext(2, power.ErrBusy)
	for i := range 2 {
		err := b.SetPowerState(ctx, node.PowerOn)
		if !errors.Is(err, power.ErrBusy) || !power.Retryable(err) {
			t.Fatalf("call %d = %v, want power.ErrBusy", i, err)
		}
		if b.On() {
			t.Fatalf("a failed call changed the machine")
		}
	}
	if err := b.SetPowerState(ctx, node.PowerOn); err != nil {
		t.Fatalf("third call = %v, want success", err)
	}
	if !b.On() {
		t.Fatal("machine is off after a successful power on")
	}
	if got := b.Count("SetPowerState"); got != 3 {
		t.Errorf("Count(SetPowerState) = %d, want 3 (failed calls count)", got)
	}
}

func TestStalePolls(t *testing.T) {
	ctx := t.Context()
	b := fakebmc.New("bmc-1")
	b.StalePolls(2)
	if err := b.SetPowerState(ctx, node.PowerOn); err != nil {
		t.Fatal(err)
	}
	var got []node.PowerState
	for range 4 {
		st, err := b.PowerState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, st)
	}
	want := []node.PowerState{node.PowerOff, node.PowerOff, node.PowerOn, node.PowerOn}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("polls after power on (-want +got):\n%s", diff)
	}
	// A reboot flips twice inside one window: polls report the state
	// before the reboot, then the final one.
	if err := b.SetPowerState(ctx, node.PowerReboot); err != nil {
		t.Fatal(err)
	}
	st, _ := b.PowerState(ctx)
	if st != node.PowerOn {
		t.Errorf("stale poll after reboot from on = %q, want the old state %q", st, node.PowerOn)
	}
}

func TestHangHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := fakebmc.New("bmc-1")
		b.Hang(time.Minute)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		_, err := b.PowerState(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("PowerState = %v, want context.DeadlineExceeded", err)
		}
		if took := time.Since(start); took != time.Second {
			t.Errorf("returned after %s, want 1s", took)
		}
		// Without a deadline the call is served after the hang.
		start = time.Now()
		if err := b.SetPowerState(t.Context(), node.PowerOn); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != time.Minute {
			t.Errorf("hung call served after %s, want 1m", took)
		}
	})
}

func TestIgnoreSoftPowerOff(t *testing.T) {
	ctx := t.Context()
	b := fakebmc.New("bmc-1")
	b.SetOn(true)
	b.IgnoreSoftPowerOff(true)
	if err := b.SetPowerState(ctx, node.PowerSoftOff); err != nil {
		t.Fatal(err)
	}
	if !b.On() {
		t.Error("soft power off turned off a machine that ignores ACPI")
	}
	if err := b.SetPowerState(ctx, node.PowerOff); err != nil || b.On() {
		t.Errorf("hard power off = %v, on=%v; want off", err, b.On())
	}
}

func TestCallsAndActions(t *testing.T) {
	ctx := t.Context()
	b := fakebmc.New("bmc-1")
	_ = b.SetBootDevice(ctx, node.BootPXE, false, true)
	_, _ = b.PowerState(ctx)
	_ = b.Cycle(ctx)
	_ = b.Reset(ctx)
	_ = b.SetBootDevice(ctx, node.BootDisk, true, false)
	_, _, _ = b.BootDevice(ctx)
	_ = b.SetPowerState(ctx, node.PowerOff)
	wantActions := []string{
		"power.SetBootDevice pxe uefi",
		"power.Cycle",
		"power.Reset",
		"power.SetBootDevice disk persistent",
		"power.SetPowerState power off",
	}
	if diff := cmp.Diff(wantActions, b.Actions()); diff != "" {
		t.Errorf("Actions (-want +got):\n%s", diff)
	}
	if got := len(b.Calls()); got != 7 {
		t.Errorf("len(Calls) = %d, want 7", got)
	}
	b.ClearCalls()
	if got := b.Calls(); len(got) != 0 {
		t.Errorf("Calls after ClearCalls = %v", got)
	}
	if b.On() {
		t.Error("machine on after the final power off")
	}
}

func TestFleet(t *testing.T) {
	f := fakebmc.NewFleet()
	drivers := &power.Drivers{
		PowerDrivers:      map[string]power.PowerDriver{"ipmitool": f.PowerDriver()},
		ManagementDrivers: map[string]power.ManagementDriver{"ipmitool": f.ManagementDriver()},
	}
	byAddr := &node.Node{UUID: "u-1", Interfaces: node.Interfaces{Power: "ipmitool", Management: "ipmitool"},
		DriverInfo: map[string]any{"ipmi_address": "10.0.0.7"}, PowerState: node.PowerOn}
	byUUID := &node.Node{UUID: "u-2", Interfaces: node.Interfaces{Power: "ipmitool", Management: "ipmitool"}}

	f.BMC("10.0.0.7").FailNext(1, power.ErrBusy) // knobs reachable before the engine builds a driver
	p, err := drivers.Power(byAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PowerState(t.Context()); !errors.Is(err, power.ErrBusy) {
		t.Fatalf("first poll = %v, want the injected power.ErrBusy", err)
	}
	if st, err := p.PowerState(t.Context()); err != nil || st != node.PowerOff {
		t.Errorf("BMC configured before first use = %q, %v; want its own state (off)", st, err)
	}
	m, err := drivers.Management(byUUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetBootDevice(t.Context(), node.BootPXE, false, false); err != nil {
		t.Fatal(err)
	}
	if got := f.BMC("u-2").Actions(); !cmp.Equal(got, []string{"power.SetBootDevice pxe"}) {
		t.Errorf("actions of the node keyed by UUID = %v", got)
	}
	fresh := &node.Node{UUID: "u-3", PowerState: node.PowerOn}
	if !f.For(fresh).On() {
		t.Error("a BMC created for a node recorded as on starts off")
	}
	if f.For(fresh) != f.BMC("u-3") {
		t.Error("For and BMC return different BMCs for one node")
	}
}
