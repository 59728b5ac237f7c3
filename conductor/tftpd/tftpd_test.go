package tftpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// capture is an io.ReaderFrom standing in for a transfer (Smee's route
// tests): it records what the handler would send.
type capture struct {
	bytes.Buffer
	size int64
}

func (c *capture) SetSize(n int64) { c.size = n }
func (c *capture) RemoteAddr() net.UDPAddr {
	return net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 2070}
}

// bootRoot builds a TFTP root with a file, a subdirectory, a symlink
// inside the root and symlinks that escape it; next to it lies a secret
// that must never be served.
func bootRoot(t *testing.T) (string, string) {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "tftp")
	must(t, os.MkdirAll(filepath.Join(root, "efi"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "undionly.kpxe"), []byte("BIOS iPXE"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "efi", "snponly.efi"), []byte("UEFI iPXE"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "Case.BIN"), []byte("mixed case"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "dup"), []byte("lower"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "DUP"), []byte("upper"), 0o644))
	secret := filepath.Join(base, "secret")
	must(t, os.WriteFile(secret, []byte("SECRET"), 0o600))
	must(t, os.Symlink("undionly.kpxe", filepath.Join(root, "link-inside")))
	must(t, os.Symlink(secret, filepath.Join(root, "link-absolute")))
	must(t, os.Symlink("../secret", filepath.Join(root, "link-relative")))
	must(t, os.Symlink(base, filepath.Join(root, "dir-link")))
	return root, secret
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newServer(t *testing.T, root string, opts Options) *Server {
	t.Helper()
	d, err := OpenDir(root)
	must(t, err)
	t.Cleanup(func() { d.Close() })
	return New(testLog(t), opts, Bytes("ingot.txt", []byte("from memory")), d)
}

