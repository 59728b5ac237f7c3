//go:build !linux

package dhcpd

import "errors"

func bindToDevice(int, string) error {
	return errors.New("binding to an interface is supported on Linux only")
}
