package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/shared/api"
)

// runInspect inspects a node. "fake" only stamps the times; "agent" is
// Ironic's built-in in-band inspection: the node network-boots the agent
// with an inspection callback (the boot interface adds
// ipa-inspection-callback-url for a node in inspecting) and waits in
// "inspect wait" until ContinueInspection receives the agent's data or
// the inspect wait timeout fails it.
func (e *Engine) runInspect(ctx context.Context, n *node.Node) {
	n.InspectionStartedAt = e.now()
	n.InspectionFinishedAt = time.Time{}
	switch n.Interfaces.Inspect {
	case "fake":
		n.InspectionFinishedAt = e.now()
		e.advance(ctx, n, node.EventDone)
	case "agent":
		if err := (directDeploy{e}).bootAgent(ctx, n); err != nil {
			e.fail(ctx, n, node.EventFail, fmt.Sprintf("Failed to boot the inspection ramdisk of node %s: %v", n.UUID, err))
			return
		}
		e.advance(ctx, n, node.EventWait)
	default:
		e.fail(ctx, n, node.EventFail, fmt.Sprintf("inspect interface %s is not implemented", n.Interfaces.Inspect))
	}
}

// InspectionData is what an agent posts to continue_inspection: IPA's
// inventory and the rest of its collectors' output ("plugin data").
type InspectionData struct {
	Inventory api.Inventory
	// Raw is the whole body as posted; all but "inventory" is kept as
	// the node's plugin data.
	Raw map[string]json.RawMessage
}

// inspectionLookup finds the node inspection data belongs to: by UUID
// when the agent names it, else by the MACs of its interfaces, else by
// its BMC address. Only a node in "inspect wait" matches.
func (e *Engine) inspectionLookup(ctx context.Context, nodeUUID string, d InspectionData) (*node.Node, error) {
	var macs []string
	for _, i := range d.Inventory.Interfaces {
		if mac, err := NormalizeMAC(i.MACAddress); err == nil {
			macs = append(macs, mac)
		}
	}
	notFound := node.Errorf(node.ErrNotFound, "No node in state \"inspect wait\" matches the inspection data (MACs %s).", strings.Join(macs, ","))
	var n *node.Node
	var err error
	switch {
	case nodeUUID != "":
		n, err = e.store.GetNode(ctx, nodeUUID)
	case len(macs) > 0:
		n, err = e.store.NodeByMACs(ctx, macs)
	}
	if n == nil && d.Inventory.BMCAddress != nil && *d.Inventory.BMCAddress != "" {
		waiting, werr := e.store.NodesInStates(ctx, node.StateInspectWait)
		if werr != nil {
			return nil, werr
		}
		for _, w := range waiting {
			if addr, _ := w.DriverInfo["ipmi_address"].(string); addr != "" && addr == *d.Inventory.BMCAddress {
				n, err = w, nil
				break
			}
		}
	}
	if n == nil || (err != nil && errors.Is(err, node.ErrNotFound)) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if n.ProvisionState != node.StateInspectWait {
		return nil, notFound
	}
	return n, nil
}

