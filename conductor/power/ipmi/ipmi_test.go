package ipmi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power"
	"github.com/ingot-dev/ingot/conductor/power/ipmi"
	"github.com/ingot-dev/ingot/conductor/power/powertest"
)

// fast are options for a BMC on loopback: short waits, few attempts.
func fast() ipmi.Options {
	return ipmi.Options{
		PacketTimeout:       200 * time.Millisecond,
		CallTimeout:         2 * time.Second,
		Attempts:            3,
		Backoff:             10 * time.Millisecond,
		MaxBackoff:          20 * time.Millisecond,
		PollInterval:        10 * time.Millisecond,
		PowerOffTimeout:     2 * time.Second,
		SoftPowerOffTimeout: 300 * time.Millisecond,
	}
}

// logBuffer is a goroutine-safe slog sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func debugLogger(w *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func controller(t *testing.T, b *testBMC, opts ipmi.Options, extra map[string]any) (*ipmi.Controller, *logBuffer) {
	t.Helper()
	info := b.Info()
	for k, v := range extra {
		info[k] = v
	}
	logs := &logBuffer{}
	c, err := ipmi.New(debugLogger(logs), opts).Controller(&node.Node{UUID: "n-1", DriverInfo: info})
	if err != nil {
		t.Fatal(err)
	}
	return c, logs
}

func bmcErr(t *testing.T, err error) *power.BMCError {
	t.Helper()
	var be *power.BMCError
	if !errors.As(err, &be) {
		t.Fatalf("error %v (%T) is not a *power.BMCError", err, err)
	}
	return be
}

func TestContract(t *testing.T) {
	powertest.Run(t, func(t *testing.T) powertest.Target {
		b := startBMC(t, bmcOptions{})
		c, _ := controller(t, b, fast(), nil)
		return powertest.Target{
			Power: c,
			Boot:  c,
			Hang:  func(*testing.T) func() { return b.Blackhole() },
			Break: func(*testing.T) { b.Stop() },
		}
	}, powertest.Caps{Settle: 2 * time.Second, Bound: time.Second})
}

func TestBootFlagBytes(t *testing.T) {
	// Ironic's ipmitool management, UEFI mode, sends
	// raw 0x00 0x08 0x05 <0xe0 persistent | 0xa0 next boot> <dev> 0x00 0x00 0x00;
	// legacy mode "chassis bootdev" sets the same bits without 0x20 (EFI).
	devCodes := map[string]byte{"pxe": 0x04, "disk": 0x08, "cdrom": 0x14, "bios": 0x18, "safe": 0x0c}
	b := startBMC(t, bmcOptions{})
	c, _ := controller(t, b, fast(), nil)
	for _, dev := range power.AllBootDevices() {
		for _, tc := range []struct {
			persistent, uefi bool
			want             byte
		}{
			{true, true, 0xe0}, {false, true, 0xa0}, {true, false, 0xc0}, {false, false, 0x80},
		} {
			if err := c.SetBootDevice(t.Context(), dev, tc.persistent, tc.uefi); err != nil {
				t.Fatalf("SetBootDevice(%s, %v, %v): %v", dev, tc.persistent, tc.uefi, err)
			}
			want := []byte{tc.want, devCodes[dev], 0, 0, 0}
			if got := b.Chassis.RawBootFlags(); !bytes.Equal(got, want) {
				t.Errorf("boot flags for %s persistent=%v uefi=%v = % x, want % x", dev, tc.persistent, tc.uefi, got, want)
			}
			f, err := ipmi.BootFlags(dev, tc.persistent, tc.uefi)
			if err != nil || !bytes.Equal(f.Pack(), want) {
				t.Errorf("BootFlags(%s).Pack() = % x, %v; want % x", dev, f.Pack(), err, want)
			}
		}
	}
}

func TestBootDeviceUnsupported(t *testing.T) {
	b := startBMC(t, bmcOptions{}) // never had boot flags: answers 80h "parameter not supported"
	c, _ := controller(t, b, fast(), nil)
	_, _, err := c.BootDevice(t.Context())
	if !errors.Is(err, node.ErrUnsupported) {
		t.Fatalf("BootDevice on a BMC without boot flags = %v, want node.ErrUnsupported", err)
	}
	if !strings.Contains(err.Error(), c.BMC()) {
		t.Errorf("error %q does not name the BMC %s", err, c.BMC())
	}
}

