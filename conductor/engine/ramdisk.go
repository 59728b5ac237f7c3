package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/shared/api"
)

// lookupStates are the states in which lookup answers ([api]restrict_lookup):
// only nodes whose agent is expected.
var lookupStates = []node.State{node.StateDeploying, node.StateDeployWait, node.StateCleaning,
	node.StateCleanWait, node.StateInspecting, node.StateInspectWait}

// heartbeatStates accept heartbeats and act on them; recordStates only
// record them.
var (
	heartbeatStates = []node.State{node.StateDeployWait, node.StateCleanWait}
	recordStates    = []node.State{node.StateDeploying, node.StateCleaning, node.StateInspecting, node.StateInspectWait}
)

// LookupResult is what a lookup hands the agent.
type LookupResult struct {
	Node *node.Node
	// Token is the agent token: minted now, MaskedToken when one was
	// handed out before, empty when the request's version mints none.
	Token string
}

// Lookup finds the node an agent runs on, by node UUID or by its ports'
// MAC addresses, and (mint) hands out the node's agent token. The token is
// returned only once; a second lookup while an agent already heartbeats
// means the ramdisk restarted mid-operation, so the operation fails at
// once instead of waiting for its timeout.
func (e *Engine) Lookup(ctx context.Context, macs []string, nodeUUID string, mint bool) (*LookupResult, error) {
	notFound := node.Errorf(node.ErrNotFound, "Node could not be found. Check that a port with one of the addresses %s is registered and that the node is in a state that allows lookup (%s).",
		strings.Join(macs, ","), joinStates(lookupStates))
	var n *node.Node
	var err error
	if nodeUUID != "" {
		n, err = e.store.GetNode(ctx, nodeUUID)
	} else {
		n, err = e.store.NodeByMACs(ctx, macs)
	}
	if errors.Is(err, node.ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if !slices.Contains(lookupStates, n.ProvisionState) {
		return nil, notFound
	}
	if !mint {
		return &LookupResult{Node: n}, nil
	}
	// Minting needs the node's lock. The usual holder is the task that just
	// powered the node on, about to move it to "wait call-back": wait a
	// moment for it rather than answering 409 at once, which costs the
	// agent a 5 s pause (IPA's rule).
	if n, err = e.acquireWithin(ctx, n.UUID, e.opts.LookupLockWait); err != nil {
		return nil, err
	}
	defer e.release(context.WithoutCancel(ctx), n)
	if !slices.Contains(lookupStates, n.ProvisionState) {
		return nil, notFound
	}
	if tok, _ := n.DriverInternalInfo[diAgentToken].(string); tok != "" {
		if _, heartbeating := n.DriverInternalInfo[diAgentURL]; heartbeating {
			e.agentRestarted(ctx, n)
		}
		return &LookupResult{Node: n, Token: api.MaskedToken}, nil
	}
	tok := newToken()
	setInternal(n, diAgentToken, tok)
	if err := e.save(ctx, n); err != nil {
		return nil, err
	}
	e.log.Info("agent looked up", "node", n.UUID, "state", n.ProvisionState)
	return &LookupResult{Node: n, Token: tok}, nil
}

// agentRestarted fails the operation of a node whose agent came back from
// a reboot or crash: its commands and token are gone.
func (e *Engine) agentRestarted(ctx context.Context, n *node.Node) {
	step := ""
	if s, ok := n.DeployStep["step"].(string); ok {
		step = " during deploy step " + s
	} else if s, ok := n.CleanStep["step"].(string); ok {
		step = " during clean step " + s
	}
	msg := fmt.Sprintf("The agent of node %s looked up again%s: the ramdisk rebooted or the agent restarted, so the operation was interrupted.", n.UUID, step)
	switch n.ProvisionState {
	case node.StateDeployWait, node.StateDeploying:
		e.failDeploy(ctx, n, msg)
	case node.StateCleanWait, node.StateCleaning:
		e.failClean(ctx, n, msg)
	}
}

// HeartbeatError is a heartbeat refused with HTTP 400 (Ironic's wording).
var errHeartbeat = node.ErrInvalid

// Heartbeat takes an agent's heartbeat: it checks the token and the
// callback URL, then lets a background task record it and, in a waiting
// state, move the deploy or cleaning on. Heartbeats in other states are
// ignored, as Ironic does (the caller still answers 202).
func (e *Engine) Heartbeat(ctx context.Context, ident string, hb api.HeartbeatRequest) error {
	n, err := e.store.GetNode(ctx, ident)
	if err != nil {
		return err
	}
	if err := checkHeartbeat(n, hb); err != nil {
		return err
	}
	waiting := slices.Contains(heartbeatStates, n.ProvisionState)
	if !waiting && !slices.Contains(recordStates, n.ProvisionState) {
		e.log.Debug("heartbeat ignored in this state", "node", n.UUID, "state", n.ProvisionState)
		return nil
	}
	if _, known := n.DriverInternalInfo[diAgentURL]; !known && n.Reservation != "" {
		// Ironic answers 409 early so a new agent retries soon.
		return &node.LockedError{Node: n.UUID, Holder: n.Reservation}
	}
	received := e.now()
	if !waiting {
		if n.Reservation == "" {
			recordHeartbeat(n, hb, received)
			if err := e.store.UpdateNodeInternal(ctx, n); err != nil && !errors.Is(err, node.ErrConflict) {
				return err
			}
		}
		return nil
	}
	return e.spawn(n.UUID, "heartbeat", func(ctx context.Context) { e.processHeartbeat(ctx, n, hb, received) })
}

// recordHeartbeat notes the agent on the node, as Ironic does in
// driver_internal_info.
func recordHeartbeat(n *node.Node, hb api.HeartbeatRequest, at time.Time) {
	setInternal(n, diAgentURL, hb.CallbackURL)
	setInternal(n, diAgentVersion, hb.AgentVersion)
	setInternal(n, diAgentLastHB, at.UTC().Format("2006-01-02T15:04:05.000000"))
	if hb.AgentVerifyCA != "" {
		setInternal(n, diAgentVerifyCA, hb.AgentVerifyCA)
	}
}

// touchEvery bounds how stale provision_updated_at may get while a live
// agent keeps a step running: the callback timer is reset at least this
// often, not on every heartbeat.
func (e *Engine) touchEvery() time.Duration {
	return min(time.Minute, e.opts.DeployCallbackTimeout/10, e.opts.CleanCallbackTimeout/10)
}

// processHeartbeat runs in the background for a heartbeat in a waiting
// state. The common case, an agent step this conductor started still
// running, takes no lock and at most one narrow write; anything else takes
// the node and moves its operation on.
func (e *Engine) processHeartbeat(ctx context.Context, n *node.Node, hb api.HeartbeatRequest, received time.Time) {
	handled, cmds := e.pollRunningStep(ctx, n, hb, received)
	if handled {
		return
	}
	for attempt := 0; ; attempt++ {
		if n.Reservation != "" {
			e.log.Debug("heartbeat skipped: node is locked", "node", n.UUID)
			return
		}
		err := e.store.SetReservation(ctx, n, e.opts.Conductor)
		if err == nil {
			break
		}
		if !errors.Is(err, node.ErrConflict) || attempt >= 3 {
			return
		}
		fresh, gerr := e.store.GetNode(ctx, n.UUID)
		if gerr != nil || checkHeartbeat(fresh, hb) != nil || !slices.Contains(heartbeatStates, fresh.ProvisionState) {
			return // the node moved on; this heartbeat is stale
		}
		n = fresh
	}
	defer e.release(context.WithoutCancel(ctx), n)
	recordHeartbeat(n, hb, received)
	n.ProvisionUpdatedAt = received // a live agent keeps the callback timer from firing
	if err := e.save(ctx, n); err != nil {
		e.log.Warn("record heartbeat", "node", n.UUID, "err", err)
		return
	}
	switch n.ProvisionState {
	case node.StateDeployWait:
		e.continueDeploy(ctx, n, cmds)
	case node.StateCleanWait:
		e.continueClean(ctx, n, cmds)
	}
}

// pollRunningStep handles a heartbeat while the agent runs a step this
// conductor started: it asks the agent, and if the step still runs, records
// progress (and refreshes the callback timer now and then) with one
// version-checked write, without the node's lock. It reports whether the
// heartbeat was handled; false leaves it to the locked path, with the
// agent's command list if it was read.
func (e *Engine) pollRunningStep(ctx context.Context, n *node.Node, hb api.HeartbeatRequest, received time.Time) (bool, []api.CommandResult) {
	if n.Reservation != "" || e.opts.Agent == nil || !agentDriven(n) {
		return false, nil
	}
	kind, stepsKey, indexKey, current := "deploy", diDeploySteps, diDeployStepIndex, n.DeployStep
	if n.ProvisionState == node.StateCleanWait {
		kind, stepsKey, indexKey, current = "clean", diCleanSteps, diCleanStepIndex, n.CleanStep
	}
	steps, idx := stepsOf(n, stepsKey, indexKey)
	if idx >= len(steps) || current == nil || current["step"] != steps[idx]["step"] {
		return false, nil
	}
	name := fmt.Sprint(current["step"])
	if kind == "deploy" && conductorRuns(n, name) {
		return false, nil
	}
	ep, ok := endpoint(n)
	if !ok || ep.URL != hb.CallbackURL {
		return false, nil
	}
	cmds, err := e.opts.Agent.Commands(ctx, ep)
	if err != nil {
		return false, nil
	}
	status, cmd := agentStep(cmds, kind, name)
	if status != stepRunning {
		return false, cmds
	}
	changed := received.Sub(n.ProvisionUpdatedAt) >= e.touchEvery()
	if changed {
		n.ProvisionUpdatedAt = received
		recordHeartbeat(n, hb, received)
	}
	if kind == "deploy" && cmd.Progress != nil {
		old, _ := n.DriverInternalInfo[diDeployProgress].(map[string]any)
		if old == nil || num(old["bytes"]) != int(cmd.Progress.Bytes) {
			setInternal(n, diDeployProgress, progressOf(name, cmd.Progress))
			changed = true
		}
	}
	if changed {
		if err := e.store.UpdateNodeInternal(ctx, n); err != nil && !errors.Is(err, node.ErrConflict) {
			e.log.Warn("record agent progress", "node", n.UUID, "err", err)
		}
	}
	return true, nil
}

// checkHeartbeat applies Ironic's checks to a heartbeat.
func checkHeartbeat(n *node.Node, hb api.HeartbeatRequest) error {
	if hb.AgentToken == "" {
		return node.Errorf(errHeartbeat, "Agent token is required for heartbeat processing.")
	}
	tok, _ := n.DriverInternalInfo[diAgentToken].(string)
	if tok == "" || tok != hb.AgentToken {
		return node.Errorf(errHeartbeat, "Invalid or missing agent token received.")
	}
	if url, _ := n.DriverInternalInfo[diAgentURL].(string); url != "" && hb.CallbackURL != url {
		return node.Errorf(errHeartbeat, "Detected change in ramdisk provided callback_url. Expected %s, received %s.", url, hb.CallbackURL)
	}
	if ca, _ := n.DriverInternalInfo[diAgentVerifyCA].(string); ca != "" && hb.AgentVerifyCA != "" && hb.AgentVerifyCA != ca {
		return node.Errorf(errHeartbeat, "Detected change in ramdisk provided agent_verify_ca.")
	}
	if err := hb.Validate(); err != nil {
		return node.Errorf(errHeartbeat, "%v", err)
	}
	return nil
}
