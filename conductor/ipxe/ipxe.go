// Package ipxe renders the iPXE scripts the conductor hands to network
// booting machines: the agent boot for deploy and cleaning (kernel and
// initramfs over HTTP with the kernel command line the agent expects),
// the local boot a deployed node gets when it is left PXE-first, the
// answer for a MAC nobody is provisioning, and the entry script that
// chains a machine to its own script.
//
// Rendering is pure: values in, script bytes out, no I/O. Every value is
// checked before it lands in a script, so a URL or kernel parameter can
// never smuggle an extra iPXE command in (no line breaks, no control
// characters). Deciding which script a machine gets, and where the files
// live, belongs to package pxe.
package ipxe

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"text/template"

	"github.com/ingot-dev/ingot/shared/bootparam"
)

// Firmware is the kind of firmware that runs iPXE.
type Firmware string

// Firmware kinds. A node's boot_mode says which one it uses.
const (
	BIOS Firmware = "bios"
	UEFI Firmware = "uefi"
)

// MACVar is the iPXE expression for the MAC address of the network device
// that booted, in the hyphenated form the conductor's per-MAC URLs use
// ("52-54-00-12-34-56"). netX is the most recently opened device, which is
// the one iPXE booted from even on machines with several NICs.
const MACVar = "${netX/mac:hexhyp}"

// Defaults for zero fields.
const (
	DefaultRetries       = 10
	DefaultPowerOffDelay = 30
	DefaultRetryDelay    = 30
)

// ErrUnsafe means a value would change the script's meaning if rendered:
// it holds a line break, a control character, or is not a URL where one
// is needed.
var ErrUnsafe = errors.New("unsafe value for an iPXE script")

//go:embed templates/*.ipxe
var templateFS embed.FS

// templates is parsed once per call to keep the package free of mutable
// globals; parsing four small templates costs microseconds.
func templates() *template.Template {
	return template.Must(template.New("").Option("missingkey=error").ParseFS(templateFS, "templates/*.ipxe"))
}

// Agent describes an agent boot: the deploy ramdisk the node runs while it
// is deployed or cleaned.
type Agent struct {
	// Node is the node's UUID, shown in the script and on the console.
	Node string
	// Purpose says why the agent boots: "deploy", "clean", "inspect".
	Purpose string
	// Firmware is the node's boot mode.
	Firmware Firmware
	// KernelURL and RamdiskURL are http(s) URLs of the agent kernel and
	// initramfs.
	KernelURL  string
	RamdiskURL string
	// Append is the operator's kernel command line (driver_info
	// kernel_append_params or the conductor's default), e.g.
	// "console=ttyS0 nofb".
	Append string
	// Params are the agent's parameters (ipa-api-url, ingot.tls, ...),
	// rendered with bootparam.Format. BootIF is ignored: the script passes
	// the MAC iPXE booted from.
	Params bootparam.Params
	// Retries is how often a failed download is retried, waiting 1 s,
	// 2 s, ... in between (DefaultRetries when 0).
	Retries int
	// PowerOffDelay is how many seconds the node waits before it powers
	// off after the last failed attempt (DefaultPowerOffDelay when 0).
	PowerOffDelay int
}

// Local describes the boot of a deployed node from its local disk.
type Local struct {
	Node     string
	Firmware Firmware
}

// Unknown describes the answer for a MAC address no node is provisioned
// with.
type Unknown struct {
	// Retry makes the machine ask again after RetryDelay seconds instead
	// of moving on to its next boot device.
	Retry      bool
	RetryDelay int
	// ScriptURL is the URL asked again; it may contain MACVar.
	ScriptURL string
}

// Chain describes the entry script that sends every machine to its own
// per-MAC script.
type Chain struct {
	// ScriptURL is the per-MAC script URL, containing MACVar.
	ScriptURL string
}

