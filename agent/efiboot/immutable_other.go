//go:build !linux

package efiboot

func makeMutable(string) {}
