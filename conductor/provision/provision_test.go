package provision

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ingot-dev/ingot/conductor/node"
)

var update = flag.Bool("update", false, "rewrite the generated diagrams under docs/")

// want is the table written out a second time, by hand, as Ironic documents
// it: a change to the table must be made in both places on purpose.
var want = map[node.State]map[node.Event]node.State{
	node.StateEnroll:        {node.EventManage: node.StateVerifying},
	node.StateVerifying:     {node.EventDone: node.StateManageable, node.EventFail: node.StateEnroll},
	node.StateManageable:    {node.EventProvide: node.StateCleaning, node.EventClean: node.StateCleaning, node.EventInspect: node.StateInspecting, node.EventAdopt: node.StateAdopting},
	node.StateInspecting:    {node.EventWait: node.StateInspectWait, node.EventDone: node.StateManageable, node.EventFail: node.StateInspectFailed},
	node.StateInspectWait:   {node.EventResume: node.StateInspecting, node.EventDone: node.StateManageable, node.EventFail: node.StateInspectFailed, node.EventAbort: node.StateInspectFailed, node.EventTimeout: node.StateInspectFailed},
	node.StateInspectFailed: {node.EventManage: node.StateManageable, node.EventInspect: node.StateInspecting},
	node.StateCleaning:      {node.EventWait: node.StateCleanWait, node.EventDone: node.StateAvailable, node.EventManage: node.StateManageable, node.EventFail: node.StateCleanFailed},
	node.StateCleanWait:     {node.EventResume: node.StateCleaning, node.EventFail: node.StateCleanFailed, node.EventAbort: node.StateCleanFailed, node.EventTimeout: node.StateCleanFailed},
	node.StateCleanFailed:   {node.EventManage: node.StateManageable},
	node.StateAvailable:     {node.EventDeploy: node.StateDeploying, node.EventManage: node.StateManageable},
	node.StateDeploying:     {node.EventWait: node.StateDeployWait, node.EventDone: node.StateActive, node.EventFail: node.StateDeployFailed},
	node.StateDeployWait:    {node.EventResume: node.StateDeploying, node.EventFail: node.StateDeployFailed, node.EventAbort: node.StateDeployFailed, node.EventTimeout: node.StateDeployFailed, node.EventDelete: node.StateDeleting},
	node.StateDeployFailed:  {node.EventDeploy: node.StateDeploying, node.EventRebuild: node.StateDeploying, node.EventDelete: node.StateDeleting},
	node.StateActive:        {node.EventRebuild: node.StateDeploying, node.EventDelete: node.StateDeleting},
	node.StateError:         {node.EventRebuild: node.StateDeploying, node.EventDelete: node.StateDeleting},
	node.StateDeleting:      {node.EventClean: node.StateCleaning, node.EventFail: node.StateError},
	node.StateAdopting:      {node.EventDone: node.StateActive, node.EventFail: node.StateAdoptFailed},
	node.StateAdoptFailed:   {node.EventAdopt: node.StateAdopting, node.EventManage: node.StateManageable},
}

func TestEveryStateEventPair(t *testing.T) {
	for _, s := range node.States() {
		for _, ev := range node.Events() {
			got, err := Next(s, ev)
			to, ok := want[s][ev]
			switch {
			case ok && err != nil:
				t.Errorf("Next(%q, %q): unexpected error %v, want %q", s, ev, err, to)
			case ok && got != to:
				t.Errorf("Next(%q, %q) = %q, want %q", s, ev, got, to)
			case !ok && !errors.Is(err, node.ErrInvalidTransition):
				t.Errorf("Next(%q, %q) = %q, %v; want ErrInvalidTransition", s, ev, got, err)
			case !ok && got != s:
				t.Errorf("Next(%q, %q) rejected but returned %q, want the unchanged state", s, ev, got)
			}
		}
	}
	if len(Transitions()) != countWant() {
		t.Errorf("table has %d edges, the hand-written copy %d", len(Transitions()), countWant())
	}
}

func countWant() int {
	n := 0
	for _, m := range want {
		n += len(m)
	}
	return n
}

