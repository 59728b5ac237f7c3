package tftpd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Dir serves the regular files under a directory, confined by os.Root:
// names were cleaned by CleanName, and a symbolic link that resolves
// outside the directory is refused (ErrDenied). A name that does not exist
// as asked is looked up without regard to case, for firmware that changes
// the case of file names; several matches count as none.
type Dir struct {
	root *os.Root
}

// OpenDir returns a Dir route over dir. Close it when done.
func OpenDir(dir string) (*Dir, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open tftp root: %w", err)
	}
	return &Dir{root: r}, nil
}

// Close releases the directory.
func (d *Dir) Close() error { return d.root.Close() }

// Open serves name from the directory.
func (d *Dir) Open(name string) (io.ReadCloser, int64, error) {
	f, size, err := d.open(name)
	if errors.Is(err, fs.ErrNotExist) {
		alt, ok := d.foldCase(name)
		if !ok {
			return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		f, size, err = d.open(alt)
	}
	if err != nil {
		return nil, 0, err
	}
	return f, size, nil
}

func (d *Dir) open(name string) (*os.File, int64, error) {
	f, err := d.root.Open(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, 0, err
	case err != nil:
		// os.Root refuses names that escape it, through ".." or a
		// symbolic link.
		return nil, 0, fmt.Errorf("%w: %s", ErrDenied, name)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s is not a regular file", ErrNotFound, name)
	}
	return f, st.Size(), nil
}

// foldCase finds the one entry matching name's elements without regard
// to case.
func (d *Dir) foldCase(name string) (string, bool) {
	dir := "."
	for _, elem := range strings.Split(name, "/") {
		f, err := d.root.Open(dir)
		if err != nil {
			return "", false
		}
		entries, err := f.ReadDir(-1)
		f.Close()
		if err != nil {
			return "", false
		}
		match := ""
		for _, e := range entries {
			if strings.EqualFold(e.Name(), elem) {
				if match != "" {
					return "", false // ambiguous
				}
				match = e.Name()
			}
		}
		if match == "" {
			return "", false
		}
		dir = path.Join(dir, match)
	}
	return dir, true
}

// Bytes serves fixed content under one name.
func Bytes(name string, content []byte) Route {
	return RouteFunc(func(n string) (io.ReadCloser, int64, error) {
		if n != name {
			return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, n)
		}
		return io.NopCloser(strings.NewReader(string(content))), int64(len(content)), nil
	})
}
