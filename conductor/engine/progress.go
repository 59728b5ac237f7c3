package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/ingot-dev/ingot/conductor/node"
)

// progressPollers bounds how many agents PollProgress asks at once, and
// progressBatch how many it asks per round: with more nodes writing, a
// round asks the next batch in turn, so the extra load stays under
// progressBatch requests per interval however large the fleet (heartbeats
// still report every node's progress).
const (
	progressPollers = 16
	progressBatch   = 100
)

// PollProgress asks the agent of every node that waits on an agent deploy
// step (write_image) how far it got, and records the answer in
// driver_internal_info.deploy_progress. Ironic learns progress only from
// heartbeats, minutes apart; this shows an image write advancing in the
// API while it runs. Like the heartbeat fast path it writes without the
// node's lock, only when nobody holds it, and a version conflict just
// drops the sample.
func (e *Engine) PollProgress(ctx context.Context) {
	if e.opts.Agent == nil {
		return
	}
	nodes, err := e.store.NodesInStates(ctx, node.StateDeployWait)
	if err != nil {
		e.log.Warn("poll deploy progress", "err", err)
		return
	}
	var writing []*node.Node
	for _, n := range nodes {
		name, _ := n.DeployStep["step"].(string)
		if _, ours := conductorSteps[name]; name == "" || n.Reservation != "" || (ours && name != stepWriteImage) {
			continue
		}
		if _, ok := endpoint(n); ok {
			writing = append(writing, n)
		}
	}
	if len(writing) > progressBatch {
		slices.SortFunc(writing, func(a, b *node.Node) int { return strings.Compare(a.UUID, b.UUID) })
		start := int(e.progressCursor.Add(progressBatch)-progressBatch) % len(writing)
		writing = append(writing[start:], writing[:start]...)[:progressBatch]
	}
	sem := make(chan struct{}, progressPollers)
	var wg sync.WaitGroup
	for _, n := range writing {
		name, _ := n.DeployStep["step"].(string)
		ep, _ := endpoint(n)
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, e.opts.ProgressInterval)
			defer cancel()
			cmds, err := e.opts.Agent.Commands(pctx, ep)
			if err != nil {
				return // the heartbeat path and the callback timeout deal with silent agents
			}
			status, cmd := agentStep(cmds, "deploy", name)
			if status != stepRunning || cmd.Progress == nil {
				return
			}
			if old, _ := n.DriverInternalInfo[diDeployProgress].(map[string]any); old != nil && num(old["bytes"]) == int(cmd.Progress.Bytes) {
				return
			}
			setInternal(n, diDeployProgress, progressOf(name, cmd.Progress))
			if err := e.store.UpdateNodeInternal(ctx, n); err != nil && !errors.Is(err, node.ErrConflict) {
				e.log.Warn("record deploy progress", "node", n.UUID, "err", fmt.Sprint(err))
			}
		})
	}
	wg.Wait()
}
