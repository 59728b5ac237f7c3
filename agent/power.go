package agent

import (
	"context"
	"errors"
)

// ErrPoweredOff and ErrRebooted end Run when a ProcessPower seam stands
// in for the machine's power.
var (
	ErrPoweredOff = errors.New("powered off (process power seam)")
	ErrRebooted   = errors.New("rebooted (process power seam)")
)

// ProcessPower stands in for the machine's power in tests and
// development: powering off or rebooting ends the agent process (Run
// returns ErrPoweredOff or ErrRebooted) instead of the machine, as if the
// conductor had switched it off. Whoever plays the machine starts a new
// agent for the next boot.
type ProcessPower struct {
	Stop context.CancelCauseFunc
}

// PowerOff ends the agent with ErrPoweredOff.
func (p ProcessPower) PowerOff(context.Context) error { p.Stop(ErrPoweredOff); return nil }

// Reboot ends the agent with ErrRebooted.
func (p ProcessPower) Reboot(context.Context) error { p.Stop(ErrRebooted); return nil }
