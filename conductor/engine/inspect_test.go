package engine_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/node"
)

// newInspect is a manageable node with the agent inspect interface.
func newInspect(t *testing.T, opts engine.Options) *directEnv {
	t.Helper()
	d := newDirect(t, opts)
	if _, err := d.eng.UpdateNode(t.Context(), d.node.UUID, func(n *node.Node) error {
		n.Interfaces.Inspect = "agent"
		n.DriverInfo = map[string]any{"ipmi_address": "192.0.2.77"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d.verb(t, "manage")
	d.expect(t, node.StateManageable)
	return d
}

func inspectionData(t *testing.T, macs []string, extra map[string]any) engine.InspectionData {
	t.Helper()
	var ifaces []any
	for _, m := range macs {
		ifaces = append(ifaces, map[string]any{"name": "eth", "mac_address": m})
	}
	body := map[string]any{
		"inventory": map[string]any{"interfaces": ifaces,
			"cpu":    map[string]any{"count": 4, "architecture": "x86_64"},
			"memory": map[string]any{"total": 8 << 30, "physical_mb": 8192},
			"disks": []any{map[string]any{"name": "/dev/sda", "size": 500 << 30, "serial": "S1"},
				map[string]any{"name": "/dev/sdb", "size": 100 << 30, "serial": "S2"}},
			"boot": map[string]any{"current_boot_mode": "uefi", "pxe_interface": "52:54:00:12:34:59"}},
		"configuration": map[string]any{"collectors": []any{"default"}},
		"error":         nil,
	}
	for k, v := range extra {
		body[k] = v
	}
	b, _ := json.Marshal(body)
	var d engine.InspectionData
	json.Unmarshal(b, &d.Raw)
	if err := json.Unmarshal(d.Raw["inventory"], &d.Inventory); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAgentInspection: inspect boots the agent and waits; the agent's
// data fills the node's properties, is stored whole, adds the PXE port,
// and the node powers off and returns to manageable.
func TestAgentInspection(t *testing.T) {
	d := newInspect(t, engine.Options{})
	d.verb(t, "inspect")
	n := d.expect(t, node.StateInspectWait)
	if n.PowerState != node.PowerOn || n.InspectionStartedAt.IsZero() {
		t.Fatalf("after inspect: power %q started %v", n.PowerState, n.InspectionStartedAt)
	}
	if _, err := d.eng.ContinueInspection(t.Context(), "", inspectionData(t, []string{"aa:bb:cc:dd:ee:ff"}, nil)); err == nil ||
		!strings.Contains(err.Error(), "No node") {
		t.Fatalf("unknown MACs: %v", err)
	}
	got, err := d.eng.ContinueInspection(t.Context(), "", inspectionData(t, []string{"52:54:00:12:34:58", "52:54:00:12:34:59"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got.UUID != d.node.UUID {
		t.Fatalf("matched %s", got.UUID)
	}
	d.eng.Wait()
	n = d.expect(t, node.StateManageable)
	want := map[string]any{"cpu_arch": "x86_64", "cpus": 4.0, "memory_mb": 8192.0, "local_gb": 99.0}
	for k, v := range want {
		if n.Properties[k] != v {
			t.Errorf("properties[%s] = %v (%T), want %v", k, n.Properties[k], n.Properties[k], v)
		}
	}
	if n.PowerState != node.PowerOff || n.InspectionFinishedAt.IsZero() {
		t.Errorf("after inspection: power %q finished %v", n.PowerState, n.InspectionFinishedAt)
	}
	inv, pd, err := d.eng.Inventory(t.Context(), d.node.UUID)
	if err != nil || !strings.Contains(string(inv), `"serial":"S2"`) || !strings.Contains(string(pd), `"collectors"`) || strings.Contains(string(pd), "disks") {
		t.Errorf("inventory %s plugin data %s %v", inv, pd, err)
	}
	ports, _ := d.db.PortsOfNode(t.Context(), d.node.UUID)
	if len(ports) != 2 {
		t.Errorf("ports after inspection: %d, want the PXE interface added", len(ports))
	}
	// Data for a node no longer waiting is refused.
	if _, err := d.eng.ContinueInspection(t.Context(), d.node.UUID, inspectionData(t, []string{"52:54:00:12:34:58"}, nil)); err == nil {
		t.Error("data accepted for a manageable node")
	}
}

func TestAgentInspectionFaults(t *testing.T) {
	t.Run("found by BMC address", func(t *testing.T) {
		d := newInspect(t, engine.Options{})
		d.verb(t, "inspect")
		data := inspectionData(t, []string{"aa:bb:cc:dd:ee:01"}, nil)
		bmc := "192.0.2.77"
		data.Inventory.BMCAddress = &bmc
		if n, err := d.eng.ContinueInspection(t.Context(), "", data); err != nil || n.UUID != d.node.UUID {
			t.Fatalf("%v %v", n, err)
		}
		d.eng.Wait()
		d.expect(t, node.StateManageable)
	})
	t.Run("a ramdisk error fails the inspection and stores nothing", func(t *testing.T) {
		d := newInspect(t, engine.Options{})
		d.verb(t, "inspect")
		if _, err := d.eng.ContinueInspection(t.Context(), d.node.UUID, inspectionData(t, []string{"52:54:00:12:34:58"}, map[string]any{"error": "no disks found"})); err != nil {
			t.Fatal(err)
		}
		d.eng.Wait()
		n := d.expect(t, node.StateInspectFailed)
		if !strings.Contains(n.LastError, "Ramdisk reported error: no disks found") || n.PowerState != node.PowerOff {
			t.Errorf("last_error %q power %q", n.LastError, n.PowerState)
		}
		if _, _, err := d.eng.Inventory(t.Context(), d.node.UUID); err == nil {
			t.Error("an erroring ramdisk's inventory was stored")
		}
	})
	t.Run("fake inspection needs no agent", func(t *testing.T) {
		d := newDirect(t, engine.Options{})
		if _, err := d.eng.UpdateNode(t.Context(), d.node.UUID, func(n *node.Node) error { n.Interfaces.Inspect = "fake"; return nil }); err != nil {
			t.Fatal(err)
		}
		d.verb(t, "manage")
		d.verb(t, "inspect")
		if n := d.expect(t, node.StateManageable); n.InspectionFinishedAt.IsZero() {
			t.Error("no finish time")
		}
	})
	t.Run("inspect wait times out", func(t *testing.T) {
		d := newInspect(t, engine.Options{InspectWaitTimeout: time.Millisecond})
		d.verb(t, "inspect")
		d.expect(t, node.StateInspectWait)
		time.Sleep(20 * time.Millisecond)
		d.eng.CheckTimeouts(t.Context())
		d.eng.Wait()
		if n := d.expect(t, node.StateInspectFailed); !strings.Contains(n.LastError, "Timeout reached while inspecting") || n.PowerState != node.PowerOff {
			t.Errorf("last_error %q power %q: the node must not keep running the agent", n.LastError, n.PowerState)
		}
	})
}
