package blockdev

import (
	"os"

	"golang.org/x/sys/unix"
)

func rereadPartitions(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := sc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetInt(int(fd), unix.BLKRRPART, 0)
	}); err != nil {
		return err
	}
	return ioErr
}
