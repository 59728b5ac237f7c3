package engine

import (
	"context"
	"errors"
	"net"
	"regexp"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/ingot-dev/ingot/conductor/node"
)

var (
	nameRE           = regexp.MustCompile(`^[a-zA-Z0-9\-._~]+$`)
	conductorGroupRE = regexp.MustCompile(`^[a-zA-Z0-9_\-.]*$`)
	uuidRE           = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)
)

// IsUUID reports whether s looks like a UUID.
func IsUUID(s string) bool { return uuidRE.MatchString(s) }

// CreateOptions tune CreateNode.
type CreateOptions struct {
	// InitialState is enroll unless an old API version asks for available.
	InitialState node.State
}

// CreateNode validates n, fills defaults (UUID, interfaces from the
// hardware type, initial state) and stores it.
func (e *Engine) CreateNode(ctx context.Context, n *node.Node, opts CreateOptions) (*node.Node, error) {
	if n.UUID == "" {
		n.UUID = uuid.NewString()
	} else if !IsUUID(n.UUID) {
		return nil, node.Errorf(node.ErrInvalid, "Expected a UUID but received %s.", n.UUID)
	}
	n.UUID = strings.ToLower(n.UUID)
	if err := e.validateFields(n); err != nil {
		return nil, err
	}
	hw, ok := node.LookupHardwareType(n.Driver)
	if !ok {
		return nil, noValidHost(n.Driver, n.ConductorGroup)
	}
	ifs, err := hw.Resolve(n.Interfaces)
	if err != nil {
		return nil, err
	}
	n.Interfaces = ifs
	n.ProvisionState = opts.InitialState
	if n.ProvisionState == "" {
		n.ProvisionState = node.StateEnroll
	}
	n.TargetProvisionState = ""
	n.Conductor = e.opts.Conductor
	n.Reservation = ""
	if err := e.store.CreateNode(ctx, n); err != nil {
		return nil, err
	}
	e.log.Info("node created", "node", n.UUID, "state", n.ProvisionState)
	return n, nil
}

func noValidHost(driver, group string) error {
	return node.Errorf(node.ErrInvalid, "No valid host was found. Reason: No conductor service registered which supports driver %s for conductor group \"%s\".", driver, group)
}

// validateFields checks the operator-settable fields of n.
func (e *Engine) validateFields(n *node.Node) error {
	if n.Name != "" && (!nameRE.MatchString(n.Name) || IsUUID(n.Name) || len(n.Name) > 255) {
		return node.Errorf(node.ErrInvalid, "Expected a logical name but received %s.", n.Name)
	}
	if n.InstanceUUID != "" && !IsUUID(n.InstanceUUID) {
		return node.Errorf(node.ErrInvalid, "Expected a UUID for instance_uuid but received %s.", n.InstanceUUID)
	}
	if len(n.ResourceClass) > 80 {
		return node.Errorf(node.ErrInvalid, "Value should have a maximum character requirement of 80")
	}
	if len(n.ConductorGroup) > 255 || !conductorGroupRE.MatchString(n.ConductorGroup) {
		return node.Errorf(node.ErrInvalid, "Invalid conductor_group %q: only letters, digits, '_', '-' and '.' are allowed", n.ConductorGroup)
	}
	n.ConductorGroup = strings.ToLower(n.ConductorGroup)
	if len(n.Description) > 4096 {
		return node.Errorf(node.ErrInvalid, "Node description is too long (maximum 4096 characters)")
	}
	if n.Driver == "" {
		return node.Errorf(node.ErrInvalid, "Mandatory field missing: driver")
	}
	return nil
}

// interfaceUpdateStates are the states in which a node's driver and
// interfaces may change (Ironic's rule).
var interfaceUpdateStates = []node.State{node.StateEnroll, node.StateInspecting, node.StateInspectWait,
	node.StateManageable, node.StateAvailable}

