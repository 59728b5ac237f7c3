package engine

import (
	"context"
	"fmt"
	"slices"

	"github.com/ingot-dev/ingot/conductor/configdrive"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/provision"
	sharedcd "github.com/ingot-dev/ingot/shared/configdrive"
)

// ProvisionRequest is an operator's provision verb (the body of PUT
// /v1/nodes/{id}/states/provision).
type ProvisionRequest struct {
	Target      string
	ConfigDrive any
	CleanSteps  []map[string]any
	DeploySteps []map[string]any
}

// Provision verbs as the API spells them, mapped to state machine events.
var verbEvents = map[string]node.Event{
	"active":   node.EventDeploy,
	"deploy":   node.EventDeploy,
	"rebuild":  node.EventRebuild,
	"deleted":  node.EventDelete,
	"undeploy": node.EventDelete,
	"manage":   node.EventManage,
	"provide":  node.EventProvide,
	"inspect":  node.EventInspect,
	"abort":    node.EventAbort,
	"clean":    node.EventClean,
	"adopt":    node.EventAdopt,
}

// VerbEvent returns the event a provision target verb maps to.
func VerbEvent(target string) (node.Event, bool) {
	ev, ok := verbEvents[target]
	return ev, ok
}

// cleanInterfaces are the interfaces a clean step may name.
var cleanInterfaces = []string{"deploy", "power", "management", "bios", "raid", "firmware"}

// ValidateSteps checks a list of clean or deploy steps as Ironic's JSON
// schema does: objects with a known interface, a step name and optional
// args.
func ValidateSteps(kind string, steps []map[string]any) error {
	for i, s := range steps {
		iface, _ := s["interface"].(string)
		step, _ := s["step"].(string)
		if !slices.Contains(cleanInterfaces, iface) {
			return node.Errorf(node.ErrInvalid, "Invalid %s_steps: step %d: 'interface' must be one of %v", kind, i, cleanInterfaces)
		}
		if step == "" {
			return node.Errorf(node.ErrInvalid, "Invalid %s_steps: step %d: 'step' is a required non-empty string", kind, i)
		}
		for k, v := range s {
			switch k {
			case "interface", "step":
			case "args":
				if _, ok := v.(map[string]any); !ok && v != nil {
					return node.Errorf(node.ErrInvalid, "Invalid %s_steps: step %d: 'args' must be an object", kind, i)
				}
			case "priority":
				if _, ok := v.(float64); !ok || kind != "deploy" {
					return node.Errorf(node.ErrInvalid, "Invalid %s_steps: step %d: unexpected 'priority'", kind, i)
				}
			default:
				return node.Errorf(node.ErrInvalid, "Invalid %s_steps: step %d: additional property %q is not allowed", kind, i, k)
			}
		}
	}
	return nil
}

// maintenanceBlocked lists the verbs refused while a node is in
// maintenance.
var maintenanceBlocked = []node.Event{node.EventDeploy, node.EventRebuild, node.EventClean,
	node.EventInspect, node.EventProvide, node.EventAdopt}

// Provision applies an operator verb to a node: it checks the verb against
// the node's state and drivers, persists the first transition, and runs the
// rest of the work in the background (the API answers 202 meanwhile). A
// rejected verb writes nothing.
func (e *Engine) Provision(ctx context.Context, ident string, req ProvisionRequest) error {
	ev, ok := VerbEvent(req.Target)
	if !ok {
		return node.Errorf(node.ErrInvalid, "The requested action \"%s\" could not be understood.", req.Target)
	}
	// Check on a plain read first, so a refused verb takes no lock.
	n, err := e.get(ctx, ident)
	if err != nil {
		return err
	}
	if _, err := e.checkProvision(ctx, n, ev, req); err != nil {
		return err
	}
	if n, err = e.acquire(ctx, n.UUID); err != nil {
		return err
	}
	di, err := e.beginProvision(ctx, n, ev, req)
	if err != nil {
		e.release(context.WithoutCancel(ctx), n)
		return err
	}
	flow := e.flowFor(n, ev, di)
	if flow == nil {
		e.release(context.WithoutCancel(ctx), n)
		return nil // a transition with no work, e.g. available -> manageable
	}
	return e.startTask(ctx, n, req.Target, func(ctx context.Context) { flow(ctx, n) })
}

