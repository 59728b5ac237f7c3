package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Device is an open disk: a block device, or a regular file standing in
// for one (tests, ingot.disk=/path/to/file).
type Device struct {
	f     *os.File
	path  string
	size  int64
	block bool
}

// ErrNotADisk means the path is neither a block device nor a regular file.
var ErrNotADisk = errors.New("not a block device or regular file")

// Open opens an existing disk for reading and writing. It never creates a
// file: a missing path is an error.
func Open(path string) (*Device, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	block := fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	if !block && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open disk %s: %w", path, ErrNotADisk)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open disk %s: size: %w", path, err)
	}
	return &Device{f: f, path: path, size: size, block: block}, nil
}

// Path returns the path the device was opened as.
func (d *Device) Path() string { return d.path }

// Size returns the device's size in bytes.
func (d *Device) Size() int64 { return d.size }

// IsBlockDevice reports whether the device is a kernel block device (and
// not a file standing in for one).
func (d *Device) IsBlockDevice() bool { return d.block }

// ReadAt implements io.ReaderAt.
func (d *Device) ReadAt(b []byte, off int64) (int, error) { return d.f.ReadAt(b, off) }

// WriteAt implements io.WriterAt.
func (d *Device) WriteAt(b []byte, off int64) (int, error) { return d.f.WriteAt(b, off) }

// Sync flushes written data to the device.
func (d *Device) Sync() error { return d.f.Sync() }

// Close closes the device.
func (d *Device) Close() error { return d.f.Close() }

// RereadPartitions asks the kernel to re-read a block device's partition
// table (BLKRRPART), as partprobe does; a no-op for files.
func (d *Device) RereadPartitions() error {
	if !d.block {
		return nil
	}
	if err := rereadPartitions(d.f); err != nil {
		return fmt.Errorf("re-read partition table of %s: %w", d.path, err)
	}
	return nil
}