// UpdateNode applies mutate to the stored node and saves the result if it
// is valid. mutate runs again on a fresh copy if a concurrent write moved
// the node's version. The node must not be reserved.
func (e *Engine) UpdateNode(ctx context.Context, ident string, mutate func(n *node.Node) error) (*node.Node, error) {
	for attempt := 0; ; attempt++ {
		n, err := e.unlocked(ctx, ident)
		if err != nil {
			return nil, err
		}
		orig := n.Clone()
		if err := mutate(n); err != nil {
			return nil, err
		}
		if err := e.validateUpdate(orig, n); err != nil {
			return nil, err
		}
		err = e.save(ctx, n)
		if errors.Is(err, node.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return n, nil
	}
}

// unlocked loads a node and waits briefly for any reservation on it to be
// released, answering LockedError when it is not.
func (e *Engine) unlocked(ctx context.Context, ident string) (*node.Node, error) {
	for attempt := 0; ; attempt++ {
		n, err := e.get(ctx, ident)
		if err != nil {
			return nil, err
		}
		if n.Reservation == "" {
			return n, nil
		}
		if attempt >= e.opts.LockRetries {
			return nil, &node.LockedError{Node: n.UUID, Holder: n.Reservation}
		}
		if err := sleep(ctx, e.opts.LockRetryInterval); err != nil {
			return nil, err
		}
	}
}

func (e *Engine) validateUpdate(orig, n *node.Node) error {
	if err := e.validateFields(n); err != nil {
		return err
	}
	if n.Driver != orig.Driver || n.Interfaces != orig.Interfaces {
		if !slices.Contains(interfaceUpdateStates, n.ProvisionState) {
			field := "interfaces"
			if n.Driver != orig.Driver {
				field = "driver"
			}
			return node.Errorf(node.ErrConflict, "Node %s can not have %s updated unless it is in one of allowed (%s) states.",
				n.UUID, field, joinStates(interfaceUpdateStates))
		}
		hw, ok := node.LookupHardwareType(n.Driver)
		if !ok {
			return noValidHost(n.Driver, n.ConductorGroup)
		}
		ifs := n.Interfaces
		if n.Driver != orig.Driver {
			// Interfaces the operator did not touch reset to the new
			// hardware type's defaults (Ironic's reset_interfaces).
			for _, k := range node.InterfaceKinds() {
				if ifs.Get(k) == orig.Interfaces.Get(k) && !slices.Contains(hw.Supported[k], ifs.Get(k)) {
					ifs.Set(k, "")
				}
			}
		}
		resolved, err := hw.Resolve(ifs)
		if err != nil {
			return err
		}
		n.Interfaces = resolved
	}
	if orig.InstanceUUID != "" && n.InstanceUUID != "" && n.InstanceUUID != orig.InstanceUUID {
		return node.Errorf(node.ErrConflict, "Node %s is associated with instance %s.", n.UUID, orig.InstanceUUID)
	}
	if n.Protected && !orig.Protected && n.ProvisionState != node.StateActive {
		return node.Errorf(node.ErrConflict, "Node %s can only be made protected in provision state \"active\".", n.UUID)
	}
	if !n.Protected {
		n.ProtectedReason = ""
	}
	if !n.Retired {
		n.RetiredReason = ""
	}
	return nil
}

func joinStates(ss []node.State) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return strings.Join(out, ", ")
}

// deleteAllowedStates are the states a node may be deleted in when not in
// maintenance (Ironic's, with allow_deleting_available_nodes).
var deleteAllowedStates = []node.State{node.StateManageable, node.StateEnroll, node.StateAdoptFailed, node.StateAvailable}

// DeleteNode removes a node and its ports.
func (e *Engine) DeleteNode(ctx context.Context, ident string) error {
	n, err := e.acquire(ctx, ident)
	if err != nil {
		return err
	}
	defer e.release(context.WithoutCancel(ctx), n)
	switch {
	case n.Protected:
		return node.Errorf(node.ErrInvalid, "Node %s is protected and cannot be undeployed, rebuilt or deleted", n.UUID)
	case n.InstanceUUID != "":
		return node.Errorf(node.ErrConflict, "Node %s is associated with instance %s.", n.UUID, n.InstanceUUID)
	case !n.Maintenance && !slices.Contains(deleteAllowedStates, n.ProvisionState):
		return node.Errorf(node.ErrConflict, "Can not delete node \"%s\" while it is in provision state \"%s\". Valid provision states to perform deletion are: \"%s\", or set the node into maintenance mode",
			n.UUID, n.ProvisionState, joinStates(deleteAllowedStates))
	}
	if err := e.cleanUpBoot(ctx, n); err != nil {
		return err
	}
	if err := e.store.DeleteNode(ctx, n.UUID, n.Version); err != nil {
		return err
	}
	n.Reservation = "" // nothing left to release
	e.log.Info("node deleted", "node", n.UUID)
	return nil
}

