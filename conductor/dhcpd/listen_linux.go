package dhcpd

import "syscall"

func bindToDevice(fd int, iface string) error { return syscall.BindToDevice(fd, iface) }
