// Package powertest is the contract every power and management driver
// keeps, as a test suite: power on and off are idempotent, the machine is
// on after a reboot, a boot device set for one boot or persistently reads
// back, bad requests are refused with node.ErrInvalid, a hanging BMC
// returns when the context ends, and BMC failures are classified with the
// power package's error classes.
//
// The fake BMC runs it in the unit tier; the IPMI driver runs it against
// an in-process BMC in the unit tier and against OpenIPMI's ipmi_sim in the
// interop tier. It is imported only from tests.
package powertest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power"
)

// Target is one driver under test and handles on the BMC behind it.
type Target struct {
	Power power.Controller
	Boot  power.BootController
	// Hang makes the BMC stop answering until release is called.
	Hang func(t *testing.T) (release func())
	// Break makes the BMC unreachable for the rest of the test (nothing
	// answers any more).
	Break func(t *testing.T)
}

// Caps describes what the BMC behind a driver can do; the zero value
// means everything.
type Caps struct {
	// NoPersistenceReadback: the BMC does not report whether the boot
	// device was set for every boot (ipmi_sim keeps only the device).
	NoPersistenceReadback bool
	// NoSoftPower: the machine ignores ACPI soft power off.
	NoSoftPower bool
	// BootDevices are the devices the BMC accepts; default the driver's
	// SupportedBootDevices.
	BootDevices []string
	// Settle bounds how long a power change may take to show (10 s).
	Settle time.Duration
	// Bound is how long a call may take to return after its context ends
	// (2 s).
	Bound time.Duration
}

// Run runs the contract suite; newTarget builds a fresh driver and BMC for
// each subtest.
func Run(t *testing.T, newTarget func(t *testing.T) Target, caps Caps) {
	if caps.Settle == 0 {
		caps.Settle = 10 * time.Second
	}
	if caps.Bound == 0 {
		caps.Bound = 2 * time.Second
	}
	s := suite{caps: caps}

	t.Run("power on is idempotent", func(t *testing.T) {
		tg := newTarget(t)
		s.set(t, tg, node.PowerOff)
		for range 2 {
			if err := tg.Power.SetPowerState(t.Context(), node.PowerOn); err != nil {
				t.Fatalf("SetPowerState(power on): %v", err)
			}
			s.await(t, tg, node.PowerOn)
		}
	})

	t.Run("power off is idempotent", func(t *testing.T) {
		tg := newTarget(t)
		s.set(t, tg, node.PowerOn)
		for range 2 {
			if err := tg.Power.SetPowerState(t.Context(), node.PowerOff); err != nil {
				t.Fatalf("SetPowerState(power off): %v", err)
			}
			s.await(t, tg, node.PowerOff)
		}
	})

	t.Run("the machine is on after a reboot", func(t *testing.T) {
		tg := newTarget(t)
		for _, from := range []node.PowerState{node.PowerOn, node.PowerOff} {
			s.set(t, tg, from)
			if err := tg.Power.SetPowerState(t.Context(), node.PowerReboot); err != nil {
				t.Fatalf("reboot from %s: %v", from, err)
			}
			s.await(t, tg, node.PowerOn)
		}
	})

	t.Run("soft power off turns the machine off and soft reboot brings it back", func(t *testing.T) {
		if caps.NoSoftPower {
			t.Skip("the machine ignores ACPI soft power off")
		}
		tg := newTarget(t)
		s.set(t, tg, node.PowerOn)
		if err := tg.Power.SetPowerState(t.Context(), node.PowerSoftOff); err != nil {
			t.Fatalf("soft power off: %v", err)
		}
		s.await(t, tg, node.PowerOff)
		s.set(t, tg, node.PowerOn)
		if err := tg.Power.SetPowerState(t.Context(), node.PowerSoftReboot); err != nil {
			t.Fatalf("soft reboot: %v", err)
		}
		s.await(t, tg, node.PowerOn)
	})

	t.Run("an unknown power target is refused and changes nothing", func(t *testing.T) {
		tg := newTarget(t)
		s.set(t, tg, node.PowerOff)
		for _, target := range []node.PowerState{"sideways", node.PowerError, node.PowerUnknown} {
			err := tg.Power.SetPowerState(t.Context(), target)
			if !errors.Is(err, node.ErrInvalid) {
				t.Errorf("SetPowerState(%q) = %v, want node.ErrInvalid", target, err)
			}
		}
		s.await(t, tg, node.PowerOff)
	})

	t.Run("a boot device set for the next boot reads back", func(t *testing.T) {
		tg := newTarget(t)
		for _, dev := range s.devices(tg) {
			s.boot(t, tg, dev, false, false)
		}
	})

	t.Run("a boot device set persistently reads back", func(t *testing.T) {
		tg := newTarget(t)
		for _, dev := range s.devices(tg) {
			s.boot(t, tg, dev, true, false)
		}
	})

	t.Run("a boot device set for UEFI reads back", func(t *testing.T) {
		tg := newTarget(t)
		for _, persistent := range []bool{false, true} {
			for _, dev := range s.devices(tg) {
				s.boot(t, tg, dev, persistent, true)
			}
		}
	})

	t.Run("an unknown boot device is refused and changes nothing", func(t *testing.T) {
		tg := newTarget(t)
		s.boot(t, tg, node.BootDisk, false, false)
		for _, dev := range []string{"floppy", "", "PXE"} {
			if err := tg.Boot.SetBootDevice(t.Context(), dev, false, false); !errors.Is(err, node.ErrInvalid) {
				t.Errorf("SetBootDevice(%q) = %v, want node.ErrInvalid", dev, err)
			}
		}
		got, _, err := tg.Boot.BootDevice(t.Context())
		if err != nil || got != node.BootDisk {
			t.Errorf("BootDevice after refused requests = %q, %v; want %q", got, err, node.BootDisk)
		}
	})

	t.Run("a hanging BMC returns when the context ends", func(t *testing.T) {
		tg := newTarget(t)
		s.set(t, tg, node.PowerOff)
		release := tg.Hang(t)
		defer release()
		calls := []struct {
			name string
			call func(ctx context.Context) error
		}{
			{"PowerState", func(ctx context.Context) error { _, err := tg.Power.PowerState(ctx); return err }},
			{"SetPowerState", func(ctx context.Context) error { return tg.Power.SetPowerState(ctx, node.PowerOn) }},
			{"SetBootDevice", func(ctx context.Context) error {
				return tg.Boot.SetBootDevice(ctx, node.BootPXE, false, false)
			}},
			{"BootDevice", func(ctx context.Context) error { _, _, err := tg.Boot.BootDevice(ctx); return err }},
		}
		for _, c := range calls {
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			start := time.Now()
			err := c.call(ctx)
			took := time.Since(start)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s on a hanging BMC = %v, want an error wrapping context.DeadlineExceeded", c.name, err)
			}
			if took > 200*time.Millisecond+caps.Bound {
				t.Errorf("%s returned %s after its deadline, want within %s", c.name, took-200*time.Millisecond, caps.Bound)
			}
		}
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		if _, err := tg.Power.PowerState(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("PowerState cancelled on a hanging BMC = %v, want context.Canceled", err)
		}
	})

	t.Run("an unreachable BMC fails with a retryable error naming it", func(t *testing.T) {
		tg := newTarget(t)
		tg.Break(t)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := tg.Power.PowerState(ctx)
		if !errors.Is(err, power.ErrUnreachable) || !power.Retryable(err) {
			t.Fatalf("PowerState on an unreachable BMC = %v, want power.ErrUnreachable", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("PowerState gave up only when the test's minute ended: %v", err)
		}
		if err := tg.Power.SetPowerState(ctx, node.PowerOn); !errors.Is(err, power.ErrUnreachable) {
			t.Fatalf("SetPowerState on an unreachable BMC = %v, want power.ErrUnreachable", err)
		}
	})
}

