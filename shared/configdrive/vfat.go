package configdrive

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// FATLabel is the label of a config drive rebuilt as vfat (IPA's).
const FATLabel = "CONFIG-2"

// isoTree is the content of an ISO 9660 config drive: directories in
// creation order and files by path.
type isoTree struct {
	dirs  []string
	files map[string][]byte
}

// readISO reads every directory and file of an ISO 9660 image.
func readISO(iso []byte) (isoTree, error) {
	t := isoTree{files: map[string][]byte{}}
	src, err := iso9660.Read(&storage{file: &file{dev: readOnly(iso), size: int64(len(iso))}}, int64(len(iso)), 0, 2048)
	if err != nil {
		return t, fmt.Errorf("read the config drive ISO: %w", err)
	}
	var walk func(dir string) error
	walk = func(dir string) error {
		ents, err := src.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			p := path.Join(dir, e.Name())
			if e.IsDir() {
				t.dirs = append(t.dirs, p)
				if err := walk(p); err != nil {
					return err
				}
				continue
			}
			in, err := src.OpenFile(p, os.O_RDONLY)
			if err != nil {
				return fmt.Errorf("open %s: %w", p, err)
			}
			b, err := io.ReadAll(io.LimitReader(in, MaxSize+1))
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			t.files[p] = b
		}
		return nil
	}
	if err := walk("."); err != nil {
		return t, fmt.Errorf("read the config drive ISO: %w", err)
	}
	return t, nil
}

// writeFAT creates a FAT32 filesystem labelled CONFIG-2 at [off,
// off+size) of dev, with sectorSize-byte sectors, holding t: what IPA
// does for disks whose logical sectors are larger than ISO 9660's
// 2048-byte blocks, which Linux cannot mount.
func writeFAT(dev Device, devSize, off, size int64, sectorSize int, t isoTree) error {
	dst, err := fat32.Create(&storage{file: &file{dev: dev, size: devSize}}, size, off, int64(sectorSize), FATLabel, true)
	if err != nil {
		return fmt.Errorf("create the vfat config drive: %w", err)
	}
	for _, d := range t.dirs {
		if err := dst.Mkdir(d); err != nil {
			return fmt.Errorf("mkdir %s: %w", d, err)
		}
	}
	for p, b := range t.files {
		out, err := dst.OpenFile(p, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
		_, err = out.Write(b)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// readOnly is an image in memory.
type readOnly []byte

func (r readOnly) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r)) {
		return 0, io.EOF
	}
	n := copy(p, r[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (readOnly) WriteAt([]byte, int64) (int, error) { return 0, errors.New("read-only image") }

// storage makes a file a go-diskfs backend.Storage.
type storage struct{ *file }

func (s *storage) Sys() (*os.File, error)                  { return nil, errors.New("not an OS file") }
func (s *storage) Writable() (backend.WritableFile, error) { return s.file, nil }
func (s *storage) Path() string                            { return "" }
func (s *storage) Stat() (fs.FileInfo, error)              { return s.file.Stat() }
