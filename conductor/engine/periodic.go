package engine

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/provision"
)

// every runs f every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func(context.Context)) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

// timeoutOf returns how long a waiting state may go without a callback.
func (e *Engine) timeoutOf(s node.State) time.Duration {
	switch s {
	case node.StateDeployWait:
		return e.opts.DeployCallbackTimeout
	case node.StateCleanWait:
		return e.opts.CleanCallbackTimeout
	case node.StateInspectWait:
		return e.opts.InspectWaitTimeout
	}
	return 0
}

// CheckTimeouts fails nodes whose agent went silent: waiting nodes (not in
// maintenance, not reserved) whose provision_updated_at is older than their
// state's timeout. Every heartbeat moves provision_updated_at, so a live
// agent never times out.
func (e *Engine) CheckTimeouts(ctx context.Context) {
	var states []node.State
	for _, s := range node.States() {
		if provision.Waiting(s) {
			states = append(states, s)
		}
	}
	nodes, err := e.store.NodesInStates(ctx, states...)
	if err != nil {
		e.log.Error("check timeouts", "err", err)
		return
	}
	now := e.now()
	for _, n := range nodes {
		if n.Maintenance || n.Reservation != "" || now.Sub(n.ProvisionUpdatedAt) < e.timeoutOf(n.ProvisionState) {
			continue
		}
		if err := e.store.SetReservation(ctx, n, e.opts.Conductor); err != nil {
			continue // someone else got to it
		}
		e.timeOut(ctx, n)
		e.release(context.WithoutCancel(ctx), n)
	}
}

func (e *Engine) timeOut(ctx context.Context, n *node.Node) {
	switch n.ProvisionState {
	case node.StateDeployWait:
		e.endDeploy(ctx, n, node.EventTimeout, fmt.Sprintf("Timeout reached while waiting for callback for node %s", n.UUID))
	case node.StateCleanWait:
		step := ""
		if s, ok := n.CleanStep["step"].(string); ok {
			step = " Failed on step " + s + "."
		}
		e.endClean(ctx, n, node.EventTimeout, fmt.Sprintf("Timeout reached while cleaning the node. Please check if the ramdisk responsible for the cleaning is running on the node.%s", step))
	case node.StateInspectWait:
		msg := fmt.Sprintf("Timeout reached while inspecting the node %s", n.UUID)
		if n.Interfaces.Inspect == "agent" {
			// The agent never reported: do not leave the node running it.
			if err := (directDeploy{e}).tearDownRamdisk(ctx, n); err != nil {
				msg += fmt.Sprintf("; powering it off and removing its ramdisk boot failed too: %v", err)
			}
		}
		e.fail(ctx, n, node.EventTimeout, msg)
	}
}

// noPowerSync are the states whose power the sync loop leaves alone: an
// agent or an operator is changing it.
var noPowerSync = []node.State{node.StateDeployWait, node.StateCleanWait, node.StateEnroll,
	node.StateAdoptFailed, node.StateInspectWait}

const diPowerSyncFailures = "power_sync_failures"

// SyncPowerStates compares every idle node's recorded power state with
// its BMC's: drift is recorded (and logged); a BMC that keeps failing puts
// its node into maintenance with fault "power failure", and a later
// success takes it back out.
func (e *Engine) SyncPowerStates(ctx context.Context) {
	var states []node.State
	for _, s := range node.States() {
		if !slices.Contains(noPowerSync, s) && !provision.Transient(s) {
			states = append(states, s)
		}
	}
	nodes, err := e.store.NodesInStates(ctx, states...)
	if err != nil {
		e.log.Error("sync power states", "err", err)
		return
	}
	sem := make(chan struct{}, 8) // Ironic's sync_power_state_workers
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n.Reservation != "" || (n.Maintenance && n.Fault != "power failure") {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			e.syncPower(ctx, n)
		})
	}
	wg.Wait()
}

func (e *Engine) syncPower(ctx context.Context, n *node.Node) {
	p, err := e.drivers.Power(n)
	var st node.PowerState
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, e.opts.PowerStateTimeout)
		st, err = p.PowerState(cctx)
		cancel()
	}
	failures := num(n.DriverInternalInfo[diPowerSyncFailures])
	changed := false
	if err != nil {
		failures++
		setInternal(n, diPowerSyncFailures, failures)
		changed = true
		e.log.Warn("power state sync failed", "node", n.UUID, "failures", failures, "err", err)
		if failures >= e.opts.PowerSyncMaxFailures && !n.Maintenance {
			n.Maintenance = true
			n.Fault = "power failure"
			n.MaintenanceReason = fmt.Sprintf("Power state sync failed %d times in a row; switching node %s to maintenance. Last error: %v", failures, n.UUID, err)
			n.PowerState = node.PowerUnknown
		}
	} else {
		if failures > 0 {
			setInternal(n, diPowerSyncFailures, nil)
			changed = true
		}
		if n.Maintenance && n.Fault == "power failure" {
			n.Maintenance, n.Fault, n.MaintenanceReason = false, "", ""
			changed = true
			e.log.Info("power recovered; leaving maintenance", "node", n.UUID)
		}
		if st != n.PowerState {
			if n.PowerState != node.PowerUnknown {
				e.log.Warn("power state drift", "node", n.UUID, "from", n.PowerState, "to", st)
			}
			n.PowerState = st
			changed = true
		}
	}
	if !changed {
		return
	}
	if err := e.save(ctx, n); err != nil {
		e.log.Warn("record power state", "node", n.UUID, "err", err)
	}
}