// beginProvision re-checks a verb on the node now held, applies the
// request's data and persists the verb's first transition.
func (e *Engine) beginProvision(ctx context.Context, n *node.Node, ev node.Event, req ProvisionRequest) (deployer, error) {
	// The node may have moved between the unlocked check and the lock.
	di, err := e.checkProvision(ctx, n, ev, req)
	if err != nil {
		return nil, err
	}
	switch ev {
	case node.EventDeploy, node.EventRebuild:
		if req.ConfigDrive != nil {
			cd := req.ConfigDrive
			if obj, ok := cd.(map[string]any); ok {
				// The object form becomes the image the agent writes, as
				// Ironic builds it before a deploy.
				packed, err := configdrive.Build(configdrive.Node{UUID: n.UUID, Name: n.Name}, obj, "")
				if err != nil {
					return nil, node.Errorf(node.ErrInvalid, "Cannot build a config drive for node %s: %v", n.UUID, err)
				}
				cd = packed
			} else if str, ok := cd.(string); ok && !sharedcd.IsURL(str) {
				// Checked here so a bad drive fails the request, not the
				// deploy after the agent has booted.
				if _, err := sharedcd.Decode([]byte(str)); err != nil {
					return nil, node.Errorf(node.ErrInvalid, "Invalid configdrive for node %s: %v", n.UUID, err)
				}
			}
			if n.InstanceInfo == nil {
				n.InstanceInfo = map[string]any{}
			}
			n.InstanceInfo["configdrive"] = cd
		}
		setInternal(n, "user_deploy_steps", stepsValue(req.DeploySteps))
	case node.EventClean:
		setInternal(n, "clean_steps", stepsValue(req.CleanSteps))
		n.TargetProvisionState = node.StateManageable
	case node.EventProvide:
		setInternal(n, "clean_steps", nil)
	}
	msg := ""
	if ev == node.EventAbort {
		msg = fmt.Sprintf("Aborted by operator while in state \"%s\".", n.ProvisionState)
	}
	return di, e.transition(ctx, n, ev, msg)
}

// checkProvision validates a verb against a node without changing it, and
// returns the node's deploy interface.
func (e *Engine) checkProvision(ctx context.Context, n *node.Node, ev node.Event, req ProvisionRequest) (deployer, error) {
	if !provision.Allowed(n.ProvisionState, ev) {
		return nil, &node.TransitionError{Node: n.UUID, Action: req.Target, State: n.ProvisionState}
	}
	if n.Maintenance && slices.Contains(maintenanceBlocked, ev) {
		return nil, node.Errorf(node.ErrInvalid, "The %s operation can't be performed on node %s because it's in maintenance mode.", req.Target, n.UUID)
	}
	if n.Protected && (ev == node.EventRebuild || ev == node.EventDelete) {
		return nil, node.Errorf(node.ErrInvalid, "Node %s is protected and cannot be undeployed, rebuilt or deleted", n.UUID)
	}
	di, err := e.deployInterface(n)
	if err != nil && ev != node.EventManage && ev != node.EventAbort {
		return nil, err
	}
	switch ev {
	case node.EventDeploy, node.EventRebuild:
		if err := e.validateForDeploy(ctx, n, di); err != nil {
			return nil, err
		}
	case node.EventClean:
		if len(req.CleanSteps) == 0 {
			return nil, node.Errorf(node.ErrInvalid, "clean_steps is required when setting target provision state to clean")
		}
		if err := ValidateSteps("clean", req.CleanSteps); err != nil {
			return nil, err
		}
	case node.EventInspect:
		if n.Interfaces.Inspect == "no-inspect" {
			return nil, node.Errorf(node.ErrInvalid, "Driver %s does not support inspect (disabled or not implemented).", n.Driver)
		}
	case node.EventManage:
		if n.ProvisionState == node.StateEnroll {
			if err := e.validatePower(n); err != nil {
				return nil, node.Errorf(node.ErrInvalid, "Failed to validate power driver interface for node %s. Error: %v", n.UUID, err)
			}
		}
	}
	return di, nil
}

func stepsValue(steps []map[string]any) any {
	if len(steps) == 0 {
		return nil
	}
	out := make([]any, len(steps))
	for i, s := range steps {
		out[i] = node.CloneMap(s)
	}
	return out
}

// setInternal sets (or, for nil, deletes) a driver_internal_info key.
func setInternal(n *node.Node, key string, v any) {
	if v == nil {
		delete(n.DriverInternalInfo, key)
		return
	}
	if n.DriverInternalInfo == nil {
		n.DriverInternalInfo = map[string]any{}
	}
	n.DriverInternalInfo[key] = v
}

// flowFor returns the background work that follows ev, or nil.
func (e *Engine) flowFor(n *node.Node, ev node.Event, di deployer) func(context.Context, *node.Node) {
	switch n.ProvisionState {
	case node.StateVerifying:
		return e.runVerify
	case node.StateDeploying:
		return func(ctx context.Context, n *node.Node) { e.runDeploy(ctx, n, di, ev == node.EventRebuild) }
	case node.StateDeleting:
		return func(ctx context.Context, n *node.Node) { e.runUndeploy(ctx, n, di) }
	case node.StateCleaning:
		return func(ctx context.Context, n *node.Node) { e.runClean(ctx, n, di) }
	case node.StateInspecting:
		return e.runInspect
	case node.StateAdopting:
		return func(ctx context.Context, n *node.Node) { e.runAdopt(ctx, n, di) }
	}
	if ev == node.EventAbort {
		return func(ctx context.Context, n *node.Node) { e.runAbortCleanup(ctx, n, di) }
	}
	return nil
}

