// Package ipmi is the conductor's "ipmitool" power and management
// interface: power on, off, soft off (ACPI), reset, cycle and status, and
// the chassis boot device (pxe, disk, cdrom, bios, safe; for the next boot
// or persistently; legacy BIOS or UEFI), spoken over IPMI v2.0 lanplus
// (RMCP+) or v1.5 lan with github.com/bougou/go-ipmi.
//
// It follows Ironic's ipmitool driver: the same driver_info keys
// (ipmi_address, ipmi_port, ipmi_username, ipmi_password, ipmi_priv_level,
// ipmi_cipher_suite, ipmi_protocol_version, ipmi_disable_boot_timeout), the
// same validation messages, reboot as power off, wait for off, power on
// (not a chassis reset, unless configured), the same boot flag bytes
// (UEFI: 0xe0/0xa0 then the device code), and retries only for failures
// that can go away (no answer, session setup failures, no free session,
// node busy), with back-off. Wrong credentials and refused commands fail
// at once.
//
// Every call opens its own session and closes it, so BMCs with few session
// slots are not exhausted. Every error names the BMC (address:port) and
// the operation, is classified with the power package's error classes, and
// never contains the password.
//
// Cipher suites: a node's ipmi_cipher_suite pins one. Otherwise the driver
// tries Options.CipherSuites in order (default 17, then 3), which costs a
// failed Open Session round trip on BMCs without suite 17 and nothing on
// the others. It never asks the BMC for its suite list unless
// Options.NegotiateCipherSuite is set: BMCs that do not answer Get Channel
// Cipher Suites (ipmi_sim among them) make that cost about 10 s per session.
package ipmi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/power"
)

// Options tune the driver for every node. Zero values pick the defaults
// in brackets.
type Options struct {
	// CipherSuites are tried in order for nodes without ipmi_cipher_suite
	// [17, 3].
	CipherSuites []int
	// NegotiateCipherSuite asks the BMC which suites it supports instead
	// of trying CipherSuites; slow on BMCs that do not answer.
	NegotiateCipherSuite bool
	// PacketTimeout is how long to wait for each reply [2 s]. ipmitool's
	// 1 s is known to be too short for busy BMCs.
	PacketTimeout time.Duration
	// PacketRetries is how often an unanswered packet is sent again within
	// one attempt [1]; negative means never.
	PacketRetries int
	// CallTimeout bounds one attempt: session setup, the command and
	// closing the session [15 s].
	CallTimeout time.Duration
	// Attempts bounds how often a retryable failure is tried [5].
	Attempts int
	// Backoff is the wait before the first retry, doubled for each
	// further one up to MaxBackoff [1 s, 5 s].
	Backoff    time.Duration
	MaxBackoff time.Duration
	// PollInterval is how often a reboot polls for the machine to be off
	// [1 s].
	PollInterval time.Duration
	// PowerOffTimeout bounds that wait for a hard power off [60 s],
	// SoftPowerOffTimeout for a soft one [600 s] (Ironic's
	// power_state_change_timeout and soft_power_off_timeout).
	PowerOffTimeout     time.Duration
	SoftPowerOffTimeout time.Duration
	// RebootWithReset reboots a running machine with a chassis hard reset
	// instead of off, wait, on (Ironic does so for nodes that must not be
	// powered off).
	RebootWithReset bool
}

