// Package provision is the provision state machine as data: a transition
// table over node.State and node.Event, the target state each state works
// towards, and which states wait for an outside party (and so carry a
// timeout).
//
// It does no I/O and never reads the clock: callers pass times in. The
// engine package is the only one that applies these transitions to stored
// nodes.
package provision

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ingot-dev/ingot/conductor/node"
)

// Transition is one edge of the state machine.
type Transition struct {
	From  node.State
	Event node.Event
	To    node.State
}

// table is the whole machine. It mirrors Ironic's states.py for the states
// Ingot implements; abort from "wait call-back" follows newer Ironic (API
// 1.110) because the deploy engine needs a way out of a stuck wait.
var table = []Transition{
	{node.StateEnroll, node.EventManage, node.StateVerifying},
	{node.StateVerifying, node.EventDone, node.StateManageable},
	{node.StateVerifying, node.EventFail, node.StateEnroll},

	{node.StateManageable, node.EventProvide, node.StateCleaning},
	{node.StateManageable, node.EventClean, node.StateCleaning},
	{node.StateManageable, node.EventInspect, node.StateInspecting},
	{node.StateManageable, node.EventAdopt, node.StateAdopting},

	{node.StateInspecting, node.EventWait, node.StateInspectWait},
	{node.StateInspecting, node.EventDone, node.StateManageable},
	{node.StateInspecting, node.EventFail, node.StateInspectFailed},
	{node.StateInspectWait, node.EventResume, node.StateInspecting},
	{node.StateInspectWait, node.EventDone, node.StateManageable},
	{node.StateInspectWait, node.EventFail, node.StateInspectFailed},
	{node.StateInspectWait, node.EventAbort, node.StateInspectFailed},
	{node.StateInspectWait, node.EventTimeout, node.StateInspectFailed},
	{node.StateInspectFailed, node.EventManage, node.StateManageable},
	{node.StateInspectFailed, node.EventInspect, node.StateInspecting},

	{node.StateCleaning, node.EventWait, node.StateCleanWait},
	{node.StateCleaning, node.EventDone, node.StateAvailable},
	{node.StateCleaning, node.EventManage, node.StateManageable},
	{node.StateCleaning, node.EventFail, node.StateCleanFailed},
	{node.StateCleanWait, node.EventResume, node.StateCleaning},
	{node.StateCleanWait, node.EventFail, node.StateCleanFailed},
	{node.StateCleanWait, node.EventAbort, node.StateCleanFailed},
	{node.StateCleanWait, node.EventTimeout, node.StateCleanFailed},
	{node.StateCleanFailed, node.EventManage, node.StateManageable},

	{node.StateAvailable, node.EventDeploy, node.StateDeploying},
	{node.StateAvailable, node.EventManage, node.StateManageable},

	{node.StateDeploying, node.EventWait, node.StateDeployWait},
	{node.StateDeploying, node.EventDone, node.StateActive},
	{node.StateDeploying, node.EventFail, node.StateDeployFailed},
	{node.StateDeployWait, node.EventResume, node.StateDeploying},
	{node.StateDeployWait, node.EventFail, node.StateDeployFailed},
	{node.StateDeployWait, node.EventAbort, node.StateDeployFailed},
	{node.StateDeployWait, node.EventTimeout, node.StateDeployFailed},
	{node.StateDeployWait, node.EventDelete, node.StateDeleting},
	{node.StateDeployFailed, node.EventDeploy, node.StateDeploying},
	{node.StateDeployFailed, node.EventRebuild, node.StateDeploying},
	{node.StateDeployFailed, node.EventDelete, node.StateDeleting},

	{node.StateActive, node.EventRebuild, node.StateDeploying},
	{node.StateActive, node.EventDelete, node.StateDeleting},
	{node.StateError, node.EventRebuild, node.StateDeploying},
	{node.StateError, node.EventDelete, node.StateDeleting},

	{node.StateDeleting, node.EventClean, node.StateCleaning},
	{node.StateDeleting, node.EventFail, node.StateError},

	{node.StateAdopting, node.EventDone, node.StateActive},
	{node.StateAdopting, node.EventFail, node.StateAdoptFailed},
	{node.StateAdoptFailed, node.EventAdopt, node.StateAdopting},
	{node.StateAdoptFailed, node.EventManage, node.StateManageable},
}

