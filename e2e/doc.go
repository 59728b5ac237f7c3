// Package e2e holds the end-to-end tests (build tag e2e, `make e2e`): the
// real conductor binary, QEMU virtual nodes booting the real agent ramdisk
// by PXE, IPMI power through ipmi_sim, and a test image that proves the
// node booted the disk Ingot wrote. See internal/vmrig.
package e2e
