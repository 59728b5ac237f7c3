// Package iscsitarget is the deploy agent's own iSCSI target: it exports
// one block device (or file) as LUN 1 of one IQN on one bound listen
// address, the layout ironic-python-agent used for the legacy iSCSI
// deploy, so the conductor's initiator (conductor/iscsi) can write an
// image onto the node's disk.
//
// Scope: RFC 7143 at ErrorRecoveryLevel 0, one connection per session,
// AuthMethod None or CHAP (MD5, one-way, mutual optional; credentials are
// passed in per deploy and never logged), CRC32C digests when the
// initiator asks, large advertised bursts, and the SBC-3 command subset
// an image writer and libiscsi's conformance suite use (INQUIRY with VPD
// pages, TEST UNIT READY, READ CAPACITY 10/16, READ/WRITE 6/10/12/16,
// WRITE AND VERIFY, VERIFY, ORWRITE, PRE-FETCH, MODE SENSE/SELECT(6),
// SYNCHRONIZE CACHE, START STOP UNIT, REPORT LUNS, REPORT SUPPORTED
// OPERATION CODES). LUN 0 is not a device (peripheral qualifier 3) but
// answers INQUIRY and REPORT LUNS.
//
// Faults stay contained: every connection runs in its own goroutine that
// recovers from panics, counts them (Stats) and drops only that
// connection, so a malformed PDU stream or a bug reachable from the
// network cannot take the agent down. There is no package state: several
// targets can run in one process, and Stop closes the listener and every
// session before it fsyncs and closes the device.
package iscsitarget

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ingot-dev/ingot/shared/iscsi"
)

// Config describes one target. Zero values of the tunables mean the
// documented defaults.
type Config struct {
	// Listen is the host:port to bind, e.g. "192.0.2.10:3260".
	Listen string
	// IQN is the target name, e.g. "iqn.2008-10.org.openstack:<node>".
	IQN string
	// Device is the block device or regular file exported as LUN 1.
	Device string
	// CHAPUser and CHAPSecret, when set, require the initiator to log in
	// with CHAP. The secret must be 12 to 255 bytes.
	CHAPUser, CHAPSecret string
	// MutualUser and MutualSecret let the initiator authenticate the
	// target (mutual CHAP); optional.
	MutualUser, MutualSecret string
	// BlockSize is the logical block size (default 512).
	BlockSize uint32
	// ReadOnly opens the device read-only; writes fail with DATA PROTECT.
	ReadOnly bool
	// MaxRecvDataSegmentLength is declared to initiators (default 512 KiB).
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength and FirstBurstLength cap the negotiation (defaults
	// 16 MiB - 1 KiB and 1 MiB).
	MaxBurstLength, FirstBurstLength uint32
	// LoginTimeout bounds the login phase of a connection (default 15 s).
	LoginTimeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// String describes the configuration without secrets.
func (c Config) String() string {
	return fmt.Sprintf("iscsitarget.Config{Listen:%s IQN:%s Device:%s CHAP:%v Mutual:%v}", c.Listen, c.IQN, c.Device,
		iscsi.Credentials{User: c.CHAPUser, Secret: c.CHAPSecret}, iscsi.Credentials{User: c.MutualUser, Secret: c.MutualSecret})
}

// GoString hides the secrets from %#v.
func (c Config) GoString() string { return c.String() }

// LogValue hides the secrets from slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("listen", c.Listen), slog.String("iqn", c.IQN), slog.String("device", c.Device),
		slog.Bool("chap", c.CHAPUser != ""), slog.Bool("mutual_chap", c.MutualUser != ""))
}

// Config errors.
var (
	ErrConfig = errors.New("invalid target configuration")
	ErrClosed = errors.New("target stopped")
)

