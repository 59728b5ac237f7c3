//go:build interop

package ipmi_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power"
	"github.com/ingot-dev/ingot/conductor/power/ipmi"
	"github.com/ingot-dev/ingot/conductor/power/ipmisim"
	"github.com/ingot-dev/ingot/conductor/power/powertest"
	"github.com/ingot-dev/ingot/internal/peertest"
)

// simController is the driver for an ipmi_sim node; extra overrides
// driver_info keys (nil values delete them).
func simController(t testing.TB, sim *ipmisim.Sim, opts ipmi.Options, extra map[string]any) (*ipmi.Controller, *logBuffer) {
	t.Helper()
	info := sim.DriverInfo()
	for k, v := range extra {
		if v == nil {
			delete(info, k)
			continue
		}
		info[k] = v
	}
	logs := &logBuffer{}
	c, err := ipmi.New(debugLogger(logs), opts).Controller(&node.Node{UUID: "n-1", DriverInfo: info})
	if err != nil {
		t.Fatal(err)
	}
	return c, logs
}

// ipmi_sim's boot devices: it answers 0xff to "safe" (force hard drive,
// safe mode) and keeps only the device, not the persistent or EFI bits.
var simBootDevices = []string{node.BootPXE, node.BootDisk, node.BootCDROM, node.BootBIOS}

func TestInteropContract(t *testing.T) {
	powertest.Run(t, func(t *testing.T) powertest.Target {
		sim := ipmisim.Start(t, ipmisim.Options{})
		c, _ := simController(t, sim, fast(), nil)
		return powertest.Target{
			Power: c,
			Boot:  c,
			Hang:  func(*testing.T) func() { return sim.Pause() },
			Break: func(*testing.T) { sim.Stop() },
		}
	}, powertest.Caps{NoPersistenceReadback: true, BootDevices: simBootDevices, Settle: 5 * time.Second, Bound: time.Second})
}