func (o Options) withDefaults() Options {
	if len(o.CipherSuites) == 0 {
		o.CipherSuites = []int{17, 3}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.PacketTimeout, 2*time.Second)
	def(&o.CallTimeout, 15*time.Second)
	def(&o.Backoff, time.Second)
	def(&o.MaxBackoff, 5*time.Second)
	def(&o.PollInterval, time.Second)
	def(&o.PowerOffTimeout, 60*time.Second)
	def(&o.SoftPowerOffTimeout, 600*time.Second)
	switch {
	case o.PacketRetries == 0:
		o.PacketRetries = 1
	case o.PacketRetries < 0:
		o.PacketRetries = 0
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	return o
}

// Validate checks the options themselves (main calls it at start-up).
func (o Options) Validate() error {
	for _, cs := range o.CipherSuites {
		if _, _, _, ok := types.GetCipherSuiteAlgorithms(types.CipherSuiteID(cs)); !ok || cs < 0 || cs > maxCipher {
			return fmt.Errorf("ipmi cipher suite %d is not supported (want 0 to %d)", cs, maxCipher)
		}
	}
	return nil
}

// Driver builds controllers for nodes whose power or management interface
// is "ipmitool".
type Driver struct {
	opts Options
	log  *slog.Logger
}

// New returns a driver. log receives retries (warn) and calls (debug).
func New(log *slog.Logger, opts Options) *Driver {
	return &Driver{opts: opts.withDefaults(), log: log}
}

// PowerDriver is the driver as a power interface.
func (d *Driver) PowerDriver() power.PowerDriver {
	return power.PowerDriver{
		New:      func(n *node.Node) (power.Controller, error) { return d.Controller(n) },
		Validate: Validate,
	}
}

// ManagementDriver is the driver as a management interface.
func (d *Driver) ManagementDriver() power.ManagementDriver {
	return power.ManagementDriver{
		New:      func(n *node.Node) (power.BootController, error) { return d.Controller(n) },
		Validate: Validate,
	}
}

// Controller returns the controller of n's BMC; it fails (node.ErrInvalid)
// when n's driver_info is invalid.
func (d *Driver) Controller(n *node.Node) (*Controller, error) {
	creds, err := ParseCredentials(n.DriverInfo)
	if err != nil {
		return nil, err
	}
	return d.ForCredentials(creds), nil
}

// ForCredentials returns the controller of the BMC creds describe.
func (d *Driver) ForCredentials(creds Credentials) *Controller {
	return &Controller{creds: creds, opts: d.opts, log: d.log.With("bmc", creds.BMC())}
}

// Controller drives one BMC. It implements power.Controller and
// power.BootController, plus Reset and Cycle. It holds no session between
// calls and is safe for concurrent use (each call has its own session).
type Controller struct {
	creds Credentials
	opts  Options
	log   *slog.Logger
}

// BMC is the address:port of the controller's BMC.
func (c *Controller) BMC() string { return c.creds.BMC() }

// PowerState reads the chassis power.
func (c *Controller) PowerState(ctx context.Context) (node.PowerState, error) {
	on, err := c.powerOn(ctx)
	if err != nil {
		return node.PowerError, err
	}
	if on {
		return node.PowerOn, nil
	}
	return node.PowerOff, nil
}

func (c *Controller) powerOn(ctx context.Context) (bool, error) {
	var on bool
	err := c.do(ctx, "get power state", func(ctx context.Context, cl *client.Client) error {
		st, err := cl.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		on = st.PowerIsOn
		return nil
	})
	return on, err
}

// SetPowerState asks the BMC for target and returns once the BMC accepted
// it; callers poll PowerState for the result. Reboot and soft reboot
// return after the machine was seen off and power on was accepted.
func (c *Controller) SetPowerState(ctx context.Context, target node.PowerState) error {
	switch target {
	case node.PowerOn:
		return c.control(ctx, "power on", chassis.ChassisControlPowerUp)
	case node.PowerOff:
		return c.control(ctx, "power off", chassis.ChassisControlPowerDown)
	case node.PowerSoftOff:
		return c.control(ctx, "soft power off", chassis.ChassisControlSoftShutdown)
	case node.PowerReboot:
		return c.reboot(ctx, false)
	case node.PowerSoftReboot:
		return c.reboot(ctx, true)
	}
	return node.Errorf(node.ErrInvalid, "bmc %s: unknown power target %q: allowed are power on, power off, rebooting, soft power off, soft rebooting", c.BMC(), target)
}

// reboot does what Ironic's ipmitool reboot does: if the machine is not
// off, power it off (ACPI when soft) and wait until the BMC shows it off,
// then power on. With RebootWithReset a running machine gets a hard reset
// instead (soft reboots are never a reset).
func (c *Controller) reboot(ctx context.Context, soft bool) error {
	on, err := c.powerOn(ctx)
	if err != nil {
		return err
	}
	if on {
		if c.opts.RebootWithReset && !soft {
			return c.Reset(ctx)
		}
		op, ctl, wait := "power off", chassis.ChassisControlPowerDown, c.opts.PowerOffTimeout
		if soft {
			op, ctl, wait = "soft power off", chassis.ChassisControlSoftShutdown, c.opts.SoftPowerOffTimeout
		}
		if err := c.control(ctx, op, ctl); err != nil {
			return err
		}
		if err := c.waitOff(ctx, op, wait); err != nil {
			return err
		}
	}
	return c.control(ctx, "power on", chassis.ChassisControlPowerUp)
}

// waitOff polls until the machine is off or timeout passes.
func (c *Controller) waitOff(ctx context.Context, op string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		on, err := c.powerOn(ctx)
		if err == nil && !on {
			return nil
		}
		if err != nil && !power.Retryable(err) {
			return err
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("still on after %s", timeout)
			}
			return &power.BMCError{BMC: c.BMC(), Op: "reboot: wait for " + op, Attempts: 1, Class: power.ErrBusy, Err: err}
		}
		if err := sleep(ctx, c.opts.PollInterval); err != nil {
			return c.ctxErr(ctx, "reboot: wait for "+op)
		}
	}
}