func TestReboot(t *testing.T) {
	tests := []struct {
		name    string
		on      bool
		target  node.PowerState
		reset   bool
		want    []string
		wantOn  bool
		wantErr error
		ignore  bool
	}{
		{name: "a running machine is powered off then on", on: true, target: node.PowerReboot,
			want: []string{"power false", "power true"}, wantOn: true},
		{name: "an off machine is just powered on", target: node.PowerReboot,
			want: []string{"power true"}, wantOn: true},
		{name: "with RebootWithReset a running machine gets a reset", on: true, target: node.PowerReboot, reset: true,
			want: []string{"reset"}, wantOn: true},
		{name: "with RebootWithReset an off machine is powered on", target: node.PowerReboot, reset: true,
			want: []string{"power true"}, wantOn: true},
		{name: "soft reboot is ACPI off then on", on: true, target: node.PowerSoftReboot,
			want: []string{"soft", "power true"}, wantOn: true},
		{name: "soft reboot of a machine ignoring ACPI fails without powering on", on: true, target: node.PowerSoftReboot, ignore: true,
			want: []string{"soft"}, wantOn: true, wantErr: power.ErrBusy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startBMC(t, bmcOptions{})
			b.Chassis.SetOn(tc.on)
			b.Chassis.IgnoreSoft(tc.ignore)
			opts := fast()
			opts.RebootWithReset = tc.reset
			c, _ := controller(t, b, opts, nil)
			err := c.SetPowerState(t.Context(), tc.target)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("SetPowerState(%s) = %v, want %v", tc.target, err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "soft power off") {
				t.Errorf("error %q does not say what failed", err)
			}
			if diff := cmp.Diff(tc.want, b.Chassis.Controls()); diff != "" {
				t.Errorf("chassis controls (-want +got):\n%s", diff)
			}
			if b.Chassis.IsOn() != tc.wantOn {
				t.Errorf("machine on = %v, want %v", b.Chassis.IsOn(), tc.wantOn)
			}
		})
	}
}