func (c *Config) validate() error {
	if c.Listen == "" {
		return fmt.Errorf("%w: Listen is empty", ErrConfig)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("%w: Listen %q: %v", ErrConfig, c.Listen, err)
	}
	if !ValidIQN(c.IQN) {
		return fmt.Errorf("%w: IQN %q is not an iqn., eui. or naa. name", ErrConfig, c.IQN)
	}
	if (c.CHAPUser == "") != (c.CHAPSecret == "") {
		return fmt.Errorf("%w: CHAPUser and CHAPSecret must be set together", ErrConfig)
	}
	if c.CHAPUser != "" {
		if err := (iscsi.Credentials{User: c.CHAPUser, Secret: c.CHAPSecret}).Valid(); err != nil {
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	if c.MutualUser != "" || c.MutualSecret != "" {
		if c.CHAPUser == "" {
			return fmt.Errorf("%w: mutual CHAP needs CHAPUser", ErrConfig)
		}
		if err := (iscsi.Credentials{User: c.MutualUser, Secret: c.MutualSecret}).Valid(); err != nil {
			return fmt.Errorf("%w: mutual: %v", ErrConfig, err)
		}
		if c.MutualSecret == c.CHAPSecret {
			return fmt.Errorf("%w: the mutual secret must differ from the initiator's", ErrConfig)
		}
	}
	if c.BlockSize == 0 {
		c.BlockSize = 512
	}
	switch c.BlockSize {
	case 512, 1024, 2048, 4096:
	default:
		return fmt.Errorf("%w: BlockSize %d", ErrConfig, c.BlockSize)
	}
	if c.MaxRecvDataSegmentLength == 0 {
		c.MaxRecvDataSegmentLength = 512 << 10
	}
	if c.MaxBurstLength == 0 {
		c.MaxBurstLength = 16<<20 - 1024
	}
	if c.FirstBurstLength == 0 {
		c.FirstBurstLength = 1 << 20
	}
	for _, v := range []uint32{c.MaxRecvDataSegmentLength, c.MaxBurstLength, c.FirstBurstLength} {
		if v < 512 || v > iscsi.MaxDataSegmentLength {
			return fmt.Errorf("%w: segment and burst lengths must be 512..%d", ErrConfig, iscsi.MaxDataSegmentLength)
		}
	}
	if c.FirstBurstLength > c.MaxBurstLength {
		c.FirstBurstLength = c.MaxBurstLength
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// ValidIQN reports whether s is usable as a target name: an iqn., eui.
// or naa. name of 5 to 223 bytes without spaces, control characters or
// commas.
func ValidIQN(s string) bool {
	if len(s) < 5 || len(s) > 223 {
		return false
	}
	if !strings.HasPrefix(s, "iqn.") && !strings.HasPrefix(s, "eui.") && !strings.HasPrefix(s, "naa.") {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == ',' {
			return false
		}
	}
	return true
}

// Stats is a snapshot of a target's health.
type Stats struct {
	// Connections currently open.
	Connections int
	// Logins that reached full feature phase.
	Sessions int64
	// Panics contained (each dropped one connection).
	Panics int64
	// LastPanic describes the most recent contained panic.
	LastPanic string
}

// Target is a running iSCSI target.
type Target struct {
	cfg  Config
	log  *slog.Logger
	ln   net.Listener
	lu   *logicalUnit
	dev  io.Closer
	want iscsi.Params

	mu        sync.Mutex
	conns     map[*conn]struct{}
	tsih      uint16
	closed    bool
	lastPanic string

	wg       sync.WaitGroup
	sessions atomic.Int64
	panics   atomic.Int64
	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

// Start opens the device, binds the listen address and serves until Stop
// is called or ctx is cancelled.
func Start(ctx context.Context, cfg Config) (*Target, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	flag := os.O_RDWR
	if cfg.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(cfg.Device, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open device: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd) // works for block devices, unlike Stat
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size device %s: %w", cfg.Device, err)
	}
	t, err := start(ctx, cfg, f, f, size)
	if err != nil {
		f.Close()
		return nil, err
	}
	return t, nil
}

// Device is an open disk a target serves: a block device or a file
// (*os.File satisfies it), or a fault-injecting stand-in in tests.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
}

// StartDevice is Start over a disk the caller already opened (cfg.Device
// only names it in logs and the unit serial number); size is its size in
// bytes. Stop syncs and closes dev; when StartDevice fails, dev stays open.
func StartDevice(ctx context.Context, cfg Config, dev Device, size int64) (*Target, error) {
	return start(ctx, cfg, dev, dev, size)
}

// start serves dev (closed by Stop through closer) on cfg.Listen.
func start(ctx context.Context, cfg Config, dev blockDevice, closer io.Closer, size int64) (*Target, error) {
	t, err := newTarget(cfg, dev, closer, size)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", t.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	t.ln = ln
	t.log.Info("iscsi target started", "config", t.cfg, "blocks", t.lu.blocks, "block_size", t.cfg.BlockSize)
	t.wg.Add(1)
	go t.acceptLoop()
	go func() {
		select {
		case <-ctx.Done():
			_ = t.Stop()
		case <-t.done:
		}
	}()
	return t, nil
}

// newTarget builds a target over dev without a listener.
func newTarget(cfg Config, dev blockDevice, closer io.Closer, size int64) (*Target, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	blocks := uint64(size) / uint64(cfg.BlockSize)
	if blocks == 0 {
		return nil, fmt.Errorf("%w: device %s is smaller than one block", ErrConfig, cfg.Device)
	}
	sum := sha256.Sum256([]byte(cfg.IQN + "\x00" + cfg.Device))
	want := iscsi.DefaultParams()
	want.MaxRecvDataSegmentLength = cfg.MaxRecvDataSegmentLength
	want.MaxBurstLength = cfg.MaxBurstLength
	want.FirstBurstLength = cfg.FirstBurstLength
	want.InitialR2T = false
	want.ImmediateData = true
	want.MaxOutstandingR2T = 4
	want.HeaderDigest, want.DataDigest = true, true
	want.DefaultTime2Wait, want.DefaultTime2Retain = 0, 0
	return &Target{
		cfg:  cfg,
		log:  cfg.Logger,
		dev:  closer,
		want: want,
		lu: &logicalUnit{
			dev:       dev,
			blockSize: cfg.BlockSize,
			blocks:    blocks,
			iqn:       cfg.IQN,
			serial:    hex.EncodeToString(sum[:8]),
			naa:       3<<60 | binary.BigEndian.Uint64(sum[8:16])>>4,
			swp:       cfg.ReadOnly,
		},
		conns: map[*conn]struct{}{},
		done:  make(chan struct{}),
	}, nil
}

// Addr is the bound listen address (useful with port 0).
func (t *Target) Addr() net.Addr { return t.ln.Addr() }

// Stats reports connections and contained panics.
func (t *Target) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Stats{Connections: len(t.conns), Sessions: t.sessions.Load(), Panics: t.panics.Load(), LastPanic: t.lastPanic}
}

// Done is closed once Stop has begun.
func (t *Target) Done() <-chan struct{} { return t.done }

// Stop closes the listener and every connection, waits for their
// goroutines, then fsyncs and closes the device. It is safe to call more
// than once; later calls return the first result.
func (t *Target) Stop() error {
	t.stopOnce.Do(func() {
		close(t.done)
		t.mu.Lock()
		t.closed = true
		conns := make([]*conn, 0, len(t.conns))
		for c := range t.conns {
			conns = append(conns, c)
		}
		t.mu.Unlock()
		err := t.ln.Close()
		for _, c := range conns {
			c.nc.Close()
		}
		t.wg.Wait()
		if serr := t.lu.dev.Sync(); serr != nil {
			err = errors.Join(err, fmt.Errorf("sync device: %w", serr))
		}
		if cerr := t.dev.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close device: %w", cerr))
		}
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
		t.stopErr = err
		t.log.Info("iscsi target stopped", "iqn", t.cfg.IQN, "err", err)
	})
	return t.stopErr
}

func (t *Target) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		nc, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failures (EMFILE, ...): back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("iscsi accept failed", "err", err)
			select {
			case <-time.After(delay):
			case <-t.done:
				return
			}
			continue
		}
		delay = 0
		c := newConn(t, nc)
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			nc.Close()
			return
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serveConn(c)
	}
}