// Reset asks for a chassis hard reset (a running machine restarts; an off
// one stays off on most BMCs).
func (c *Controller) Reset(ctx context.Context) error {
	return c.control(ctx, "power reset", chassis.ChassisControlHardReset)
}

// Cycle asks for a chassis power cycle (off, a BMC-defined pause, on).
// BMCs may refuse it for a machine that is off.
func (c *Controller) Cycle(ctx context.Context) error {
	return c.control(ctx, "power cycle", chassis.ChassisControlPowerCycle)
}

func (c *Controller) control(ctx context.Context, op string, ctl chassis.ChassisControl) error {
	return c.do(ctx, op, func(ctx context.Context, cl *client.Client) error {
		_, err := cl.ChassisControl(ctx, ctl)
		return err
	})
}

// Boot device selectors (IPMI v2.0 Table 28-14, boot flags data 2 bits
// 5:2), as Ironic maps its devices.
var bootSelectors = map[string]types.BootDeviceSelector{
	node.BootPXE:   types.BootDeviceSelectorForcePXE,
	node.BootDisk:  types.BootDeviceSelectorForceHardDrive,
	node.BootSafe:  types.BootDeviceSelectorForceHardDriveSafe,
	node.BootCDROM: types.BootDeviceSelectorForceCDROM,
	node.BootBIOS:  types.BootDeviceSelectorForceBIOSSetup,
}

// BootFlags returns the boot flags parameter (#5) the driver sends for a
// device: valid, persistent or next boot only, EFI or legacy, the device.
// Packed, they are the bytes Ironic sends raw in UEFI mode, e.g.
// 0xe0 0x04 0x00 0x00 0x00 for pxe, persistent, UEFI.
func BootFlags(device string, persistent, uefi bool) (*types.BootOptionParam_BootFlags, error) {
	sel, ok := bootSelectors[device]
	if !ok {
		return nil, node.Errorf(node.ErrInvalid, "Invalid boot device %s specified, supported are: %s.", device, strings.Join(power.AllBootDevices(), ", "))
	}
	bt := types.BIOSBootTypeLegacy
	if uefi {
		bt = types.BIOSBootTypeEFI
	}
	return &types.BootOptionParam_BootFlags{BootFlagsValid: true, Persist: persistent, BIOSBootType: bt, BootDeviceSelector: sel}, nil
}