// cleanUpBoot removes the node's network boot configuration, if its boot
// interface keeps any (none exists without network boot services).
func (e *Engine) cleanUpBoot(ctx context.Context, n *node.Node) error {
	if e.opts.Booter == nil {
		return nil
	}
	return e.networkBoot(ctx, n, "clean up boot configuration of node "+n.UUID, Booter.CleanUp)
}

// NormalizeMAC validates a MAC address and returns it lower-case with
// colons, or an ErrInvalid error in Ironic's wording.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", node.Errorf(node.ErrInvalid, "Expected a MAC address but received %s.", s)
	}
	return hw.String(), nil
}

// CreatePort validates and stores a port of an existing, unreserved node.
func (e *Engine) CreatePort(ctx context.Context, p *node.Port) (*node.Port, error) {
	if p.UUID == "" {
		p.UUID = uuid.NewString()
	} else if !IsUUID(p.UUID) {
		return nil, node.Errorf(node.ErrInvalid, "Expected a UUID but received %s.", p.UUID)
	}
	p.UUID = strings.ToLower(p.UUID)
	if _, err := e.checkPort(ctx, p); err != nil {
		return nil, err
	}
	if err := e.store.CreatePort(ctx, p); err != nil {
		return nil, err
	}
	return p, nil
}

// checkPort normalizes a port's MAC and checks its node exists and is not
// reserved; it returns the node.
func (e *Engine) checkPort(ctx context.Context, p *node.Port) (*node.Node, error) {
	mac, err := NormalizeMAC(p.Address)
	if err != nil {
		return nil, err
	}
	p.Address = mac
	if !IsUUID(p.NodeUUID) {
		return nil, node.Errorf(node.ErrInvalid, "Expected a UUID for node_uuid but received %s.", p.NodeUUID)
	}
	n, err := e.unlocked(ctx, p.NodeUUID)
	if err != nil {
		return nil, err
	}
	p.NodeUUID = n.UUID
	return n, nil
}

// busyStates are the states in which a node's ports carry live boot or
// network configuration; their MAC addresses may not change then.
var busyStates = []node.State{node.StateActive, node.StateDeploying, node.StateDeployWait,
	node.StateCleaning, node.StateCleanWait, node.StateInspecting, node.StateInspectWait}

// UpdatePort applies mutate to a stored port and saves it.
func (e *Engine) UpdatePort(ctx context.Context, uuid string, mutate func(p *node.Port) error) (*node.Port, error) {
	for attempt := 0; ; attempt++ {
		p, err := e.store.GetPort(ctx, uuid)
		if err != nil {
			return nil, err
		}
		orig := p.Clone()
		if err := mutate(p); err != nil {
			return nil, err
		}
		n, err := e.checkPort(ctx, p)
		if err != nil {
			return nil, err
		}
		if p.Address != orig.Address && !n.Maintenance && slices.Contains(busyStates, n.ProvisionState) {
			return nil, node.Errorf(node.ErrConflict, "Cannot update hardware address for port %s as it is attached to node %s in state %q; set the node into maintenance mode first.",
				p.UUID, n.UUID, n.ProvisionState)
		}
		err = e.store.UpdatePort(ctx, p)
		if errors.Is(err, node.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return p, nil
	}
}

// DeletePort removes a port whose node is not reserved.
func (e *Engine) DeletePort(ctx context.Context, uuid string) error {
	p, err := e.store.GetPort(ctx, uuid)
	if err != nil {
		return err
	}
	if _, err := e.unlocked(ctx, p.NodeUUID); err != nil {
		return err
	}
	return e.store.DeletePort(ctx, p.UUID)
}
