package demo

import (
	"bufio"
	"encoding/json"
	"os"
	"time"
)

// event is one line of the conductor's JSON log.
type event struct {
	Time  time.Time `json:"time"`
	Msg   string    `json:"msg"`
	To    string    `json:"to"`
	Event string    `json:"event"`
	Step  string    `json:"step"`
}

type events []event

func readEvents(path string) (events, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out events
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) == nil && !e.Time.IsZero() {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// deployment is when the last deployment in the log reached its
// milestones.
type deployment struct {
	powerOn time.Time // the power on that boots the agent
	lookup  time.Time // the agent's first lookup
	bootOn  time.Time // the last power on before active: boot_instance
	active  time.Time
}

// lastDeployment finds the last deployment in the log.
func (evs events) lastDeployment() deployment {
	var d deployment
	start := -1
	for i, e := range evs {
		if e.Msg == "provision state changed" && e.Event == "deploy" {
			start = i
		}
	}
	if start < 0 {
		return d
	}
	for _, e := range evs[start:] {
		switch {
		case e.Msg == "power state changed" && e.To == "power on" && d.active.IsZero():
			if d.powerOn.IsZero() {
				d.powerOn = e.Time
			}
			d.bootOn = e.Time
		case !d.powerOn.IsZero() && d.lookup.IsZero() && e.Msg == "agent looked up":
			d.lookup = e.Time
		case d.active.IsZero() && e.Msg == "provision state changed" && e.To == "active":
			d.active = e.Time
		}
	}
	return d
}

// since is b - a, or 0 when either is unknown.
func since(a, b time.Time) time.Duration {
	if a.IsZero() || b.IsZero() {
		return 0
	}
	return b.Sub(a)
}