func TestResetAndCycle(t *testing.T) {
	b := startBMC(t, bmcOptions{})
	c, _ := controller(t, b, fast(), nil)
	if err := c.Cycle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(t.Context()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"cycle", "reset"}, b.Chassis.Controls()); diff != "" {
		t.Errorf("chassis controls (-want +got):\n%s", diff)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name         string
		failN        int
		code         types.CompletionCode
		wantErr      error // nil: success
		wantAttempts int   // chassis controls the BMC saw
	}{
		{name: "node busy twice then served", failN: 2, code: types.CodeNodeBusy, wantAttempts: 3},
		{name: "node busy on every attempt", failN: 99, code: types.CodeNodeBusy, wantErr: power.ErrBusy, wantAttempts: 3},
		{name: "BMC initialising is retried", failN: 1, code: types.CodeCannotProvideResponseBMCInitialize, wantAttempts: 2},
		{name: "out of space is retried", failN: 1, code: types.CodeOutOfSpace, wantAttempts: 2},
		{name: "invalid command is permanent", failN: 99, code: types.CodeInvalidCommand, wantErr: power.ErrRejected, wantAttempts: 1},
		{name: "not supported is permanent", failN: 99, code: types.CodeNotSupported, wantErr: power.ErrRejected, wantAttempts: 1},
		{name: "insufficient privilege is permanent", failN: 99, code: types.CodeInsufficientPrivilege, wantErr: power.ErrAuth, wantAttempts: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startBMC(t, bmcOptions{})
			b.Chassis.FailControls(tc.failN, tc.code)
			c, logs := controller(t, b, fast(), nil)
			err := c.SetPowerState(t.Context(), node.PowerOn)
			if got := len(b.Chassis.Controls()); got != tc.wantAttempts {
				t.Errorf("BMC saw %d power on requests, want %d", got, tc.wantAttempts)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("SetPowerState = %v, want success after retries", err)
				}
				if n := strings.Count(logs.String(), "retrying"); n != tc.wantAttempts-1 {
					t.Errorf("%d retry log lines, want %d:\n%s", n, tc.wantAttempts-1, logs)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("SetPowerState = %v, want %v", err, tc.wantErr)
			}
			be := bmcErr(t, err)
			if be.Attempts != tc.wantAttempts || be.BMC != c.BMC() || be.Op != "power on" {
				t.Errorf("BMCError = %+v, want %d attempts at %s for power on", be, tc.wantAttempts, c.BMC())
			}
			for _, want := range []string{c.BMC(), "power on"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestBackoffSchedule(t *testing.T) {
	b := startBMC(t, bmcOptions{})
	b.Stop() // nothing listens: every attempt is refused at once
	opts := fast()
	opts.Attempts, opts.Backoff, opts.MaxBackoff = 5, 20*time.Millisecond, 50*time.Millisecond
	c, logs := controller(t, b, opts, nil)
	start := time.Now()
	_, err := c.PowerState(t.Context())
	took := time.Since(start)
	if !errors.Is(err, power.ErrUnreachable) || bmcErr(t, err).Attempts != 5 {
		t.Fatalf("PowerState on a stopped BMC = %v, want power.ErrUnreachable after 5 attempts", err)
	}
	var waits []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if _, rest, ok := strings.Cut(line, "retry_in="); ok {
			waits = append(waits, strings.Fields(rest)[0])
		}
	}
	if diff := cmp.Diff([]string{"20ms", "40ms", "50ms", "50ms"}, waits); diff != "" {
		t.Errorf("back-off between attempts (-want +got):\n%s", diff)
	}
	if took < 160*time.Millisecond || took > 5*time.Second {
		t.Errorf("gave up after %s, want the 160ms of back-off and not much more", took)
	}
}

func TestUnreachableIsBounded(t *testing.T) {
	tests := []struct {
		name  string
		setup func(b *testBMC)
		opts  func(o *ipmi.Options)
		bound time.Duration
	}{
		{name: "nothing listening", setup: func(b *testBMC) { b.Stop() }, bound: 2 * time.Second},
		{name: "BMC drops every packet", setup: func(b *testBMC) { b.Blackhole() },
			// 3 attempts x 2 packets x 200ms, plus back-off.
			bound: 3 * time.Second},
		{name: "call timeout cuts a slow attempt short", setup: func(b *testBMC) { b.Blackhole() },
			opts: func(o *ipmi.Options) {
				o.PacketTimeout, o.PacketRetries, o.CallTimeout = 10*time.Second, 5, 150*time.Millisecond
			},
			bound: 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startBMC(t, bmcOptions{})
			tc.setup(b)
			opts := fast()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			c, _ := controller(t, b, opts, nil)
			start := time.Now()
			err := c.SetPowerState(t.Context(), node.PowerOn)
			took := time.Since(start)
			if !errors.Is(err, power.ErrUnreachable) || !power.Retryable(err) {
				t.Fatalf("SetPowerState = %v, want power.ErrUnreachable", err)
			}
			if be := bmcErr(t, err); be.Attempts != opts.Attempts {
				t.Errorf("gave up after %d attempts, want %d", be.Attempts, opts.Attempts)
			}
			if took > tc.bound {
				t.Errorf("gave up after %s, want within %s", took, tc.bound)
			}
			if !strings.Contains(err.Error(), c.BMC()) {
				t.Errorf("error %q does not name the BMC", err)
			}
		})
	}
}

func TestPacketLossIsResent(t *testing.T) {
	b := startBMC(t, bmcOptions{})
	c, logs := controller(t, b, fast(), nil)
	b.DropNext(1)
	if _, err := c.PowerState(t.Context()); err != nil {
		t.Fatalf("PowerState with one lost packet = %v", err)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("one lost packet cost a whole new attempt:\n%s", logs)
	}
}

func TestAuthFailuresArePermanent(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]any
	}{
		{name: "wrong password", extra: map[string]any{"ipmi_password": "wrong-password"}},
		{name: "unknown user", extra: map[string]any{"ipmi_username": "nobody"}},
		{name: "wrong password with a pinned cipher suite", extra: map[string]any{"ipmi_password": "wrong-password", "ipmi_cipher_suite": "3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startBMC(t, bmcOptions{})
			c, logs := controller(t, b, fast(), tc.extra)
			_, err := c.PowerState(t.Context())
			if !errors.Is(err, power.ErrAuth) || power.Retryable(err) {
				t.Fatalf("PowerState = %v, want permanent power.ErrAuth", err)
			}
			if be := bmcErr(t, err); be.Attempts != 1 {
				t.Errorf("authentication failure tried %d times, want once", be.Attempts)
			}
			if strings.Contains(logs.String(), "retrying") {
				t.Errorf("authentication failure was retried:\n%s", logs)
			}
		})
	}
}