func TestRoutes(t *testing.T) {
	root, _ := bootRoot(t)
	s := newServer(t, root, Options{})
	for _, tc := range []struct {
		name, file string
		want       string
		wantErr    error
	}{
		{name: "plain file", file: "undionly.kpxe", want: "BIOS iPXE"},
		{name: "file in a subdirectory", file: "efi/snponly.efi", want: "UEFI iPXE"},
		{name: "dot and double slash", file: "./efi//snponly.efi", want: "UEFI iPXE"},
		{name: "DOS separators", file: `efi\snponly.efi`, want: "UEFI iPXE"},
		{name: "first route wins", file: "ingot.txt", want: "from memory"},
		{name: "odd case", file: "UNDIONLY.KPXE", want: "BIOS iPXE"},
		{name: "odd case in a directory", file: "EFI/SnpOnly.efi", want: "UEFI iPXE"},
		{name: "odd case of a mixed-case name", file: "case.bin", want: "mixed case"},
		{name: "exact name among case twins", file: "DUP", want: "upper"},
		{name: "ambiguous case twins", file: "Dup", wantErr: ErrNotFound},
		{name: "symlink inside the root", file: "link-inside", want: "BIOS iPXE"},
		{name: "unknown file", file: "pxelinux.0", wantErr: ErrNotFound},
		{name: "directory", file: "efi", wantErr: ErrNotFound},
		{name: "empty name", file: "", wantErr: ErrNotFound},
		{name: "parent traversal", file: "../secret", wantErr: ErrDenied},
		{name: "traversal after a directory", file: "efi/../../secret", wantErr: ErrDenied},
		{name: "DOS traversal", file: `..\secret`, wantErr: ErrDenied},
		{name: "absolute path", file: "/etc/passwd", wantErr: ErrDenied},
		{name: "absolute path to a served file", file: "/undionly.kpxe", wantErr: ErrDenied},
		{name: "drive letter", file: `C:\boot\undionly.kpxe`, wantErr: ErrDenied},
		{name: "symlink to an absolute path outside", file: "link-absolute", wantErr: ErrDenied},
		{name: "symlink to a relative path outside", file: "link-relative", wantErr: ErrDenied},
		{name: "through a directory symlink outside", file: "dir-link/secret", wantErr: ErrDenied},
		{name: "NUL byte", file: "undionly.kpxe\x00x", wantErr: ErrDenied},
		{name: "newline", file: "undionly\n.kpxe", wantErr: ErrDenied},
		{name: "overlong name", file: strings.Repeat("a", MaxNameLen+1), wantErr: ErrDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c capture
			err := s.ReadHandler(tc.file, &c)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ReadHandler(%q) = %v, want %v", tc.file, err, tc.wantErr)
				}
				if c.Len() != 0 {
					t.Fatalf("ReadHandler(%q) sent %q despite the error", tc.file, c.String())
				}
				if strings.Contains(err.Error(), root) {
					t.Errorf("error %q reveals the host path", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadHandler(%q) = %v", tc.file, err)
			}
			if c.String() != tc.want || c.size != int64(len(tc.want)) {
				t.Errorf("ReadHandler(%q) sent %q (tsize %d), want %q", tc.file, c.String(), c.size, tc.want)
			}
		})
	}
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"undionly.kpxe", "../x", "/x", `a\..\..\b`, "a/./b//c", "C:x", "\x00", "..", "a/..", "...", "é/ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		clean, err := CleanName(name)
		if err != nil {
			if !errors.Is(err, ErrDenied) && !errors.Is(err, ErrNotFound) {
				t.Fatalf("CleanName(%q) = %v: not a classified error", name, err)
			}
			return
		}
		if strings.HasPrefix(clean, "/") || strings.Contains("/"+clean+"/", "/../") || clean == "." || clean == "" {
			t.Fatalf("CleanName(%q) = %q escapes the root", name, clean)
		}
		if strings.ContainsAny(clean, "\\\x00\n\r") {
			t.Fatalf("CleanName(%q) = %q keeps unsafe characters", name, clean)
		}
		if again, err := CleanName(clean); err != nil || again != clean {
			t.Fatalf("CleanName is not idempotent: %q -> %q -> %q, %v", name, clean, again, err)
		}
	})
}

// serve starts s on a loopback socket and returns its address; the
// server stops (and is checked for leaked goroutines) when the test ends.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	before := runtime.NumGoroutine()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		checkGoroutines(t, before)
	})
	return conn.LocalAddr().String()
}

func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			return
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}

func fetch(t *testing.T, addr, name string, blksize int, tsize bool) ([]byte, int64, error) {
	t.Helper()
	c, err := tftp.NewClient(addr)
	must(t, err)
	c.SetTimeout(150 * time.Millisecond)
	c.SetRetries(10)
	c.SetBackoff(func(int) time.Duration { return time.Millisecond })
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(tsize)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, 0, err
	}
	size, _ := wt.(tftp.IncomingTransfer).Size() // only valid before WriteTo
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return nil, 0, err
	}
	return b.Bytes(), size, nil
}

