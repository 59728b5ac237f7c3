// Package vmtest gives tests what booting the deploy ramdisk needs: the
// repository's root, Debian's kernel (scripts/fetch-kernel.sh) and the
// ramdisk itself (package initramfs, reused while its inputs are
// unchanged). Missing peers skip locally and fail under CI=true (package
// peertest). It is imported only from tests.
package vmtest

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ingot-dev/ingot/initramfs"
	"github.com/ingot-dev/ingot/internal/peertest"
)

// Root returns the repository's root: the directory holding go.mod.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Kernel returns the vmlinuz of Debian's kernel of the given flavor
// ("cloud-amd64" or "amd64"), fetched once into build/kernel.
func Kernel(t testing.TB, flavor string) string {
	t.Helper()
	peertest.Binary(t, "apt-get", "apt")
	peertest.Binary(t, "dpkg-deb", "dpkg")
	root := Root(t)
	cmd := exec.CommandContext(t.Context(), filepath.Join(root, "scripts", "fetch-kernel.sh"),
		filepath.Join(root, "build", "kernel"), flavor)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		peertest.Missing(t, "Debian's "+flavor+" kernel ("+err.Error()+": "+stderr.String()+")",
			"scripts/fetch-kernel.sh needs apt access")
	}
	return strings.TrimSpace(string(out))
}

// ramdiskMu serializes ramdisk builds within one test binary.
var ramdiskMu sync.Mutex

// Ramdisk returns the deploy ramdisk for kernel (a vmlinuz from Kernel),
// built as `make initramfs` builds it, into build/, and reused while
// nothing it is made from changed.
func Ramdisk(t testing.TB, kernel string) initramfs.Result {
	t.Helper()
	ramdiskMu.Lock()
	defer ramdiskMu.Unlock()
	root := Root(t)
	mods, err := initramfs.ModulesDirFor(kernel)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "initramfs", "modules.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	list, err := initramfs.ParseList(f)
	if err != nil {
		t.Fatal(err)
	}
	name := "initramfs-" + filepath.Base(mods) + ".cpio.gz"
	res, err := initramfs.Build(t.Context(), initramfs.Options{
		ModuleRoot: root, Modules: mods, List: list, Reuse: true,
		Out: filepath.Join(root, "build", "test", name),
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			peertest.Missing(t, "the go command", "install Go")
		}
		t.Fatalf("build the ramdisk: %v", err)
	}
	return res
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