func TestInteropIpmitoolCrossCheck(t *testing.T) {
	peertest.Binary(t, "ipmitool", "ipmitool")
	sim := ipmisim.Start(t, ipmisim.Options{})
	c, _ := simController(t, sim, fast(), nil)
	ctx := t.Context()
	ipmitool := func(args ...string) string {
		t.Helper()
		out, err := sim.Ipmitool(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	t.Run("ipmitool sees the power the driver set", func(t *testing.T) {
		for _, tc := range []struct {
			target node.PowerState
			want   string
		}{{node.PowerOn, "Chassis Power is on"}, {node.PowerOff, "Chassis Power is off"}, {node.PowerReboot, "Chassis Power is on"}} {
			if err := c.SetPowerState(ctx, tc.target); err != nil {
				t.Fatal(err)
			}
			if out := ipmitool("power", "status"); !strings.Contains(out, tc.want) {
				t.Errorf("after %s, ipmitool power status = %q, want %q", tc.target, out, tc.want)
			}
		}
	})

	t.Run("the driver sees the power ipmitool set", func(t *testing.T) {
		for _, tc := range []struct {
			cmd  string
			want node.PowerState
		}{{"on", node.PowerOn}, {"off", node.PowerOff}, {"on", node.PowerOn}, {"soft", node.PowerOff}} {
			ipmitool("power", tc.cmd)
			if got, err := c.PowerState(ctx); err != nil || got != tc.want {
				t.Errorf("after ipmitool power %s, PowerState = %q, %v; want %q", tc.cmd, got, err, tc.want)
			}
		}
	})

	t.Run("ipmitool reads the boot device the driver set", func(t *testing.T) {
		want := map[string]string{
			node.BootPXE:   "Boot Device Selector : Force PXE",
			node.BootDisk:  "Boot Device Selector : Force Boot from default Hard-Drive",
			node.BootCDROM: "Boot Device Selector : Force Boot from CD/DVD",
			node.BootBIOS:  "Boot Device Selector : Force Boot into BIOS Setup",
		}
		for _, dev := range simBootDevices {
			for _, uefi := range []bool{false, true} {
				if err := c.SetBootDevice(ctx, dev, true, uefi); err != nil {
					t.Fatalf("SetBootDevice(%s, uefi=%v): %v", dev, uefi, err)
				}
				if out := ipmitool("chassis", "bootparam", "get", "5"); !strings.Contains(out, want[dev]) {
					t.Errorf("after SetBootDevice(%s, uefi=%v), ipmitool chassis bootparam get 5:\n%s\nwant %q", dev, uefi, out, want[dev])
				}
			}
		}
	})

	t.Run("the driver reads the boot device ipmitool set", func(t *testing.T) {
		for _, tc := range []struct{ bootdev, want string }{
			{"pxe", node.BootPXE}, {"disk", node.BootDisk}, {"cdrom", node.BootCDROM}, {"bios", node.BootBIOS}, {"none", ""},
		} {
			ipmitool("chassis", "bootdev", tc.bootdev)
			if got, _, err := c.BootDevice(ctx); err != nil || got != tc.want {
				t.Errorf("after ipmitool chassis bootdev %s, BootDevice = %q, %v; want %q", tc.bootdev, got, err, tc.want)
			}
		}
	})

	t.Run("the BMC received what Ironic sends", func(t *testing.T) {
		calls := sim.HookCalls()
		for _, want := range []string{"set power 1", "set power 0", "set shutdown 1", "set boot pxe", "set boot default", "set boot cdrom", "set boot bios"} {
			if !slices.Contains(calls, want) {
				t.Errorf("chassis hook never got %q; calls:\n%s", want, strings.Join(calls, "\n"))
			}
		}
		if slices.Contains(calls, "set reset 1") {
			t.Error("a reboot used a chassis reset, want power off then on as Ironic does")
		}
	})
}

func TestInteropSafeBootDeviceRefused(t *testing.T) {
	sim := ipmisim.Start(t, ipmisim.Options{})
	c, logs := simController(t, sim, fast(), nil)
	err := c.SetBootDevice(t.Context(), node.BootSafe, false, false)
	if !errors.Is(err, power.ErrRejected) || bmcErr(t, err).Attempts != 1 {
		t.Fatalf("SetBootDevice(safe) on ipmi_sim = %v, want a permanent power.ErrRejected", err)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("a refused command was retried:\n%s", logs)
	}
}

func TestInteropUnreachable(t *testing.T) {
	tests := []struct {
		name  string
		setup func(sim *ipmisim.Sim)
		bound time.Duration
	}{
		{name: "ipmi_sim stopped", setup: func(sim *ipmisim.Sim) { sim.Stop() }, bound: 2 * time.Second},
		{name: "ipmi_sim hung", setup: func(sim *ipmisim.Sim) { t.Cleanup(sim.Pause()) }, bound: 4 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim := ipmisim.Start(t, ipmisim.Options{})
			c, logs := simController(t, sim, fast(), nil)
			tc.setup(sim)
			start := time.Now()
			err := c.SetPowerState(t.Context(), node.PowerOn)
			took := time.Since(start)
			if !errors.Is(err, power.ErrUnreachable) {
				t.Fatalf("SetPowerState = %v, want power.ErrUnreachable", err)
			}
			if be := bmcErr(t, err); be.Attempts != fast().Attempts || be.BMC != c.BMC() {
				t.Errorf("error %+v: want %d attempts at %s", be, fast().Attempts, c.BMC())
			}
			if n := strings.Count(logs.String(), "retrying"); n != fast().Attempts-1 {
				t.Errorf("%d retries logged, want %d", n, fast().Attempts-1)
			}
			if took > tc.bound {
				t.Errorf("gave up after %s, want within %s", took, tc.bound)
			}
			t.Logf("%s: %v (after %s)", tc.name, err, took.Round(time.Millisecond))
		})
	}
}

func TestInteropAuthFailures(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]any
	}{
		{name: "wrong password", extra: map[string]any{"ipmi_password": "not-the-password"}},
		{name: "wrong password, default cipher suite list", extra: map[string]any{"ipmi_password": "not-the-password", "ipmi_cipher_suite": nil}},
		{name: "unknown user", extra: map[string]any{"ipmi_username": "mallory"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim := ipmisim.Start(t, ipmisim.Options{})
			c, logs := simController(t, sim, fast(), tc.extra)
			start := time.Now()
			_, err := c.PowerState(t.Context())
			if !errors.Is(err, power.ErrAuth) || power.Retryable(err) {
				t.Fatalf("PowerState = %v, want permanent power.ErrAuth", err)
			}
			if be := bmcErr(t, err); be.Attempts != 1 {
				t.Errorf("tried %d times, want once", be.Attempts)
			}
			if strings.Contains(logs.String(), "retrying") {
				t.Errorf("retried:\n%s", logs)
			}
			// A retried or negotiated session would take 4 s or more; the
			// margin is for a loaded CI machine.
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %s to report wrong credentials", took)
			}
			if strings.Contains(err.Error(), "not-the-password") || strings.Contains(logs.String(), "not-the-password") {
				t.Error("the password shows in the error or the logs")
			}
		})
	}
}

