// Package power holds the conductor's power and management drivers: the
// interfaces a node's power_interface and management_interface resolve to,
// the in-memory "fake" and "noop" implementations Ironic also ships, and
// the table (built by main) that maps interface names to constructors.
//
// Real BMC protocols live in sub-packages (power/ipmi). Nothing here keeps
// state between calls except what a driver reads from the node.
package power

import (
	"context"
	"fmt"
	"sort"

	"github.com/ingot-dev/ingot/conductor/node"
)

// Controller reads and changes one node's power.
type Controller interface {
	PowerState(ctx context.Context) (node.PowerState, error)
	SetPowerState(ctx context.Context, target node.PowerState) error
}

// BootController reads and sets one node's boot device.
type BootController interface {
	SetBootDevice(ctx context.Context, device string, persistent, uefi bool) error
	BootDevice(ctx context.Context) (device string, persistent bool, err error)
	SupportedBootDevices() []string
}

// Validator reports what a node lacks for a driver; nil means valid.
type Validator func(n *node.Node) error

// PowerDriver builds a Controller for a node.
type PowerDriver struct {
	New      func(n *node.Node) (Controller, error)
	Validate Validator
}

// ManagementDriver builds a BootController for a node.
type ManagementDriver struct {
	New      func(n *node.Node) (BootController, error)
	Validate Validator
}

// Drivers maps interface names to drivers. main builds it as a literal.
type Drivers struct {
	PowerDrivers      map[string]PowerDriver
	ManagementDrivers map[string]ManagementDriver
}

// Power returns the controller for n's power_interface.
func (d *Drivers) Power(n *node.Node) (Controller, error) {
	drv, ok := d.PowerDrivers[n.Interfaces.Power]
	if !ok {
		return nil, node.Errorf(node.ErrInvalid, "power interface %q is not enabled in this conductor (enabled: %v)", n.Interfaces.Power, keys(d.PowerDrivers))
	}
	if drv.Validate != nil {
		if err := drv.Validate(n); err != nil {
			return nil, node.Errorf(node.ErrInvalid, "%v", err)
		}
	}
	return drv.New(n)
}

// Management returns the boot controller for n's management_interface.
func (d *Drivers) Management(n *node.Node) (BootController, error) {
	drv, ok := d.ManagementDrivers[n.Interfaces.Management]
	if !ok {
		return nil, node.Errorf(node.ErrInvalid, "management interface %q is not enabled in this conductor (enabled: %v)", n.Interfaces.Management, keys(d.ManagementDrivers))
	}
	if drv.Validate != nil {
		if err := drv.Validate(n); err != nil {
			return nil, node.Errorf(node.ErrInvalid, "%v", err)
		}
	}
	return drv.New(n)
}

// Validate reports problems with n's power and management interfaces,
// keyed by interface kind.
func (d *Drivers) Validate(n *node.Node) map[string]error {
	out := map[string]error{}
	if drv, ok := d.PowerDrivers[n.Interfaces.Power]; !ok {
		out[node.KindPower] = fmt.Errorf("power interface %q is not enabled in this conductor", n.Interfaces.Power)
	} else if drv.Validate != nil {
		if err := drv.Validate(n); err != nil {
			out[node.KindPower] = err
		}
	}
	if drv, ok := d.ManagementDrivers[n.Interfaces.Management]; !ok {
		out[node.KindManagement] = fmt.Errorf("management interface %q is not enabled in this conductor", n.Interfaces.Management)
	} else if drv.Validate != nil {
		if err := drv.Validate(n); err != nil {
			out[node.KindManagement] = err
		}
	}
	return out
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// AllBootDevices are the boot devices Ironic's ipmitool management knows.
func AllBootDevices() []string {
	return []string{node.BootPXE, node.BootDisk, node.BootCDROM, node.BootBIOS, node.BootSafe}
}

// Fake is Ironic's "fake" power interface: it accepts every request and
// reports the state it was last asked for, starting from what the node
// records (power off if unknown).
type Fake struct{ state node.PowerState }

// NewFake returns a fake controller for n.
func NewFake(n *node.Node) (Controller, error) {
	st := n.PowerState
	if st == node.PowerUnknown || st == node.PowerError {
		st = node.PowerOff
	}
	return &Fake{state: st}, nil
}

// PowerState returns the state last set.
func (f *Fake) PowerState(context.Context) (node.PowerState, error) { return f.state, nil }

// SetPowerState records the final state of target.
func (f *Fake) SetPowerState(_ context.Context, target node.PowerState) error {
	switch target {
	case node.PowerOn, node.PowerReboot, node.PowerSoftReboot:
		f.state = node.PowerOn
	case node.PowerOff, node.PowerSoftOff:
		f.state = node.PowerOff
	default:
		return fmt.Errorf("fake power: unknown target %q", target)
	}
	return nil
}

// NoopManagement is the management interface of hardware with no
// out-of-band boot control ("fake" and "noop"): setting a boot device
// succeeds without effect and reading it is unsupported, so the conductor
// reports the setting it recorded.
type NoopManagement struct{}

// NewNoopManagement returns a no-op boot controller.
func NewNoopManagement(*node.Node) (BootController, error) { return NoopManagement{}, nil }

// SetBootDevice does nothing.
func (NoopManagement) SetBootDevice(context.Context, string, bool, bool) error { return nil }

// BootDevice is unsupported.
func (NoopManagement) BootDevice(context.Context) (string, bool, error) {
	return "", false, node.ErrUnsupported
}

// SupportedBootDevices lists every device: nothing is refused.
func (NoopManagement) SupportedBootDevices() []string { return AllBootDevices() }