// fail moves a node along its fail edge with a message, logging (not
// returning) a failure to persist, as background work has nobody to tell.
func (e *Engine) fail(ctx context.Context, n *node.Node, ev node.Event, msg string) {
	e.log.Error("provisioning failed", "node", n.UUID, "state", n.ProvisionState, "err", msg)
	if err := e.transition(ctx, n, ev, msg); err != nil {
		e.log.Error("record failure", "node", n.UUID, "err", err)
	}
}

func (e *Engine) advance(ctx context.Context, n *node.Node, ev node.Event) bool {
	if err := e.transition(ctx, n, ev, ""); err != nil {
		e.log.Error("advance provisioning", "node", n.UUID, "event", ev, "err", err)
		return false
	}
	return true
}

// runVerify checks that the conductor can control the node's power.
func (e *Engine) runVerify(ctx context.Context, n *node.Node) {
	p, err := e.drivers.Power(n)
	if err == nil {
		var st node.PowerState
		if st, err = p.PowerState(ctx); err == nil {
			n.PowerState = st
		}
	}
	if err != nil {
		e.fail(ctx, n, node.EventFail, fmt.Sprintf("Failed to get power state for node %s. Error: %v", n.UUID, err))
		return
	}
	e.advance(ctx, n, node.EventDone)
}

// runDeploy runs the deploy interface; it ends in active, wait call-back,
// or deploy failed.
func (e *Engine) runDeploy(ctx context.Context, n *node.Node, di deployer, rebuild bool) {
	if rebuild {
		if err := di.tearDown(ctx, n); err != nil {
			e.fail(ctx, n, node.EventFail, fmt.Sprintf("Failed to tear down node %s before rebuild: %v", n.UUID, err))
			return
		}
	}
	ev, err := di.deploy(ctx, n)
	if err != nil {
		e.fail(ctx, n, node.EventFail, fmt.Sprintf("Deploy step deploy.deploy failed on node %s. %v", n.UUID, err))
		return
	}
	if ev == node.EventDone {
		n.DeployStep = nil
		setInternal(n, "user_deploy_steps", nil)
	}
	e.advance(ctx, n, ev)
}

// runUndeploy tears the instance down, forgets it, and moves on to
// automated cleaning.
func (e *Engine) runUndeploy(ctx context.Context, n *node.Node, di deployer) {
	if err := di.tearDown(ctx, n); err != nil {
		e.fail(ctx, n, node.EventFail, fmt.Sprintf("Error while tearing down node %s: %v", n.UUID, err))
		return
	}
	n.InstanceInfo = nil
	n.InstanceUUID = ""
	n.DeployStep = nil
	for _, k := range []string{"is_whole_disk_image", "root_uuid_or_disk_id", "deploy_steps", "deploy_step_index", "user_deploy_steps"} {
		setInternal(n, k, nil)
	}
	if !e.advance(ctx, n, node.EventClean) {
		return
	}
	e.runClean(ctx, n, di)
}

// automatedClean reports whether cleaning runs on provide and undeploy.
func (e *Engine) automatedClean(n *node.Node) bool {
	if n.AutomatedClean != nil {
		return *n.AutomatedClean
	}
	return *e.opts.AutomatedClean
}

// runClean runs automated cleaning (target available) or the operator's
// manual clean steps (target manageable).
func (e *Engine) runClean(ctx context.Context, n *node.Node, di deployer) {
	manual := n.TargetProvisionState == node.StateManageable
	doneEv := node.EventDone
	if manual {
		doneEv = node.EventManage
	}
	if !manual && !e.automatedClean(n) {
		e.log.Info("automated cleaning disabled", "node", n.UUID)
		e.advance(ctx, n, doneEv)
		return
	}
	ev, err := di.clean(ctx, n, manual)
	if err != nil {
		e.fail(ctx, n, node.EventFail, fmt.Sprintf("Failed to prepare node %s for cleaning: %v", n.UUID, err))
		return
	}
	if ev == node.EventDone {
		n.CleanStep = nil
		setInternal(n, "clean_steps", nil)
		ev = doneEv
	}
	e.advance(ctx, n, ev)
}

// runAdopt takes over a node deployed by other means.
func (e *Engine) runAdopt(ctx context.Context, n *node.Node, di deployer) {
	if err := di.validate(n); err != nil {
		e.fail(ctx, n, node.EventFail, fmt.Sprintf("Error while attempting to adopt node %s: %v", n.UUID, err))
		return
	}
	e.advance(ctx, n, node.EventDone)
}

// runAbortCleanup undoes what an aborted wait left behind: the agent's
// ramdisk boot configuration and its power.
func (e *Engine) runAbortCleanup(ctx context.Context, n *node.Node, di deployer) {
	if di == nil {
		return
	}
	if err := di.abort(ctx, n); err != nil {
		e.log.Error("clean up after abort", "node", n.UUID, "err", err)
		n.LastError = fmt.Sprintf("Aborted; cleaning up afterwards failed: %v", err)
		if err := e.save(ctx, n); err != nil {
			e.log.Error("record abort cleanup failure", "node", n.UUID, "err", err)
		}
	}
}