func TestInteropSessionVariants(t *testing.T) {
	tests := []struct {
		name  string
		opts  func(o *ipmi.Options)
		extra map[string]any
	}{
		{name: "default cipher suite list falls back from 17 to 3", extra: map[string]any{"ipmi_cipher_suite": nil}},
		{name: "IPMI 1.5 lan", extra: map[string]any{"ipmi_cipher_suite": nil, "ipmi_protocol_version": "1.5"}},
		{name: "operator privilege", extra: map[string]any{"ipmi_username": "operator", "ipmi_password": "operator", "ipmi_priv_level": "OPERATOR"}},
		{name: "boot timeout not disabled", extra: map[string]any{"ipmi_disable_boot_timeout": false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim := ipmisim.Start(t, ipmisim.Options{})
			opts := fast()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			c, _ := simController(t, sim, opts, tc.extra)
			start := time.Now()
			if err := c.SetPowerState(t.Context(), node.PowerOn); err != nil {
				t.Fatal(err)
			}
			if err := c.SetBootDevice(t.Context(), node.BootPXE, false, true); err != nil {
				t.Fatal(err)
			}
			if st, err := c.PowerState(t.Context()); err != nil || st != node.PowerOn {
				t.Fatalf("PowerState = %q, %v", st, err)
			}
			// Negotiating the cipher suite with ipmi_sim costs 4 s per call.
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("three calls took %s: the session setup is slow", took)
			}
		})
	}
}

// BenchmarkInteropSession measures, against ipmi_sim, one power status
// read as the driver does it (a session per call) with the cipher suite
// pinned, with the default list (17 refused, then 3), and with the suite
// negotiated (Get Channel Cipher Suites, which ipmi_sim does not answer),
// and a status read inside an already open session, side by side.
func BenchmarkInteropSession(b *testing.B) {
	sim := ipmisim.Start(b, ipmisim.Options{})
	opts := ipmi.Options{} // production defaults
	quiet := slog.New(slog.DiscardHandler)
	mk := func(o ipmi.Options, extra map[string]any) *ipmi.Controller {
		info := sim.DriverInfo()
		for k, v := range extra {
			if v == nil {
				delete(info, k)
			} else {
				info[k] = v
			}
		}
		c, err := ipmi.New(quiet, o).Controller(&node.Node{DriverInfo: info})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	pinned := mk(opts, nil)
	list := mk(opts, map[string]any{"ipmi_cipher_suite": nil})
	negOpts := opts
	negOpts.NegotiateCipherSuite = true
	negotiated := mk(negOpts, map[string]any{"ipmi_cipher_suite": nil})

	ctx := context.Background()
	session, err := client.NewClient(sim.Addr, sim.Port, sim.User, sim.Password)
	if err != nil {
		b.Fatal(err)
	}
	session.WithInterface(client.InterfaceLanplus).WithCipherSuiteID(types.CipherSuiteID3).WithTimeout(2 * time.Second)
	if err := session.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	defer session.Close(ctx)

	// The three fast variants are interleaved call by call, so machine
	// noise hits them alike.
	const k = 50
	timed := func(f func() error) time.Duration {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	status := func(c *ipmi.Controller) func() error {
		return func() error { _, err := c.PowerState(ctx); return err }
	}
	inSession := func() error { _, err := session.GetChassisStatus(ctx); return err }
	var tPinned, tList, tInSession, tNeg time.Duration
	for b.Loop() {
		var p, l, s time.Duration
		for range k {
			p += timed(status(pinned))
			l += timed(status(list))
			s += timed(inSession)
		}
		tPinned += p / k
		tList += l / k
		tInSession += s / k
		tNeg += timed(status(negotiated))
	}
	n := time.Duration(b.N)
	ms := func(d time.Duration) float64 { return float64(d/n) / float64(time.Millisecond) }
	b.ReportMetric(ms(tPinned), "ms/status-pinned")
	b.ReportMetric(ms(tList), "ms/status-list17,3")
	b.ReportMetric(ms(tInSession), "ms/status-in-session")
	b.ReportMetric(ms(tNeg), "ms/status-negotiated")
	b.ReportMetric(float64(tNeg)/float64(tPinned), "negotiated/pinned")
	b.ReportMetric(float64(tList)/float64(tPinned), "list/pinned")
	b.ReportMetric(float64(tPinned)/float64(tInSession), "session-per-call/in-session")
}