func randomFile(t *testing.T, dir, name string, n int) []byte {
	t.Helper()
	data := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	r.Read(data)
	must(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
	return data
}

func TestLoopback(t *testing.T) {
	root, _ := bootRoot(t)
	// 300 000 bytes is not a multiple of any block size, and needs more
	// than 512 blocks of 512 bytes.
	data := randomFile(t, root, "ipxe.efi", 300_000)
	exact := randomFile(t, root, "exact.bin", 8192*4) // ends with an empty block
	addr := serve(t, newServer(t, root, Options{}))
	for _, blksize := range []int{0, 512, 1468, 8192} {
		for _, tsize := range []bool{false, true} {
			t.Run(fmt.Sprintf("blksize %d tsize %v", blksize, tsize), func(t *testing.T) {
				got, size, err := fetch(t, addr, "ipxe.efi", blksize, tsize)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("got %d bytes, want the %d bytes of the file", len(got), len(data))
				}
				if tsize && size != int64(len(data)) {
					t.Errorf("tsize = %d, want %d", size, len(data))
				}
				got, _, err = fetch(t, addr, "exact.bin", blksize, tsize)
				if err != nil || !bytes.Equal(got, exact) {
					t.Errorf("block-aligned file: %d bytes, %v", len(got), err)
				}
			})
		}
	}
	t.Run("unknown file gets an error packet", func(t *testing.T) {
		_, _, err := fetch(t, addr, "missing.efi", 0, false)
		if err == nil || !strings.Contains(err.Error(), "file not found") {
			t.Errorf("fetch of a missing file = %v, want a file-not-found error packet", err)
		}
	})
	t.Run("traversal gets an error packet", func(t *testing.T) {
		_, _, err := fetch(t, addr, "../secret", 0, false)
		if err == nil || !strings.Contains(err.Error(), "access violation") {
			t.Errorf("fetch of ../secret = %v, want an access violation error packet", err)
		}
	})
	t.Run("concurrent transfers", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				got, _, err := fetch(t, addr, "ipxe.efi", []int{512, 1468, 8192, 0}[i], true)
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("transfer %d: %d bytes, %v", i, len(got), err)
				}
			})
		}
		wg.Wait()
	})
}

// lossyConn drops every k-th packet it is asked to send.
type lossyConn struct {
	net.PacketConn
	every int
	mu    sync.Mutex
	n     int
	drops int
}

func (c *lossyConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	c.n++
	drop := c.n%c.every == 0
	if drop {
		c.drops++
	}
	c.mu.Unlock()
	if drop {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *lossyConn) dropped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drops
}

// lossyRelay sits between a TFTP client and server: the client talks to
// its address, it forwards to the server's port and then to the transfer
// port the server answers from, and both of its sockets are lossy
// PacketConns. (pin/tftp opens a socket per transfer, so loss must be
// injected on the path, not on the listening socket.)
func lossyRelay(t *testing.T, server string, every int) (string, *lossyConn, *lossyConn) {
	t.Helper()
	front, err := net.ListenPacket("udp4", "127.0.0.1:0")
	must(t, err)
	back, err := net.ListenPacket("udp4", "127.0.0.1:0")
	must(t, err)
	srvAddr, err := net.ResolveUDPAddr("udp4", server)
	must(t, err)
	toServer := &lossyConn{PacketConn: back, every: every}
	toClient := &lossyConn{PacketConn: front, every: every + 1}
	var mu sync.Mutex
	var client, transfer net.Addr = nil, srvAddr
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			client = from
			dst := transfer
			mu.Unlock()
			toServer.WriteTo(buf[:n], dst)
		}
	})
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := back.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			transfer = from
			dst := client
			mu.Unlock()
			if dst != nil {
				toClient.WriteTo(buf[:n], dst)
			}
		}
	})
	t.Cleanup(func() { front.Close(); back.Close(); wg.Wait() })
	return front.LocalAddr().String(), toServer, toClient
}

func TestLossyTransferCompletes(t *testing.T) {
	root, _ := bootRoot(t)
	data := randomFile(t, root, "undionly.kpxe", 40_000)
	addr := serve(t, newServer(t, root, Options{Timeout: 50 * time.Millisecond, Retries: 10,
		Backoff: func(int) time.Duration { return time.Millisecond }}))
	for _, tc := range []struct {
		blksize, every int
	}{{512, 7}, {1468, 5}, {8192, 3}} {
		t.Run(fmt.Sprintf("blksize %d drop every %d", tc.blksize, tc.every), func(t *testing.T) {
			relay, up, down := lossyRelay(t, addr, tc.every)
			got, _, err := fetch(t, relay, "undionly.kpxe", tc.blksize, true)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, want %d identical bytes", len(got), len(data))
			}
			if up.dropped() == 0 || down.dropped() == 0 {
				t.Errorf("the relay dropped %d client and %d server packets; the test lost nothing", up.dropped(), down.dropped())
			}
		})
	}
}