// RenderAgent renders an agent boot script.
func RenderAgent(a Agent) ([]byte, error) {
	if err := checkNode(a.Node); err != nil {
		return nil, err
	}
	if err := checkFirmware(a.Firmware); err != nil {
		return nil, err
	}
	if a.Purpose == "" {
		a.Purpose = "deploy"
	}
	if err := checkWord("purpose", a.Purpose); err != nil {
		return nil, err
	}
	if err := checkURL("kernel URL", a.KernelURL); err != nil {
		return nil, err
	}
	if err := checkURL("ramdisk URL", a.RamdiskURL); err != nil {
		return nil, err
	}
	if err := checkLine("kernel parameters", a.Append); err != nil {
		return nil, err
	}
	p := a.Params
	p.BootIF = ""
	params := bootparam.Format(p)
	if err := checkLine("agent parameters", params); err != nil {
		return nil, err
	}
	if a.Retries == 0 {
		a.Retries = DefaultRetries
	}
	if a.PowerOffDelay == 0 {
		a.PowerOffDelay = DefaultPowerOffDelay
	}
	if a.Retries < 0 || a.Retries > 1000 || a.PowerOffDelay < 0 || a.PowerOffDelay > 86400 {
		return nil, fmt.Errorf("render agent script: %w: retries %d or power-off delay %d out of range", ErrUnsafe, a.Retries, a.PowerOffDelay)
	}
	u, _ := url.Parse(a.RamdiskURL)
	initrd := path.Base(u.Path)
	if initrd == "/" || initrd == "." || initrd == "" {
		return nil, fmt.Errorf("render agent script: %w: ramdisk URL %q has no file name", ErrUnsafe, a.RamdiskURL)
	}
	cmdline := strings.TrimSpace(strings.Join(strings.Fields(a.Append+" "+params), " "))
	return execute("agent.ipxe", map[string]any{
		"Node": a.Node, "Purpose": a.Purpose, "Firmware": a.Firmware,
		"KernelURL": a.KernelURL, "RamdiskURL": a.RamdiskURL, "InitrdName": initrd,
		"Cmdline": cmdline, "Retries": a.Retries, "PowerOffDelay": a.PowerOffDelay,
	})
}

// RenderLocal renders a local disk boot script: iPXE hands the first disk
// to the BIOS (falling back to exit), or exits to the UEFI boot manager,
// which moves on to the next boot option.
func RenderLocal(l Local) ([]byte, error) {
	if err := checkNode(l.Node); err != nil {
		return nil, err
	}
	if err := checkFirmware(l.Firmware); err != nil {
		return nil, err
	}
	return execute("local.ipxe", l)
}

// RenderUnknown renders the script for an unknown MAC address.
func RenderUnknown(u Unknown) ([]byte, error) {
	if u.Retry {
		if u.RetryDelay == 0 {
			u.RetryDelay = DefaultRetryDelay
		}
		if u.RetryDelay < 1 || u.RetryDelay > 86400 {
			return nil, fmt.Errorf("render unknown script: %w: retry delay %d out of range", ErrUnsafe, u.RetryDelay)
		}
		if err := checkURL("script URL", u.ScriptURL); err != nil {
			return nil, err
		}
	}
	return execute("unknown.ipxe", u)
}

// RenderChain renders the entry script.
func RenderChain(c Chain) ([]byte, error) {
	if err := checkURL("script URL", c.ScriptURL); err != nil {
		return nil, err
	}
	return execute("chain.ipxe", c)
}

func execute(name string, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := templates().ExecuteTemplate(&b, name, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return b.Bytes(), nil
}

func checkFirmware(f Firmware) error {
	if f != BIOS && f != UEFI {
		return fmt.Errorf("%w: firmware %q: want bios or uefi", ErrUnsafe, f)
	}
	return nil
}

func checkNode(n string) error {
	if n == "" {
		return fmt.Errorf("%w: empty node", ErrUnsafe)
	}
	return checkWord("node", n)
}

// checkWord allows one word of printable ASCII.
func checkWord(what, s string) error {
	for _, r := range s {
		if r <= ' ' || r >= 0x7f {
			return fmt.Errorf("%w: %s %q: want one word of printable characters", ErrUnsafe, what, s)
		}
	}
	return nil
}

// checkLine allows printable text on one line.
func checkLine(what, s string) error {
	for _, r := range s {
		if (r < ' ' && r != '\t') || r == 0x7f {
			return fmt.Errorf("%w: %s %q: control characters or line breaks", ErrUnsafe, what, s)
		}
	}
	return nil
}

// checkURL allows absolute http(s) URLs without spaces; iPXE variables
// such as MACVar are allowed.
func checkURL(what, s string) error {
	if err := checkWord(what, s); err != nil {
		return err
	}
	u, err := url.Parse(strings.ReplaceAll(s, MACVar, "mac"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: %s %q: want an http(s) URL", ErrUnsafe, what, s)
	}
	return nil
}