func TestSessionsAreClosed(t *testing.T) {
	// The BMC has 4 session slots; every call must give its slot back,
	// also when the command fails.
	b := startBMC(t, bmcOptions{})
	c, _ := controller(t, b, fast(), nil)
	b.Chassis.FailControls(6, types.CodeInvalidCommand)
	for i := range 6 {
		if err := c.SetPowerState(t.Context(), node.PowerOn); !errors.Is(err, power.ErrRejected) {
			t.Fatalf("call %d = %v, want the injected rejection", i, err)
		}
	}
	for i := range 12 {
		if _, err := c.PowerState(t.Context()); err != nil {
			t.Fatalf("call %d after %d sessions: %v (sessions leak?)", i, 6+i, err)
		}
	}
}

func TestNoFreeSessionIsRetried(t *testing.T) {
	b := startBMC(t, bmcOptions{})
	// Occupy every session slot with other consoles.
	var held []*client.Client
	for range 4 {
		cl, err := client.NewClient(b.Addr, b.Port, b.User, b.Pass)
		if err != nil {
			t.Fatal(err)
		}
		cl.WithInterface(client.InterfaceLanplus).WithCipherSuiteID(types.CipherSuiteID3).WithTimeout(time.Second)
		if err := cl.Connect(t.Context()); err != nil {
			t.Fatal(err)
		}
		held = append(held, cl)
	}
	t.Cleanup(func() {
		for _, cl := range held {
			_ = cl.Close(context.Background())
		}
	})

	opts := fast()
	opts.Attempts = 1
	c, _ := controller(t, b, opts, nil)
	_, err := c.PowerState(t.Context())
	if !errors.Is(err, power.ErrBusy) || !strings.Contains(err.Error(), "Insufficient resources") {
		t.Fatalf("PowerState with every session slot taken = %v, want power.ErrBusy (insufficient resources)", err)
	}

	// With retries, freeing a slot after the first failure lets it through.
	freed := make(chan struct{})
	logs := &freeOnRetry{free: func() {
		_ = held[0].Close(context.Background())
		held = held[1:]
		close(freed)
	}}
	opts.Attempts = 3
	c2, err := ipmi.New(slog.New(logs), opts).Controller(&node.Node{DriverInfo: b.Info()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.PowerState(t.Context()); err != nil {
		t.Fatalf("PowerState after a slot was freed = %v", err)
	}
	select {
	case <-freed:
	default:
		t.Fatal("the call succeeded without a retry; the slots were not all taken")
	}
}

// freeOnRetry is a slog handler that runs free at the first retry.
type freeOnRetry struct {
	once sync.Once
	free func()
}

func (h *freeOnRetry) Enabled(context.Context, slog.Level) bool { return true }
func (h *freeOnRetry) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "retrying") {
		h.once.Do(h.free)
	}
	return nil
}
func (h *freeOnRetry) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *freeOnRetry) WithGroup(string) slog.Handler      { return h }

func TestCipherSuites(t *testing.T) {
	only3 := []types.CipherSuiteID{types.CipherSuiteID3}
	tests := []struct {
		name    string
		suites  []types.CipherSuiteID
		opts    func(o *ipmi.Options)
		extra   map[string]any
		wantErr error
	}{
		{name: "default list falls back from 17 to 3", suites: only3},
		{name: "default list uses 17 when offered"},
		{name: "a pinned suite the BMC lacks is refused without retries", suites: only3,
			extra: map[string]any{"ipmi_cipher_suite": float64(17)}, wantErr: power.ErrRejected},
		{name: "a configured single suite", suites: only3, opts: func(o *ipmi.Options) { o.CipherSuites = []int{3} }},
		{name: "negotiation asks the BMC", suites: only3, opts: func(o *ipmi.Options) { o.NegotiateCipherSuite = true }},
		{name: "IPMI 1.5 lan", extra: map[string]any{"ipmi_protocol_version": "1.5"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startBMC(t, bmcOptions{suites: tc.suites})
			opts := fast()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			c, logs := controller(t, b, opts, tc.extra)
			_, err := c.PowerState(t.Context())
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("PowerState = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if be := bmcErr(t, err); be.Attempts != 1 || strings.Contains(logs.String(), "retrying") {
					t.Errorf("refused cipher suite tried %d times, want once", be.Attempts)
				}
				if !strings.Contains(err.Error(), "cipher suite 17") {
					t.Errorf("error %q does not say which cipher suite was refused", err)
				}
			}
		})
	}
}

