package efiboot

import (
	"os"

	"golang.org/x/sys/unix"
)

// makeMutable clears the immutable flag efivarfs sets on existing
// variables (as libefivar does before writing); errors are ignored, since
// ordinary file systems and new variables have no such flag.
func makeMutable(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsImmutable == 0 {
		return
	}
	_ = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutable))
}

// fsImmutable is FS_IMMUTABLE_FL from linux/fs.h.
const fsImmutable = 0x10
