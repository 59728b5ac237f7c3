//go:build interop

package tftpd

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ingot-dev/ingot/internal/peertest"
)

// ipxeRoot is a TFTP root holding the real iPXE binaries of Debian's ipxe
// package.
func ipxeRoot(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	root := t.TempDir()
	files := map[string][]byte{}
	for _, f := range []string{"undionly.kpxe", "snponly.efi", "ipxe.efi"} {
		data, err := os.ReadFile(filepath.Join("/usr/lib/ipxe", f))
		if err != nil {
			peertest.Missing(t, "/usr/lib/ipxe/"+f, "apt-get install ipxe (scripts/install-deps.sh)")
		}
		must(t, os.WriteFile(filepath.Join(root, f), data, 0o644))
		files[f] = data
	}
	return root, files
}

func hostPort(t *testing.T, addr string) (string, string) {
	h, p, err := net.SplitHostPort(addr)
	must(t, err)
	return h, p
}

// TestInteropClients fetches the iPXE binaries with real TFTP clients:
// atftp (with blksize and tsize options), tftp-hpa and busybox.
func TestInteropClients(t *testing.T) {
	root, files := ipxeRoot(t)
	host, port := hostPort(t, serve(t, newServer(t, root, Options{})))
	atftp := peertest.Binary(t, "atftp", "atftp")
	tftpHPA := peertest.Binary(t, "tftp", "tftp-hpa")
	busybox := peertest.Binary(t, "busybox", "busybox")
	type client struct {
		name string
		argv func(remote, local string) []string
	}
	clients := []client{
		{"atftp", func(r, l string) []string { return []string{atftp, "-g", "-r", r, "-l", l, host, port} }},
		{"atftp blksize 1468 tsize", func(r, l string) []string {
			return []string{atftp, "--option", "blksize 1468", "--option", "tsize", "-g", "-r", r, "-l", l, host, port}
		}},
		{"atftp blksize 8192", func(r, l string) []string {
			return []string{atftp, "--option", "blksize 8192", "-g", "-r", r, "-l", l, host, port}
		}},
		{"tftp-hpa", func(r, l string) []string { return []string{tftpHPA, host, port, "-m", "binary", "-c", "get", r, l} }},
		{"busybox tftp blksize 1468", func(r, l string) []string {
			return []string{busybox, "tftp", "-g", "-b", "1468", "-r", r, "-l", l, host, port}
		}},
	}
	for _, c := range clients {
		for name, want := range files {
			t.Run(c.name+" "+name, func(t *testing.T) {
				local := filepath.Join(t.TempDir(), "out")
				argv := c.argv(name, local)
				out, err := exec.CommandContext(t.Context(), argv[0], argv[1:]...).CombinedOutput()
				if err != nil {
					t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
				}
				got, err := os.ReadFile(local)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%s: got %d bytes (%v), want the %d bytes of %s", c.name, len(got), err, len(want), name)
				}
			})
		}
	}
	t.Run("a traversal gets an error from every client", func(t *testing.T) {
		for _, c := range clients {
			local := filepath.Join(t.TempDir(), "out")
			argv := c.argv("../../../../etc/passwd", local)
			out, err := exec.CommandContext(t.Context(), argv[0], argv[1:]...).CombinedOutput()
			data, _ := os.ReadFile(local)
			if bytes.Contains(data, []byte("root:")) {
				t.Fatalf("%s fetched /etc/passwd", c.name)
			}
			// tftp-hpa exits 0 even after an error packet; the message
			// is what it prints.
			if err == nil && !strings.Contains(string(out), "access violation") {
				t.Errorf("%s: no error for a traversal:\n%s", c.name, out)
			}
		}
	})
	t.Run("an unknown file gets file not found", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "out")
		out, err := exec.CommandContext(t.Context(), atftp, "-g", "-r", "pxelinux.0", "-l", local, host, port).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "file not found") {
			t.Errorf("atftp for a missing file: %v\n%s", err, out)
		}
		fmt.Fprint(t.Output(), string(out))
	})
}