// ContinueInspection takes an agent's inspection data (POST
// /v1/continue_inspection): it stores the inventory, fills the node's
// properties (cpu_arch, cpus, memory_mb, local_gb) and a port for the
// PXE interface, and then, in the background, powers the node off,
// removes its ramdisk boot and returns it to manageable. A ramdisk that
// reported an error fails the inspection with it.
func (e *Engine) ContinueInspection(ctx context.Context, nodeUUID string, d InspectionData) (*node.Node, error) {
	n, err := e.inspectionLookup(ctx, nodeUUID, d)
	if err != nil {
		return nil, err
	}
	if n, err = e.acquireWithin(ctx, n.UUID, e.opts.LookupLockWait); err != nil {
		return nil, err
	}
	if n.ProvisionState != node.StateInspectWait {
		e.release(context.WithoutCancel(ctx), n)
		return nil, node.Errorf(node.ErrNotFound, "Node %s is no longer waiting for inspection data (state %s).", n.UUID, n.ProvisionState)
	}
	inv, _ := json.Marshal(d.Inventory)
	if raw, ok := d.Raw["inventory"]; ok {
		inv = raw
	}
	plugin := map[string]json.RawMessage{}
	for k, v := range d.Raw {
		if k != "inventory" {
			plugin[k] = v
		}
	}
	pd, _ := json.Marshal(plugin)
	failure := ""
	if raw, ok := d.Raw["error"]; ok {
		var msg string
		if json.Unmarshal(raw, &msg) == nil && msg != "" {
			failure = fmt.Sprintf("Ramdisk reported error: %s", msg)
		}
	}
	if failure == "" {
		if err := e.store.PutInventory(ctx, n.UUID, inv, pd, e.now()); err != nil {
			e.release(context.WithoutCancel(ctx), n)
			return nil, err
		}
		if err := e.applyInventory(ctx, n, d); err != nil {
			failure = fmt.Sprintf("Failed to process the inspection data of node %s: %v", n.UUID, err)
		}
	}
	e.log.Info("inspection data received", "node", n.UUID, "interfaces", len(d.Inventory.Interfaces),
		"disks", len(d.Inventory.Disks), "error", failure)
	err = e.startTask(ctx, n, "inspect", func(ctx context.Context) {
		if err := (directDeploy{e}).tearDownRamdisk(ctx, n); err != nil {
			e.fail(ctx, n, node.EventFail, fmt.Sprintf("Inspection of node %s: could not power it off and remove its ramdisk boot: %v", n.UUID, err))
			return
		}
		if failure != "" {
			e.fail(ctx, n, node.EventFail, failure)
			return
		}
		n.InspectionFinishedAt = e.now()
		e.advance(ctx, n, node.EventDone)
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// applyInventory is Ironic's default processing hooks: properties from
// the inventory (architecture, memory, root disk, cpus) and a port for
// the interface the node PXE-booted from.
func (e *Engine) applyInventory(ctx context.Context, n *node.Node, d InspectionData) error {
	inv := d.Inventory
	if len(inv.Interfaces) == 0 {
		return fmt.Errorf("the inventory has no network interfaces")
	}
	if n.Properties == nil {
		n.Properties = map[string]any{}
	}
	if a := inv.CPU.Architecture; a != "" {
		n.Properties["cpu_arch"] = a
	}
	if inv.CPU.Count > 0 {
		n.Properties["cpus"] = inv.CPU.Count
	}
	switch {
	case inv.Memory.PhysicalMB > 0:
		n.Properties["memory_mb"] = inv.Memory.PhysicalMB
	case inv.Memory.Total > 0:
		n.Properties["memory_mb"] = inv.Memory.Total >> 20
	}
	var root *api.Disk
	if raw, ok := d.Raw["root_disk"]; ok {
		var rd api.Disk
		if json.Unmarshal(raw, &rd) == nil && rd.Size > 0 {
			root = &rd
		}
	}
	if root == nil {
		// IPA's rule: the smallest disk of at least 4 GiB.
		for i, dk := range inv.Disks {
			if dk.Size >= 4<<30 && (root == nil || dk.Size < root.Size) {
				root = &inv.Disks[i]
			}
		}
	}
	if root != nil {
		// Ironic keeps one GiB back for the partition table and rounding.
		n.Properties["local_gb"] = max(root.Size>>30-1, 0)
	}
	if err := e.save(ctx, n); err != nil {
		return err
	}
	pxe := ""
	if inv.Boot.PXEInterface != nil {
		pxe = *inv.Boot.PXEInterface
	}
	if raw, ok := d.Raw["boot_interface"]; ok && pxe == "" {
		var bi string
		if json.Unmarshal(raw, &bi) == nil {
			pxe = strings.TrimPrefix(bi, "01-")
		}
	}
	mac, err := NormalizeMAC(strings.ReplaceAll(pxe, "-", ":"))
	if pxe == "" || err != nil {
		return nil
	}
	ports, err := e.store.PortsOfNode(ctx, n.UUID)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(ports, func(p *node.Port) bool { return p.Address == mac }) {
		return nil
	}
	p := &node.Port{UUID: uuid.NewString(), Address: mac, NodeUUID: n.UUID, PXEEnabled: true}
	if err := e.store.CreatePort(ctx, p); err != nil && !errors.Is(err, node.ErrDuplicate) {
		return fmt.Errorf("create the port of the PXE interface %s: %w", mac, err)
	}
	return nil
}

// Inventory returns what inspection stored for a node (GET
// /v1/nodes/{node}/inventory).
func (e *Engine) Inventory(ctx context.Context, ident string) (inventory, pluginData json.RawMessage, err error) {
	n, err := e.get(ctx, ident)
	if err != nil {
		return nil, nil, err
	}
	return e.store.Inventory(ctx, n.UUID)
}