// targets is the state each non-stable state works towards (Ironic's
// target_provision_state). Stable states have no target.
var targets = map[node.State]node.State{
	node.StateVerifying:     node.StateManageable,
	node.StateInspecting:    node.StateManageable,
	node.StateInspectWait:   node.StateManageable,
	node.StateInspectFailed: node.StateManageable,
	node.StateCleaning:      node.StateAvailable,
	node.StateCleanWait:     node.StateAvailable,
	node.StateCleanFailed:   node.StateAvailable,
	node.StateDeploying:     node.StateActive,
	node.StateDeployWait:    node.StateActive,
	node.StateDeployFailed:  node.StateActive,
	node.StateDeleting:      node.StateAvailable,
	node.StateAdopting:      node.StateActive,
	node.StateAdoptFailed:   node.StateActive,
}

// waiting lists the states in which the conductor waits for an outside
// party (an agent's callback). Each has a timeout edge.
var waiting = []node.State{node.StateInspectWait, node.StateCleanWait, node.StateDeployWait}

// transient lists states the conductor only passes through while it does
// work itself. A conductor that dies mid-work leaves nodes there; on
// takeover they are failed, as Ironic does.
var transient = []node.State{node.StateVerifying, node.StateInspecting, node.StateCleaning,
	node.StateDeploying, node.StateDeleting, node.StateAdopting}

// Next returns the state event moves from to. It returns an error wrapping
// node.ErrInvalidTransition when the table has no such edge.
func Next(from node.State, ev node.Event) (node.State, error) {
	for _, t := range table {
		if t.From == from && t.Event == ev {
			return t.To, nil
		}
	}
	return from, fmt.Errorf("%w: %q in state %q", node.ErrInvalidTransition, ev, from)
}

// Allowed reports whether ev is valid in state from.
func Allowed(from node.State, ev node.Event) bool {
	_, err := Next(from, ev)
	return err == nil
}

// Target returns the state s works towards, or node.StateNone for a stable
// state. Manual cleaning targets manageable instead; the engine overrides
// that case.
func Target(s node.State) node.State { return targets[s] }

// Stable reports whether s is a state a node rests in with no work pending.
func Stable(s node.State) bool {
	_, ok := targets[s]
	return !ok
}

// Waiting reports whether s waits on an outside party and carries a timeout.
func Waiting(s node.State) bool { return slices.Contains(waiting, s) }

// Transient reports whether s is a state of conductor-side work that cannot
// be resumed after the conductor doing it died.
func Transient(s node.State) bool { return slices.Contains(transient, s) }

// Failed reports whether s is a failure state.
func Failed(s node.State) bool {
	switch s {
	case node.StateInspectFailed, node.StateCleanFailed, node.StateDeployFailed,
		node.StateError, node.StateAdoptFailed:
		return true
	}
	return false
}

// Transitions returns a copy of the table.
func Transitions() []Transition { return slices.Clone(table) }

// Dot renders the machine as a Graphviz digraph. Stable states are boxes,
// waiting states are dashed, failure states are red; the output is
// deterministic so it can be kept as a golden file.
func Dot() string {
	var b strings.Builder
	b.WriteString("// Generated from conductor/provision's table by `make docs`; do not edit.\n")
	b.WriteString("digraph provision {\n\trankdir=LR;\n\tnode [fontname=\"Helvetica\"];\n")
	for _, s := range node.States() {
		attrs := []string{fmt.Sprintf("label=%q", string(s))}
		switch {
		case Failed(s):
			attrs = append(attrs, "shape=box", "color=red")
		case Stable(s):
			attrs = append(attrs, "shape=box", "style=bold")
		case Waiting(s):
			attrs = append(attrs, "shape=ellipse", "style=dashed")
		default:
			attrs = append(attrs, "shape=ellipse")
		}
		fmt.Fprintf(&b, "\t%q [%s];\n", string(s), strings.Join(attrs, ", "))
	}
	edges := Transitions()
	sort.SliceStable(edges, func(i, j int) bool {
		if edges[i].From != edges[j].From {
			return edges[i].From < edges[j].From
		}
		return edges[i].Event < edges[j].Event
	})
	for _, t := range edges {
		fmt.Fprintf(&b, "\t%q -> %q [label=%q];\n", string(t.From), string(t.To), string(t.Event))
	}
	b.WriteString("}\n")
	return b.String()
}

// Mermaid renders the machine as a Mermaid state diagram, for Markdown.
func Mermaid() string {
	var b strings.Builder
	b.WriteString("stateDiagram-v2\n")
	id := func(s node.State) string { return strings.NewReplacer(" ", "_", "-", "_").Replace(string(s)) }
	for _, s := range node.States() {
		fmt.Fprintf(&b, "    %s: %s\n", id(s), s)
	}
	b.WriteString("    [*] --> enroll\n")
	for _, t := range table {
		fmt.Fprintf(&b, "    %s --> %s: %s\n", id(t.From), id(t.To), t.Event)
	}
	return b.String()
}