// countHandler counts debug records with a given message.
type countHandler struct {
	slog.Handler
	mu    *sync.Mutex
	count map[string]int
}

func (h countHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.count[r.Message]++
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h countHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return countHandler{h.Handler.WithAttrs(a), h.mu, h.count}
}

func TestMalformedPacketsAreDropped(t *testing.T) {
	root, _ := bootRoot(t)
	data := randomFile(t, root, "undionly.kpxe", 5000)
	d, err := OpenDir(root)
	must(t, err)
	defer d.Close()
	h := countHandler{slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}), &sync.Mutex{}, map[string]int{}}
	addr := serve(t, New(slog.New(h), Options{Timeout: 200 * time.Millisecond}, d))

	conn, err := net.Dial("udp4", addr)
	must(t, err)
	defer conn.Close()
	oversized := append([]byte{0, 1}, bytes.Repeat([]byte("A"), 2000)...)
	oversized = append(oversized, 0, 'o', 'c', 't', 'e', 't', 0)
	for _, p := range [][]byte{
		{},                       // empty datagram
		{0},                      // short
		{0, 9, 'x', 0},           // unknown opcode
		{0, 3, 0, 1, 'd', 'a'},   // DATA to the listening port
		{0, 4, 0, 1},             // ACK to the listening port
		{0, 1, 'x'},              // RRQ without terminators
		{0, 1, 'a', 'b', 'c', 0}, // RRQ without a mode
		oversized,                // larger than any request
		bytes.Repeat([]byte{0xff}, 9000),
	} {
		if _, err := conn.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	// A write request is refused with an error packet.
	c, err := tftp.NewClient(addr)
	must(t, err)
	c.SetTimeout(300 * time.Millisecond)
	c.SetRetries(2)
	if rf, err := c.Send("upload.bin", "octet"); err == nil {
		_, err = rf.ReadFrom(strings.NewReader("data"))
		if err == nil {
			t.Error("a write request succeeded")
		}
	}
	// The server still serves.
	got, _, err := fetch(t, addr, "undionly.kpxe", 1468, true)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after malformed packets: %d bytes, %v", len(got), err)
	}
	h.mu.Lock()
	dropped := h.count["tftp packet dropped"]
	h.mu.Unlock()
	if dropped < 5 {
		t.Errorf("%d malformed packets logged as dropped, want at least 5", dropped)
	}
	if _, err := os.Stat(filepath.Join(root, "upload.bin")); err == nil {
		t.Error("a write request created a file")
	}
}

func TestServeStopsWithContext(t *testing.T) {
	root, _ := bootRoot(t)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newServer(t, root, Options{}).Serve(ctx, conn) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := conn.WriteTo([]byte{0}, conn.LocalAddr()); err == nil {
		t.Error("the listening socket is still open after Serve returned")
	}
}

// TestSecondServerOnSamePort: binding a second server to a taken port is
// a clear error at start-up.
func TestSecondServerOnSamePort(t *testing.T) {
	first, err := Listen("127.0.0.1:0")
	must(t, err)
	defer first.Close()
	_, err = Listen(first.LocalAddr().String())
	if err == nil || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), first.LocalAddr().String()) {
		t.Errorf("second Listen = %v, want an 'already in use' error naming the address", err)
	}
}

func TestWriteErrorIsReturned(t *testing.T) {
	var w failingReaderFrom
	root, _ := bootRoot(t)
	if err := newServer(t, root, Options{}).ReadHandler("undionly.kpxe", w); err == nil {
		t.Error("a failed transfer reported success")
	}
}

type failingReaderFrom struct{}

func (failingReaderFrom) ReadFrom(io.Reader) (int64, error) { return 0, errors.New("client went away") }