// serveConn runs one connection and contains any panic in it.
func (t *Target) serveConn(c *conn) {
	defer t.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			n := t.panics.Add(1)
			msg := fmt.Sprintf("%v", r)
			t.mu.Lock()
			t.lastPanic = msg
			t.mu.Unlock()
			t.log.Error("iscsi connection panicked; connection dropped, target keeps serving",
				"remote", c.nc.RemoteAddr().String(), "panic", msg, "panics", n, "stack", string(debug.Stack()))
		}
		c.nc.Close()
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
	}()
	c.serve()
}

// newTSIH returns a non-zero session handle.
func (t *Target) newTSIH() uint16 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tsih++
	if t.tsih == 0 {
		t.tsih = 1
	}
	return t.tsih
}

// register makes c the session of (initiator, isid); an older session
// with the same identity is closed (session reinstatement, RFC 7143
// §6.3.5).
func (t *Target) register(c *conn) {
	t.mu.Lock()
	var old []*conn
	for o := range t.conns {
		if o != c && o.sess != nil && o.sess.initiator == c.sess.initiator && o.sess.isid == c.sess.isid {
			old = append(old, o)
		}
	}
	t.mu.Unlock()
	for _, o := range old {
		t.log.Info("iscsi session reinstated", "initiator", c.sess.initiator)
		o.nc.Close()
	}
	t.sessions.Add(1)
}

// otherSessions calls fn for every full-feature session except c's, with
// t.mu held.
func (t *Target) otherSessions(c *conn, fn func(*session)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for o := range t.conns {
		if o != c && o.sess != nil {
			fn(o.sess)
		}
	}
}

// closeAll drops every connection (TARGET COLD RESET).
func (t *Target) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for o := range t.conns {
		o.nc.Close()
	}
}