type suite struct{ caps Caps }

func (s suite) devices(tg Target) []string {
	if len(s.caps.BootDevices) > 0 {
		return s.caps.BootDevices
	}
	return tg.Boot.SupportedBootDevices()
}

// set brings the machine to st and waits until the BMC shows it.
func (s suite) set(t *testing.T, tg Target, st node.PowerState) {
	t.Helper()
	if err := tg.Power.SetPowerState(t.Context(), st); err != nil {
		t.Fatalf("SetPowerState(%s): %v", st, err)
	}
	s.await(t, tg, st)
}

// await polls the power state until it equals want or Settle passes.
func (s suite) await(t *testing.T, tg Target, want node.PowerState) {
	t.Helper()
	deadline := time.Now().Add(s.caps.Settle)
	for {
		got, err := tg.Power.PowerState(t.Context())
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("power state = %q, %v after %s; want %q", got, err, s.caps.Settle, want)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// boot sets a boot device and checks what reads back.
func (s suite) boot(t *testing.T, tg Target, dev string, persistent, uefi bool) {
	t.Helper()
	if !slices.Contains(tg.Boot.SupportedBootDevices(), dev) {
		t.Fatalf("boot device %q is not in SupportedBootDevices %v", dev, tg.Boot.SupportedBootDevices())
	}
	if err := tg.Boot.SetBootDevice(t.Context(), dev, persistent, uefi); err != nil {
		t.Fatalf("SetBootDevice(%s, persistent=%v, uefi=%v): %v", dev, persistent, uefi, err)
	}
	got, gotPersistent, err := tg.Boot.BootDevice(t.Context())
	if err != nil {
		t.Fatalf("BootDevice after setting %s: %v", dev, err)
	}
	if got != dev {
		t.Errorf("BootDevice = %q after setting %q (persistent=%v, uefi=%v)", got, dev, persistent, uefi)
	}
	if !s.caps.NoPersistenceReadback && gotPersistent != persistent {
		t.Errorf("BootDevice persistent = %v after setting %s with persistent=%v", gotPersistent, dev, persistent)
	}
}