func TestContextCancelledBeforeCall(t *testing.T) {
	b := startBMC(t, bmcOptions{})
	c, _ := controller(t, b, fast(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := c.SetPowerState(ctx, node.PowerOn)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("SetPowerState with a cancelled context = %v, want context.Canceled", err)
	}
	if power.Retryable(err) {
		t.Errorf("a cancelled call is classified retryable: %v", err)
	}
	if b.Chassis.IsOn() {
		t.Error("a cancelled call powered the machine on")
	}
}

func TestPasswordNeverLeaks(t *testing.T) {
	const pw = "hunter2-Sup3r-s3c"
	b := startBMC(t, bmcOptions{pass: pw})
	var out []string
	check := func(where, s string) {
		t.Helper()
		out = append(out, s)
		if strings.Contains(s, pw) {
			t.Errorf("password in %s: %s", where, s)
		}
	}

	// Every path: success, retries, wrong password, unreachable, refused
	// command, ctx cancelled; logs at debug level.
	c, logs := controller(t, b, fast(), nil)
	if _, err := c.PowerState(t.Context()); err != nil {
		t.Fatal(err)
	}
	b.Chassis.FailControls(99, types.CodeNodeBusy)
	if err := c.SetPowerState(t.Context(), node.PowerOn); err != nil {
		check("busy error", err.Error())
	}
	b.Chassis.FailControls(99, types.CodeInvalidCommand)
	if err := c.SetPowerState(t.Context(), node.PowerOff); err != nil {
		check("rejected error", err.Error())
	}
	wrong, wlogs := controller(t, b, fast(), map[string]any{"ipmi_password": pw + "x"})
	if _, err := wrong.PowerState(t.Context()); err != nil {
		check("auth error", err.Error())
	}
	b.Stop()
	if _, err := c.PowerState(t.Context()); err != nil {
		check("unreachable error", err.Error())
		check("unreachable error %+v", fmt.Sprintf("%+v", err))
	}
	check("logs", logs.String())
	check("logs", wlogs.String())
	if !strings.Contains(logs.String(), "retrying") {
		t.Error("no retry was logged; the test did not exercise the log paths")
	}

	// The credentials themselves, however printed.
	creds, err := ipmi.ParseCredentials(b.Info())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(creds)
	check("JSON", string(js))
	check("%v", fmt.Sprintf("%v", creds))
	check("%+v", fmt.Sprintf("%+v", creds))
	check("%#v", fmt.Sprintf("%#v", creds))
	check("%s password", fmt.Sprintf("%s", creds.Password))
	var text, jsonLog logBuffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("creds", "creds", creds, "pw", creds.Password)
	slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("creds", "creds", creds)
	check("slog text", text.String())
	check("slog json", jsonLog.String())
	if !strings.Contains(text.String(), "bmc="+c.BMC()) || !strings.Contains(text.String(), "******") {
		t.Errorf("credentials log without the BMC or the redaction mark: %s", text.String())
	}

	_, err = ipmi.ParseCredentials(map[string]any{"ipmi_address": "x", "ipmi_password": []any{pw}})
	if err == nil {
		t.Fatal("a non-string password was accepted")
	}
	check("validation error", err.Error())
}

func TestDriverTable(t *testing.T) {
	d := ipmi.New(slog.New(slog.DiscardHandler), ipmi.Options{})
	drivers := &power.Drivers{
		PowerDrivers:      map[string]power.PowerDriver{"ipmitool": d.PowerDriver()},
		ManagementDrivers: map[string]power.ManagementDriver{"ipmitool": d.ManagementDriver()},
	}
	n := &node.Node{UUID: "n-1", Interfaces: node.Interfaces{Power: "ipmitool", Management: "ipmitool"}, DriverInfo: map[string]any{}}
	want := "Missing the following IPMI credentials in node's driver_info: ['ipmi_address']."
	got := drivers.Validate(n)
	for _, kind := range []string{node.KindPower, node.KindManagement} {
		if got[kind] == nil || got[kind].Error() != want {
			t.Errorf("Validate[%s] = %v, want %q", kind, got[kind], want)
		}
	}
	if _, err := drivers.Power(n); !errors.Is(err, node.ErrInvalid) {
		t.Errorf("Power() without ipmi_address = %v, want node.ErrInvalid", err)
	}
	n.DriverInfo = map[string]any{"ipmi_address": "192.0.2.10", "ipmi_password": "pw"}
	if got := drivers.Validate(n); len(got) != 0 {
		t.Errorf("Validate with a valid driver_info = %v", got)
	}
	p, err := drivers.Power(n)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(*ipmi.Controller).BMC(); got != "192.0.2.10:623" {
		t.Errorf("BMC = %s, want the default port 623", got)
	}
	m, err := drivers.Management(n)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(power.AllBootDevices(), m.SupportedBootDevices()); diff != "" {
		t.Errorf("SupportedBootDevices (-want +got):\n%s", diff)
	}
}

// BenchmarkPowerState measures a power status read against the in-process
// BMC as the driver does it (a session per call: open, RAKP, status,
// close) side by side with a read inside an already open session, and
// reports the ratio: the price of never holding sessions.
func BenchmarkPowerState(b *testing.B) {
	bm := startBMC(b, bmcOptions{})
	c, err := ipmi.New(slog.New(slog.DiscardHandler), ipmi.Options{}).Controller(&node.Node{DriverInfo: bm.Info()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	session, err := client.NewClient(bm.Addr, bm.Port, bm.User, bm.Pass)
	if err != nil {
		b.Fatal(err)
	}
	session.WithInterface(client.InterfaceLanplus).WithCipherSuiteID(types.CipherSuiteID17).WithTimeout(2 * time.Second)
	if err := session.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	defer session.Close(ctx)
	var perCall, inSession time.Duration
	calls := 0
	for b.Loop() {
		start := time.Now()
		if _, err := c.PowerState(ctx); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := session.GetChassisStatus(ctx); err != nil {
			b.Fatal(err)
		}
		perCall += mid.Sub(start)
		inSession += time.Since(mid)
		calls++
	}
	b.ReportMetric(float64(perCall.Microseconds())/float64(calls), "µs/status-session-per-call")
	b.ReportMetric(float64(inSession.Microseconds())/float64(calls), "µs/status-in-session")
	b.ReportMetric(float64(perCall)/float64(inSession), "session-per-call/in-session")
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		suites  []int
		wantErr bool
	}{{nil, false}, {[]int{17, 3}, false}, {[]int{0}, false}, {[]int{3, 42}, true}, {[]int{-1}, true}} {
		err := ipmi.Options{CipherSuites: tc.suites}.Validate()
		if (err != nil) != tc.wantErr {
			t.Errorf("Options{CipherSuites: %v}.Validate() = %v, want error %v", tc.suites, err, tc.wantErr)
		}
	}
}

// TestNoGoroutineLeak: sessions closed politely, abandoned ones (a hung
// BMC) and go-ipmi's keep-alive goroutines all end.
func TestNoGoroutineLeak(t *testing.T) {
	b := startBMC(t, bmcOptions{})
	c, _ := controller(t, b, fast(), nil)
	if _, err := c.PowerState(t.Context()); err != nil { // warm up the server's own goroutines
		t.Fatal(err)
	}
	settle := func(limit int) int {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= limit || time.Now().After(deadline) {
				return n
			}
			select {
			case <-t.Context().Done():
				t.Fatal(t.Context().Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	base := runtime.NumGoroutine()
	for range 10 {
		if _, err := c.PowerState(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	release := b.Blackhole()
	for range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		_, _ = c.PowerState(ctx)
		cancel()
	}
	release()
	if n := settle(base); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after the calls, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}
