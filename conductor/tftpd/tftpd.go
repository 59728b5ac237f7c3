// Package tftpd is the conductor's read-only TFTP server, built on
// github.com/pin/tftp/v3. It carries only the small first-stage iPXE
// binaries (undionly.kpxe, snponly.efi, ipxe.efi); everything larger goes
// over HTTP.
//
// A request's file name is cleaned first (CleanName: no "..", no absolute
// paths, no control characters), then offered to an ordered list of
// routes; the first route that knows the name serves it. Dir serves a
// directory through os.Root, so a symbolic link can never lead outside it.
// Writes are refused. Options blksize (clamped to the interface MTU) and
// tsize are honoured; malformed packets are dropped with a debug log and
// the server keeps serving.
package tftpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/pin/tftp/v3"
)

// Errors a request can end with; the client sees the message in a TFTP
// error packet, never a host path.
var (
	ErrNotFound = errors.New("file not found")
	ErrDenied   = errors.New("access violation")
)

// MaxNameLen bounds a requested file name (a whole request must fit in
// one 512-byte packet anyway).
const MaxNameLen = 255

// Route serves the file names it knows.
type Route interface {
	// Open returns the content of name (already cleaned by CleanName) and
	// its size, or -1 if unknown. An error wrapping ErrNotFound lets the
	// next route try; any other error ends the request.
	Open(name string) (io.ReadCloser, int64, error)
}

// RouteFunc adapts a function to a Route.
type RouteFunc func(name string) (io.ReadCloser, int64, error)

// Open calls f.
func (f RouteFunc) Open(name string) (io.ReadCloser, int64, error) { return f(name) }

// Options configure a Server. Zero values pick the defaults.
type Options struct {
	// Timeout is how long the server waits for an acknowledgement before
	// sending a block again (2 s).
	Timeout time.Duration
	// Retries is how often a block is sent again before the transfer is
	// abandoned (5).
	Retries int
	// Backoff is the extra wait before the attempt-th resend; pin/tftp
	// waits a random time up to 1 s when nil.
	Backoff func(attempt int) time.Duration
}

// Server is a read-only TFTP server over an ordered list of routes.
type Server struct {
	routes []Route
	log    *slog.Logger
	opts   Options
}

// New returns a Server that answers from routes, in order.
func New(log *slog.Logger, opts Options, routes ...Route) *Server {
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Retries == 0 {
		opts.Retries = 5
	}
	return &Server{routes: routes, log: log, opts: opts}
}

// CleanName checks a requested file name and returns it relative to the
// server's root: backslashes become slashes (some firmware sends DOS
// paths), "./" and duplicate slashes go away. Absolute paths, drive
// letters, ".." elements, control characters and overlong names are
// refused with ErrDenied; an empty name with ErrNotFound.
func CleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty file name", ErrNotFound)
	}
	if len(name) > MaxNameLen {
		return "", fmt.Errorf("%w: file name longer than %d bytes", ErrDenied, MaxNameLen)
	}
	for _, r := range name {
		if r < ' ' || r == 0x7f || r == 0xfffd {
			return "", fmt.Errorf("%w: control or invalid characters in file name", ErrDenied)
		}
	}
	n := strings.ReplaceAll(name, `\`, "/")
	if strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("%w: absolute path %q", ErrDenied, name)
	}
	for _, elem := range strings.Split(n, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%w: %q leaves the root", ErrDenied, name)
		}
	}
	n = path.Clean(n)
	if len(n) >= 2 && n[1] == ':' && ('a' <= n[0]|0x20 && n[0]|0x20 <= 'z') {
		return "", fmt.Errorf("%w: drive letter in %q", ErrDenied, name)
	}
	if n == "." || !fs.ValidPath(n) {
		return "", fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return n, nil
}

// ReadHandler answers one read request: it is what pin/tftp calls, and
// what route-level tests call with an io.ReaderFrom capture.
func (s *Server) ReadHandler(name string, rf io.ReaderFrom) error {
	log := s.log.With("file", name)
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		addr := ot.RemoteAddr()
		log = log.With("client", addr.String())
	}
	clean, err := CleanName(name)
	if err != nil {
		log.Info("tftp request refused", "err", err)
		return err
	}
	for _, r := range s.routes {
		rc, size, err := r.Open(clean)
		if errors.Is(err, ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			log.Debug("tftp route miss", "err", err)
			continue
		}
		if err != nil {
			log.Info("tftp request refused", "err", err)
			return err
		}
		defer rc.Close()
		if ot, ok := rf.(tftp.OutgoingTransfer); ok && size >= 0 {
			ot.SetSize(size)
		}
		start := time.Now()
		n, err := rf.ReadFrom(rc)
		if err != nil {
			log.Info("tftp transfer failed", "bytes", n, "err", err)
			return err
		}
		log.Info("tftp sent", "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
		return nil
	}
	log.Info("tftp file not found")
	return ErrNotFound
}

// Listen opens the UDP socket a Server serves on. A port another program
// holds (tftpd-hpa, dnsmasq, a second conductor) is a clear error.
func Listen(addr string) (net.PacketConn, error) {
	conn, err := net.ListenPacket("udp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen for tftp on %s: %w (is another TFTP server, such as tftpd-hpa or dnsmasq, running?)", addr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listen for tftp on %s: %w", addr, err)
	}
	return conn, nil
}

// Serve answers requests on conn until ctx ends, then closes conn and
// waits for running transfers to finish or time out. Each transfer runs
// on its own socket, bound to the address the request was sent to.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	srv := tftp.NewServer(s.ReadHandler, nil)
	srv.SetTimeout(s.opts.Timeout)
	srv.SetRetries(s.opts.Retries)
	if s.opts.Backoff != nil {
		srv.SetBackoff(s.opts.Backoff)
	}
	srv.SetHook(hook{s.log})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(conn) }()
	select {
	case <-ctx.Done():
		srv.Shutdown()
		// Shutdown closes the socket only once Serve has started;
		// close it in any case so Serve returns.
		conn.Close()
		<-done
		return nil
	case err := <-done:
		srv.Shutdown()
		conn.Close()
		return fmt.Errorf("serve tftp: %w", err)
	}
}

// hook logs what pin/tftp reports outside a read handler: malformed or
// unexpected packets on the listening socket and aborted transfers, at
// debug level (a UEFI client aborting its tsize probe is normal).
type hook struct{ log *slog.Logger }

func (h hook) OnSuccess(tftp.TransferStats) {}

func (h hook) OnFailure(st tftp.TransferStats, err error) {
	if st.Filename == "" {
		h.log.Debug("tftp packet dropped", "err", err)
		return
	}
	h.log.Debug("tftp transfer aborted", "file", st.Filename, "client", st.RemoteAddr.String(), "err", err)
}