func TestTableUsesOnlyKnownStatesAndEvents(t *testing.T) {
	seen := map[[2]string]bool{}
	for _, tr := range Transitions() {
		if !tr.From.Valid() || !tr.To.Valid() {
			t.Errorf("edge %v uses an unknown state", tr)
		}
		if !slices.Contains(node.Events(), tr.Event) {
			t.Errorf("edge %v uses an unknown event", tr)
		}
		k := [2]string{string(tr.From), string(tr.Event)}
		if seen[k] {
			t.Errorf("edge %v is not deterministic: (%s, %s) appears twice", tr, tr.From, tr.Event)
		}
		seen[k] = true
	}
}

func reachable(from node.State) map[node.State]bool {
	seen := map[node.State]bool{from: true}
	queue := []node.State{from}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, tr := range Transitions() {
			if tr.From == s && !seen[tr.To] {
				seen[tr.To] = true
				queue = append(queue, tr.To)
			}
		}
	}
	return seen
}

func TestGraphInvariants(t *testing.T) {
	t.Run("every state is reachable from enroll", func(t *testing.T) {
		r := reachable(node.StateEnroll)
		for _, s := range node.States() {
			if !r[s] {
				t.Errorf("%q is not reachable from enroll", s)
			}
		}
	})
	t.Run("every waiting state has a timeout edge to a failure state", func(t *testing.T) {
		for _, s := range node.States() {
			if !Waiting(s) {
				continue
			}
			to, err := Next(s, node.EventTimeout)
			if err != nil || !Failed(to) {
				t.Errorf("waiting state %q: timeout -> %q, %v; want a failure state", s, to, err)
			}
		}
	})
	t.Run("only waiting states time out", func(t *testing.T) {
		for _, tr := range Transitions() {
			if tr.Event == node.EventTimeout && !Waiting(tr.From) {
				t.Errorf("%q has a timeout edge but is not a waiting state", tr.From)
			}
		}
	})
	t.Run("every non-stable state can reach active or a failure", func(t *testing.T) {
		for _, s := range node.States() {
			if Stable(s) {
				continue
			}
			r := reachable(s)
			ok := r[node.StateActive]
			for st := range r {
				ok = ok || Failed(st)
			}
			if !ok {
				t.Errorf("%q can reach neither active nor a failure state", s)
			}
		}
	})
	t.Run("transient states have a fail edge for conductor takeover", func(t *testing.T) {
		for _, s := range node.States() {
			if !Transient(s) {
				continue
			}
			if _, err := Next(s, node.EventFail); err != nil {
				t.Errorf("transient state %q has no fail edge", s)
			}
		}
	})
	t.Run("stable states have no target and work states do", func(t *testing.T) {
		for _, s := range []node.State{node.StateEnroll, node.StateManageable, node.StateAvailable, node.StateActive, node.StateError} {
			if !Stable(s) || Target(s) != node.StateNone {
				t.Errorf("%q should be stable with no target", s)
			}
		}
		for _, s := range append(slices.Clone(transient), waiting...) {
			if Target(s) == node.StateNone {
				t.Errorf("%q has no target state", s)
			}
		}
	})
}

// TestDiagrams keeps docs/states.dot and docs/states.md in step with the
// table; run `make docs` (go test -run TestDiagrams -update) after a change.
func TestDiagrams(t *testing.T) {
	files := map[string]string{
		"states.dot": Dot(),
		"states.md": "# Provision state machine\n\nGenerated from `conductor/provision` by `make docs`; do not edit.\n" +
			"Boxes are stable states, dashed nodes wait for an agent and carry a timeout, red nodes are failures.\n\n```mermaid\n" + Mermaid() + "```\n",
	}
	for name, content := range files {
		path := filepath.Join("..", "..", "docs", name)
		if *update {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read %s: %v (run make docs)", path, err)
		}
		if string(got) != content {
			t.Errorf("%s is stale: run make docs", path)
		}
	}
}

func FuzzEventSequence(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5})
	f.Add([]byte{0, 10, 11, 12, 13})
	f.Fuzz(func(t *testing.T, seq []byte) {
		s := node.StateEnroll
		evs := node.Events()
		for _, b := range seq {
			ev := evs[int(b)%len(evs)]
			next, err := Next(s, ev)
			if err != nil {
				if next != s {
					t.Fatalf("rejected %q in %q changed the state to %q", ev, s, next)
				}
				continue
			}
			if !next.Valid() {
				t.Fatalf("%q in %q led to invalid state %q", ev, s, next)
			}
			s = next
		}
	})
}