// DeviceOf maps boot flags read from a BMC back to Ironic's device name;
// "" means no override (or one Ironic has no name for).
func DeviceOf(f *types.BootOptionParam_BootFlags) string {
	for dev, sel := range bootSelectors {
		if f.BootDeviceSelector == sel {
			return dev
		}
	}
	return ""
}

// SetBootDevice sets the boot device for the next boot, or every boot when
// persistent, in UEFI or legacy mode. Unless the node's driver_info says
// otherwise it first tells the BMC not to drop the flags after 60 s
// (parameter #3), as Ironic does; BMCs that do not know that parameter are
// tolerated.
func (c *Controller) SetBootDevice(ctx context.Context, device string, persistent, uefi bool) error {
	flags, err := BootFlags(device, persistent, uefi)
	if err != nil {
		return err
	}
	op := "set boot device " + device
	if persistent {
		op += " persistent"
	}
	if uefi {
		op += " uefi"
	}
	return c.do(ctx, op, func(ctx context.Context, cl *client.Client) error {
		if c.creds.DisableBootTimeout {
			// raw 0x00 0x08 0x03 0x08: don't clear the valid bit on the 60 s timeout.
			err := cl.SetSystemBootOptionsParamFor(ctx, &types.BootOptionParam_BMCBootFlagValidBitClear{DontClearOnCommandReceivedTimeout: true})
			if err != nil {
				if classify(phaseCommand, err) != power.ErrRejected {
					return err
				}
				c.log.DebugContext(ctx, "bmc does not support disabling the boot flag timeout", "err", err)
			}
		}
		return cl.SetSystemBootOptionsParamFor(ctx, flags)
	})
}

// BootDevice reads the boot flags parameter (only #5: fetching every
// parameter fails on BMCs that omit some) and maps its device selector as
// Ironic does, ignoring the valid bit (ipmi_sim never sets it). A BMC that
// does not report boot flags yields node.ErrUnsupported.
func (c *Controller) BootDevice(ctx context.Context) (string, bool, error) {
	flags := &types.BootOptionParam_BootFlags{}
	err := c.do(ctx, "get boot device", func(ctx context.Context, cl *client.Client) error {
		return cl.GetSystemBootOptionsParamFor(ctx, flags)
	})
	if err != nil {
		var re *types.ResponseError
		if errors.As(err, &re) && re.CompletionCode() == types.CodeParameterNotSupported {
			return "", false, fmt.Errorf("%w: %w", node.ErrUnsupported, err)
		}
		return "", false, err
	}
	return DeviceOf(flags), flags.Persist, nil
}

// SupportedBootDevices lists Ironic's ipmitool boot devices.
func (c *Controller) SupportedBootDevices() []string { return power.AllBootDevices() }

// do runs fn in a fresh session, retrying retryable failures with
// back-off, and returns nil or an error naming the BMC and op.
func (c *Controller) do(ctx context.Context, op string, fn func(context.Context, *client.Client) error) error {
	delay := c.opts.Backoff
	for attempt := 1; ; attempt++ {
		start := time.Now()
		class, err := c.once(ctx, fn)
		if err == nil {
			c.log.DebugContext(ctx, "ipmi call", "op", op, "attempt", attempt, "took", time.Since(start))
			return nil
		}
		if ctx.Err() != nil {
			return c.ctxErr(ctx, op)
		}
		err = scrub(err, c.creds.Password)
		berr := &power.BMCError{BMC: c.BMC(), Op: op, Attempts: attempt, Class: class, Err: err}
		if !power.Retryable(berr) || attempt >= c.opts.Attempts {
			return berr
		}
		c.log.WarnContext(ctx, "ipmi call failed, retrying", "op", op, "attempt", attempt, "retry_in", delay, "err", berr)
		if sleep(ctx, delay) != nil {
			return c.ctxErr(ctx, op)
		}
		delay = min(2*delay, c.opts.MaxBackoff)
	}
}

