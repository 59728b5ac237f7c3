package ipmi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/clock"
	"github.com/bougou/go-ipmi/pkg/hal"
	"github.com/bougou/go-ipmi/pkg/hal/mock"
	"github.com/bougou/go-ipmi/pkg/server"
	"github.com/bougou/go-ipmi/pkg/transport/udp"
	"github.com/bougou/go-ipmi/pkg/types"
)

// testBMC is go-ipmi's reference BMC, in-process on a loopback UDP port,
// with a chassis that behaves like a machine and fault knobs at the
// network (drop packets) and the chassis (completion codes, hang).
type testBMC struct {
	Addr string
	Port int
	User string
	Pass string

	Chassis *testChassis
	conn    *faultConn
	srv     *server.Server
	cancel  context.CancelFunc
	done    chan struct{}
	stop    sync.Once
}

type bmcOptions struct {
	suites []types.CipherSuiteID // advertised; default 3 and 17
	pass   string
}

func startBMC(t testing.TB, o bmcOptions) *testBMC {
	t.Helper()
	if len(o.suites) == 0 {
		o.suites = []types.CipherSuiteID{types.CipherSuiteID3, types.CipherSuiteID17}
	}
	if o.pass == "" {
		o.pass = "s3cr3t-pw"
	}
	ch := &testChassis{}
	h := &testHAL{HAL: mock.New(), ch: ch}
	var guid [16]byte
	copy(guid[:], "ingot-test-bmc")
	b := bmc.New(bmc.DeviceInfo{DeviceID: 32, DeviceRevision: 1, FirmwareMajor: 1, IPMIVersion: 0x20, ManufacturerID: 0x000157, ProductID: 1},
		guid, h, bmc.WithClock(clock.Real), bmc.WithCipherSuites(o.suites))
	u, err := b.Users.Add(2, "admin")
	if err != nil {
		t.Fatal(err)
	}
	u.SetPassword([]byte(o.pass))
	u.Enabled = true
	u.ChannelAccess[1] = bmc.UserChannelAccess{MaxPrivilege: bmc.PrivilegeLevelAdministrator, Enabled: true}

	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	fc := &faultConn{inner: udp.Wrap(uc)}
	srv := server.NewServer(b, fc, server.WithCipherSuites(o.suites))
	ctx, cancel := context.WithCancel(context.Background())
	tb := &testBMC{
		Addr: "127.0.0.1", Port: uc.LocalAddr().(*net.UDPAddr).Port, User: "admin", Pass: o.pass,
		Chassis: ch, conn: fc, srv: srv, cancel: cancel, done: make(chan struct{}),
	}
	go func() {
		defer close(tb.done)
		_ = srv.Serve(ctx)
	}()
	t.Cleanup(tb.Stop)
	return tb
}

// Info is driver_info for this BMC.
func (b *testBMC) Info() map[string]any {
	return map[string]any{
		"ipmi_address":  b.Addr,
		"ipmi_port":     float64(b.Port),
		"ipmi_username": b.User,
		"ipmi_password": b.Pass,
	}
}

// Stop shuts the BMC down; its port then refuses packets.
func (b *testBMC) Stop() {
	b.stop.Do(func() {
		b.cancel()
		_ = b.srv.Close()
		<-b.done
	})
}

// Blackhole makes the BMC drop every packet until the returned function is
// called, as a hung BMC does.
func (b *testBMC) Blackhole() (release func()) {
	b.conn.drop.Store(-1)
	return func() { b.conn.drop.Store(0) }
}

// DropNext drops the next n packets the BMC receives.
func (b *testBMC) DropNext(n int64) { b.conn.drop.Store(n) }

// Received counts the packets the BMC received (dropped ones included).
func (b *testBMC) Received() int64 { return b.conn.received.Load() }

// faultConn drops received packets on demand: drop > 0 drops that many,
// drop < 0 drops all.
type faultConn struct {
	inner    *udp.Conn
	drop     atomic.Int64
	received atomic.Int64
}

func (c *faultConn) ReadFrom(buf []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.inner.ReadFrom(buf)
		if err != nil {
			return n, addr, err
		}
		c.received.Add(1)
		d := c.drop.Load()
		switch {
		case d < 0:
			continue
		case d > 0:
			if c.drop.CompareAndSwap(d, d-1) {
				continue
			}
		}
		return n, addr, nil
	}
}

func (c *faultConn) WriteTo(b []byte, addr net.Addr) (int, error) { return c.inner.WriteTo(b, addr) }
func (c *faultConn) Close() error                                 { return c.inner.Close() }

type testHAL struct {
	*mock.HAL
	ch *testChassis
}

func (h *testHAL) Chassis() hal.ChassisHAL { return h.ch }

// testChassis behaves like a machine: power cycle and reset leave it on
// (reset only when it was on), soft shutdown turns it off unless
// IgnoreSoft. Fail makes the next chassis controls answer a completion
// code. It records every control and the raw boot option parameters set.
type testChassis struct {
	mu         sync.Mutex
	on         bool
	ignoreSoft bool
	flags      *types.BootOptionParam_BootFlags
	failCode   types.CompletionCode
	failN      int
	controls   []string
}

func (c *testChassis) SetOn(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = on
}

func (c *testChassis) IsOn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on
}

// FailControls makes the next n chassis controls answer cc.
func (c *testChassis) FailControls(n int, cc types.CompletionCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failN, c.failCode = n, cc
}

func (c *testChassis) IgnoreSoft(ignore bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ignoreSoft = ignore
}

func (c *testChassis) Controls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.controls...)
}

// RawBootFlags is the boot flags parameter as the BMC stored it (5 bytes).
func (c *testChassis) RawBootFlags() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flags == nil {
		return nil
	}
	return c.flags.Pack()
}

func (c *testChassis) control(name string, apply func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.controls = append(c.controls, name)
	if c.failN > 0 {
		c.failN--
		return c.failCode
	}
	apply()
	return nil
}

func (c *testChassis) PowerState(context.Context) (bool, error) { return c.IsOn(), nil }
func (c *testChassis) SetPower(_ context.Context, on bool) error {
	return c.control(fmt.Sprintf("power %v", on), func() { c.on = on })
}
func (c *testChassis) PowerCycle(context.Context) error {
	return c.control("cycle", func() { c.on = true })
}
func (c *testChassis) ColdReset(context.Context) error { return c.control("reset", func() {}) }
func (c *testChassis) WarmReset(context.Context) error {
	// go-ipmi's server maps Chassis Control "soft shutdown" here.
	return c.control("soft", func() {
		if !c.ignoreSoft {
			c.on = false
		}
	})
}
func (c *testChassis) Identify(context.Context, uint8) error { return hal.ErrNotSupported }
func (c *testChassis) IntrusionState(context.Context) (bool, error) {
	return false, hal.ErrNotSupported
}

func (c *testChassis) SetBootFlags(_ context.Context, f *types.BootOptionParam_BootFlags) error {
	if f == nil {
		return hal.ErrNotSupported
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := *f
	c.flags = &cp
	return nil
}

func (c *testChassis) GetBootFlags(context.Context) (*types.BootOptionParam_BootFlags, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flags == nil {
		return nil, hal.ErrNotSupported
	}
	cp := *c.flags
	return &cp, nil
}

func (c *testChassis) SetBootInfoAcknowledge(context.Context, *types.BootOptionParam_BootInfoAcknowledge) error {
	return nil
}

func (c *testChassis) GetBootInfoAcknowledge(context.Context) (*types.BootOptionParam_BootInfoAcknowledge, error) {
	return nil, errors.ErrUnsupported
}
