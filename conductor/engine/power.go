package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
)

// powerFinal maps a power target to the state the node ends in.
var powerFinal = map[node.PowerState]node.PowerState{
	node.PowerOn:         node.PowerOn,
	node.PowerOff:        node.PowerOff,
	node.PowerReboot:     node.PowerOn,
	node.PowerSoftOff:    node.PowerOff,
	node.PowerSoftReboot: node.PowerOn,
}

// PowerRequest is an operator's power change.
type PowerRequest struct {
	Target node.PowerState
	// Timeout bounds soft power actions; zero uses the engine's default.
	Timeout time.Duration
}

// SetPower changes a node's power state in the background; the node's
// target_power_state shows the change while it runs.
func (e *Engine) SetPower(ctx context.Context, ident string, req PowerRequest) error {
	final, ok := powerFinal[req.Target]
	if !ok {
		return node.Errorf(node.ErrInvalid, "Invalid power state target %q: allowed are power on, power off, rebooting, soft power off, soft rebooting", req.Target)
	}
	n, err := e.get(ctx, ident)
	if err != nil {
		return err
	}
	if _, err := e.drivers.Power(n); err != nil {
		return err
	}
	if n, err = e.acquire(ctx, n.UUID); err != nil {
		return err
	}
	p, err := e.drivers.Power(n)
	if err == nil {
		n.TargetPowerState = final
		err = e.save(ctx, n)
	}
	if err != nil {
		e.release(context.WithoutCancel(ctx), n)
		return err
	}
	return e.startTask(ctx, n, "power", func(ctx context.Context) {
		if err := e.setPower(ctx, n, p, req.Target, req.Timeout); err != nil {
			e.log.Error("power action failed", "node", n.UUID, "err", err)
		}
	})
}

// setPower runs a power action on a node the caller holds, waits for the
// BMC to report the final state, and records the outcome (power_state, or
// last_error on failure). Any power-off or reboot forgets the agent: its
// token and URL die with the ramdisk.
func (e *Engine) setPower(ctx context.Context, n *node.Node, p Power, target node.PowerState, timeout time.Duration) error {
	final := powerFinal[target]
	n.TargetPowerState = final
	err := p.SetPowerState(ctx, target)
	var st node.PowerState
	if err == nil {
		st, err = e.waitPower(ctx, p, final, timeout)
	}
	n.TargetPowerState = ""
	if target != node.PowerOn {
		forgetAgent(n)
	}
	if err != nil {
		n.LastError = fmt.Sprintf("Failed to change power state to '%s' by '%s'. Error: %v", final, target, err)
		if serr := e.save(ctx, n); serr != nil {
			e.log.Error("record power failure", "node", n.UUID, "err", serr)
		}
		return errors.New(n.LastError)
	}
	from := n.PowerState
	n.PowerState = st
	if err := e.save(ctx, n); err != nil {
		return err
	}
	e.log.Info("power state changed", "node", n.UUID, "from", from, "to", st)
	return nil
}