// ctxErr reports that the caller's context ended during op.
func (c *Controller) ctxErr(ctx context.Context, op string) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return &power.BMCError{BMC: c.BMC(), Op: op, Attempts: 1, Class: power.ErrUnreachable, Err: err}
	}
	return fmt.Errorf("bmc %s: %s: %w", c.BMC(), op, err)
}

// once opens a session, runs fn and closes the session, all within
// CallTimeout. It returns the failure's class with the error.
func (c *Controller) once(ctx context.Context, fn func(context.Context, *client.Client) error) (class, err error) {
	actx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	defer cancel()
	cl, nerr := c.newClient()
	if nerr != nil {
		return power.ErrRejected, nerr
	}
	if err := cl.Connect(actx); err != nil {
		c.abandon(cl)
		return classify(phaseConnect, err), fmt.Errorf("open session (%s): %w", c.sessionDesc(), err)
	}
	err = fn(actx, cl)
	if actx.Err() != nil {
		// The BMC stopped answering: don't wait for a polite close.
		c.abandon(cl)
		if err == nil {
			err = actx.Err()
		}
		return classify(phaseCommand, err), err
	}
	// Close politely, even after a failed command: BMCs have few session
	// slots. Bounded so a BMC that stops answering cannot hold us.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.PacketTimeout)
	if cerr := cl.Close(cctx); cerr != nil {
		c.log.DebugContext(ctx, "close ipmi session", "err", cerr)
	}
	ccancel()
	if err != nil {
		return classify(phaseCommand, err), err
	}
	return nil, nil
}

// abandon releases a client whose BMC is not answering: go-ipmi's Close
// waits for an outstanding read to time out, so it runs in the
// background, with a context that is already done so it sends nothing.
func (c *Controller) abandon(cl *client.Client) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	go func() { _ = cl.Close(done) }()
}

func (c *Controller) sessionDesc() string {
	if c.creds.Protocol == Protocol15 {
		return "IPMI 1.5 lan"
	}
	if c.creds.CipherSuite >= 0 {
		return fmt.Sprintf("lanplus, cipher suite %d", c.creds.CipherSuite)
	}
	if c.opts.NegotiateCipherSuite {
		return "lanplus, negotiated cipher suite"
	}
	return fmt.Sprintf("lanplus, cipher suites %v", c.opts.CipherSuites)
}

var privLevel = map[string]types.PrivilegeLevel{
	"CALLBACK":      types.PrivilegeLevelCallback,
	"USER":          types.PrivilegeLevelUser,
	"OPERATOR":      types.PrivilegeLevelOperator,
	"ADMINISTRATOR": types.PrivilegeLevelAdministrator,
}

func (c *Controller) newClient() (*client.Client, error) {
	cl, err := client.NewClient(c.creds.Address, c.creds.Port, c.creds.Username, string(c.creds.Password))
	if err != nil {
		return nil, err
	}
	cl.WithTimeout(c.opts.PacketTimeout).WithRetry(c.opts.PacketRetries).WithMaxPrivilegeLevel(privLevel[c.creds.PrivLevel])
	if c.creds.Protocol == Protocol15 {
		cl.WithInterface(client.InterfaceLan)
		return cl, nil
	}
	cl.WithInterface(client.InterfaceLanplus)
	switch {
	case c.creds.CipherSuite >= 0:
		cl.WithCipherSuiteID(types.CipherSuiteID(c.creds.CipherSuite))
	case !c.opts.NegotiateCipherSuite:
		ids := make([]types.CipherSuiteID, len(c.opts.CipherSuites))
		for i, cs := range c.opts.CipherSuites {
			ids[i] = types.CipherSuiteID(cs)
		}
		if len(ids) == 1 {
			// go-ipmi treats a one-element list as a pin, the same thing.
			cl.WithCipherSuiteID(ids[0])
		} else {
			cl.WithCipherSuiteID(ids...)
		}
	}
	return cl, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
