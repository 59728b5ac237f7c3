//go:build !linux

package agent

import (
	"context"
	"errors"
)

// SystemPower is only implemented on Linux.
type SystemPower struct{}

// PowerOff is not supported here.
func (SystemPower) PowerOff(context.Context) error { return errors.ErrUnsupported }

// Reboot is not supported here.
func (SystemPower) Reboot(context.Context) error { return errors.ErrUnsupported }

// SyncFS does nothing here.
func SyncFS() {}

// Dmesg is not supported here.
func Dmesg() ([]byte, error) { return nil, errors.ErrUnsupported }

// InRamdisk is false here.
func InRamdisk() bool { return false }

// MountEFIVars does nothing here.
func MountEFIVars(string) (bool, error) { return false, nil }