// waitPower polls the power state until it equals want or timeout (the
// engine's PowerStateTimeout if zero) passes.
func (e *Engine) waitPower(ctx context.Context, p Power, want node.PowerState, timeout time.Duration) (node.PowerState, error) {
	if timeout <= 0 {
		timeout = e.opts.PowerStateTimeout
	}
	deadline := time.Now().Add(timeout)
	delay := 50 * time.Millisecond
	for {
		st, err := p.PowerState(ctx)
		if err == nil && st == want {
			return st, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return st, err
			}
			return st, fmt.Errorf("timed out after %s waiting for power state %q, still %q", timeout, want, st)
		}
		if err := sleep(ctx, delay); err != nil {
			return st, err
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// forgetAgent wipes what the conductor knows about a running agent.
func forgetAgent(n *node.Node) {
	for _, k := range []string{"agent_secret_token", "agent_secret_token_pregenerated", "agent_url", "agent_verify_ca"} {
		setInternal(n, k, nil)
	}
}

// SetBootDevice sets a node's next boot device through its management
// interface and records the setting.
func (e *Engine) SetBootDevice(ctx context.Context, ident string, dev BootDevice) error {
	n, err := e.get(ctx, ident)
	if err != nil {
		return err
	}
	m, err := e.drivers.Management(n)
	if err != nil {
		return err
	}
	if !slices.Contains(m.SupportedBootDevices(), dev.Device) {
		return node.Errorf(node.ErrInvalid, "Invalid boot device %s specified, supported are: %s.", dev.Device, strings.Join(m.SupportedBootDevices(), ", "))
	}
	if n, err = e.acquire(ctx, n.UUID); err != nil {
		return err
	}
	defer e.release(context.WithoutCancel(ctx), n)
	if err := e.setBootDevice(ctx, n, dev.Device, dev.Persistent); err != nil {
		return err
	}
	return e.save(ctx, n)
}

// setBootDevice sets a node's next boot device through its management
// interface and records the setting in driver_internal_info (the caller
// saves the node).
func (e *Engine) setBootDevice(ctx context.Context, n *node.Node, device string, persistent bool) error {
	m, err := e.drivers.Management(n)
	if err != nil {
		return err
	}
	if err := m.SetBootDevice(ctx, device, persistent, BootMode(n) == "uefi"); err != nil {
		return fmt.Errorf("set boot device %s of node %s: %w", device, n.UUID, err)
	}
	setInternal(n, "boot_device", map[string]any{"boot_device": device, "persistent": persistent})
	return nil
}

// GetBootDevice reads a node's boot device, falling back to the last
// setting the conductor recorded when the interface cannot tell.
func (e *Engine) GetBootDevice(ctx context.Context, ident string) (*BootDevice, error) {
	n, err := e.get(ctx, ident)
	if err != nil {
		return nil, err
	}
	m, err := e.drivers.Management(n)
	if err != nil {
		return nil, err
	}
	d, persistent, err := m.BootDevice(ctx)
	if errors.Is(err, node.ErrUnsupported) {
		rec, ok := n.DriverInternalInfo["boot_device"].(map[string]any)
		if !ok {
			return nil, nil
		}
		d, _ := rec["boot_device"].(string)
		p, _ := rec["persistent"].(bool)
		return &BootDevice{Device: d, Persistent: p}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get boot device of node %s: %w", n.UUID, err)
	}
	return &BootDevice{Device: d, Persistent: persistent}, nil
}

// SupportedBootDevices lists the boot devices a node's management
// interface can set.
func (e *Engine) SupportedBootDevices(ctx context.Context, ident string) ([]string, error) {
	n, err := e.get(ctx, ident)
	if err != nil {
		return nil, err
	}
	m, err := e.drivers.Management(n)
	if err != nil {
		return nil, err
	}
	return m.SupportedBootDevices(), nil
}

// BootMode returns the boot mode a node deploys in: the node's cached
// boot_mode, else instance_info or properties capabilities, else uefi
// (Ironic's default since 2023.1).
func BootMode(n *node.Node) string {
	if n.BootMode != "" {
		return n.BootMode
	}
	for _, src := range []map[string]any{n.InstanceInfo, n.Properties} {
		if m := capability(src, "boot_mode"); m != "" {
			return m
		}
	}
	return "uefi"
}

// capability reads a capability from a "capabilities" entry, which Ironic
// accepts both as an object and as a "k1:v1,k2:v2" string.
func capability(m map[string]any, key string) string {
	switch c := m["capabilities"].(type) {
	case map[string]any:
		s, _ := c[key].(string)
		return s
	case string:
		for _, kv := range strings.Split(c, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), ":")
			if ok && k == key {
				return v
			}
		}
	}
	return ""
}

// SetMaintenance turns maintenance mode on (with a reason) or off (which
// also clears the reason and any fault).
func (e *Engine) SetMaintenance(ctx context.Context, ident string, on bool, reason string) (*node.Node, error) {
	return e.UpdateNode(ctx, ident, func(n *node.Node) error {
		n.Maintenance = on
		n.MaintenanceReason = reason
		if !on {
			n.MaintenanceReason = ""
			n.Fault = ""
		}
		return nil
	})
}

// ValidateResult is one interface's validation outcome.
type ValidateResult struct {
	Result bool    `json:"result"`
	Reason *string `json:"reason"`
}

// Validate checks every interface of a node, as Ironic's validate API
// does.
func (e *Engine) Validate(ctx context.Context, ident string) (map[string]ValidateResult, error) {
	n, err := e.get(ctx, ident)
	if err != nil {
		return nil, err
	}
	errs := e.drivers.Validate(n)
	if di, derr := e.deployInterface(n); derr != nil {
		errs[node.KindDeploy] = derr
	} else if verr := di.validate(n); verr != nil {
		errs[node.KindDeploy] = verr
	}
	if err := e.validateBoot(n); err != nil {
		errs[node.KindBoot] = err
	}
	out := map[string]ValidateResult{}
	for _, k := range []string{node.KindBoot, node.KindDeploy, node.KindManagement, node.KindNetwork, node.KindPower,
		node.KindBios, node.KindConsole, node.KindInspect, node.KindRaid, node.KindRescue, node.KindStorage} {
		if err := errs[k]; err != nil {
			msg := err.Error()
			out[k] = ValidateResult{Result: false, Reason: &msg}
			continue
		}
		out[k] = ValidateResult{Result: true}
	}
	return out, nil
}

// validateBoot checks what a network boot interface needs.
func (e *Engine) validateBoot(n *node.Node) error {
	if n.Interfaces.Boot == "fake" {
		return nil
	}
	if e.opts.Booter == nil {
		return fmt.Errorf("boot interface %s is not served by this conductor (network boot is not configured)", n.Interfaces.Boot)
	}
	return nil
}
