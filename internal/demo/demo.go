// Package demo is `make demo`: it provisions a QEMU virtual node end to
// end with the real conductor, on embedded defaults. It builds the test
// image, starts the virtual-node rig (internal/vmrig), enrolls the node,
// takes it through manage, provide (cleaning boots the agent), deploy
// (the agent streams the image onto the disk), checks that the node boots
// its new disk, undeploys it, and prints what it measured. Everything it
// started is removed when it ends, also on failure or interrupt.
package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ingot-dev/ingot/internal/testimage"
	"github.com/ingot-dev/ingot/internal/vmrig"
)

// Options configure a demo run.
type Options struct {
	// Conductor is the conductor binary; Kernel and Ramdisk the agent's
	// boot files (make initramfs).
	Conductor, Kernel, Ramdisk string
	// Firmware of the virtual node: bios or uefi.
	Firmware string
	// Dir is the work directory (removed at the end unless Keep).
	Dir  string
	Keep bool
	// Accel is QEMU's accelerator (tcg; kvm on real hardware).
	Accel string
	Out   io.Writer // the progress display
	Log   *slog.Logger
}

// Summary is what a run measured.
type Summary struct {
	Firmware        string
	ImageBytes      int64
	RamdiskBytes    int64
	Enroll          time.Duration // manage + provide (with cleaning)
	PowerOnToLookup time.Duration
	PXEToActive     time.Duration // deploy's power on to active
	WriteMiBps      float64       // the agent's write throughput, as it reported
	BootedFromDisk  time.Duration // boot_instance's power on to the image's marker on the console
	Undeploy        time.Duration
	Total           time.Duration
}

// Run runs the demo.
func Run(ctx context.Context, o Options) (sum Summary, err error) {
	start := time.Now()
	if o.Firmware == "" {
		o.Firmware = "bios"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	sum.Firmware = o.Firmware
	if missing := vmrig.Missing(o.Firmware == "uefi"); len(missing) > 0 {
		return sum, fmt.Errorf("missing: %s (scripts/install-deps.sh --demo installs them)", strings.Join(missing, ", "))
	}
	if st, err := os.Stat(o.Ramdisk); err == nil {
		sum.RamdiskBytes = st.Size()
	}
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "ingot-demo-"); err != nil {
			return sum, err
		}
	}
	if !o.Keep {
		defer os.RemoveAll(o.Dir)
	}
	p := &printer{w: o.Out, start: start}

	p.step("building the test image (a GPT disk that prints a marker when it boots)")
	img, err := buildImage(ctx, o.Dir, o.Kernel)
	if err != nil {
		return sum, err
	}
	sum.ImageBytes = img.rawBytes
	p.info("image: %.0f MiB raw, %.1f MiB zstd, sha256 %s…", mib(img.rawBytes), mib(img.zstBytes), img.sum[:16])

	p.step("starting the provisioning network, the conductor and a %s virtual node", strings.ToUpper(o.Firmware))
	rig, err := vmrig.New(ctx, vmrig.Options{Dir: filepath.Join(o.Dir, "rig"), Name: "ingot-demo", Accel: o.Accel, Log: o.Log})
	if err != nil {
		return sum, err
	}
	defer func() {
		p.step("cleaning up: VM, BMC, conductor, network namespace")
		if cerr := rig.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	cond, err := rig.StartConductor(ctx, vmrig.ConductorOptions{Binary: o.Conductor, Kernel: o.Kernel, Ramdisk: o.Ramdisk})
	if err != nil {
		return sum, err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			b, _ := os.ReadFile(cond.Log)
			fmt.Fprintf(o.Out, "\nconductor log (last lines):\n%s\n", lastLines(string(b), 25))
		}
	}()
	n, err := rig.AddNode(ctx, vmrig.NodeOptions{Name: "demo-node", Firmware: o.Firmware})
	if err != nil {
		return sum, err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			fmt.Fprintf(o.Out, "\nnode console (last lines):\n%s\n", lastLines(n.SerialLog(), 25))
		}
	}()
	p.info("conductor API %s, boot server %s, DHCP on %s (namespace %s)", cond.APIURL, cond.BootURL, rig.Bridge, rig.NS)
	p.info("node %s: MAC %s, BMC ipmi://%s:%d (ipmi_sim), disk %s", n.Name, n.MAC, n.BMC.Addr, n.BMC.Port, n.Disk)

	c := cond.Client
	p.step("enrolling the node (driver ipmi, boot interface ipxe, deploy interface direct)")
	uuid, err := c.CreateNode(ctx, map[string]any{"name": n.Name, "driver": "ipmi", "boot_interface": "ipxe",
		"deploy_interface": "direct", "network_interface": "noop", "driver_info": n.DriverInfo(),
		"properties": map[string]any{"capabilities": "boot_mode:" + o.Firmware,
			"root_device": map[string]any{"serial": n.DiskSerial}}})
	if err != nil {
		return sum, err
	}
	if err := c.CreatePort(ctx, uuid, n.MAC); err != nil {
		return sum, err
	}
	t0 := time.Now()
	if err := drive(ctx, c, p, uuid, "manage", "manageable", time.Minute); err != nil {
		return sum, err
	}
	p.step("provide: automated cleaning PXE-boots the agent, which erases the disk's metadata")
	if err := drive(ctx, c, p, uuid, "provide", "available", 5*time.Minute); err != nil {
		return sum, err
	}
	sum.Enroll = time.Since(t0)

	p.step("deploying the image: power on by IPMI → PXE → agent → image streamed onto the disk")
	if err := c.Patch(ctx, uuid,
		map[string]any{"op": "add", "path": "/instance_info/image_source", "value": "file://" + img.zst},
		map[string]any{"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
		map[string]any{"op": "add", "path": "/instance_info/image_os_hash_value", "value": img.sum}); err != nil {
		return sum, err
	}
	offset := n.SerialSize()
	var lastRate float64
	p.onProgress = func(prog map[string]any) {
		if r, ok := prog["bytes_per_second"].(float64); ok && r > 0 {
			lastRate = r
		}
	}
	if err := drive(ctx, c, p, uuid, "active", "active", 5*time.Minute); err != nil {
		return sum, err
	}
	p.onProgress = nil
	sum.WriteMiBps = lastRate / (1 << 20)
	if st, err := c.Node(ctx, uuid); err == nil {
		if w, ok := st.DriverInternalInfo["image_write"].(map[string]any); ok {
			if r, ok := w["bytes_per_second"].(float64); ok && r > 0 {
				sum.WriteMiBps = r / (1 << 20) // the agent's figure for the whole write
			}
			p.info("%s", writeLine(w))
		}
	}

	p.step("waiting for the node to boot the disk Ingot wrote")
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	marker := testimage.Marker(img.id, o.Firmware)
	if err := n.WaitSerial(bctx, offset, marker); err != nil {
		return sum, err
	}
	seen := time.Now()
	p.info("console: %s", marker)
	ev, err := readEvents(cond.Log)
	if err != nil {
		return sum, err
	}
	d := ev.lastDeployment()
	sum.PowerOnToLookup, sum.PXEToActive = since(d.powerOn, d.lookup), since(d.powerOn, d.active)
	sum.BootedFromDisk = since(d.bootOn, seen)

	p.step("undeploying: the node is cleaned again and returns to available")
	t1 := time.Now()
	if err := drive(ctx, c, p, uuid, "deleted", "available", 5*time.Minute); err != nil {
		return sum, err
	}
	sum.Undeploy = time.Since(t1)

	sum.Total = time.Since(start)
	return sum, nil
}

// drive asks for a provision state change and shows the node's way to
// want.
func drive(ctx context.Context, c *vmrig.Client, p *printer, uuid, verb, want string, limit time.Duration) error {
	if err := c.Provision(ctx, uuid, verb); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	_, err := c.Wait(wctx, uuid, []string{want}, []string{"deploy failed", "clean failed", "inspect failed", "error"}, p.node)
	return err
}

type image struct {
	id                 string
	raw, zst, sum      string
	rawBytes, zstBytes int64
}

func buildImage(ctx context.Context, dir, kernel string) (image, error) {
	img := image{id: fmt.Sprintf("demo-%d", time.Now().Unix()%100000)}
	initBin, err := testimage.BuildInit(ctx, dir)
	if err != nil {
		return img, err
	}
	img.raw = filepath.Join(dir, "image.raw")
	if err := testimage.Build(img.raw, testimage.Options{ID: img.id, Kernel: kernel, Init: initBin}); err != nil {
		return img, err
	}
	img.zst = img.raw + ".zst"
	in, err := os.Open(img.raw)
	if err != nil {
		return img, err
	}
	defer in.Close()
	out, err := os.Create(img.zst)
	if err != nil {
		return img, err
	}
	defer out.Close()
	h := sha256.New()
	zw, err := zstd.NewWriter(io.MultiWriter(out, h))
	if err != nil {
		return img, err
	}
	if img.rawBytes, err = io.Copy(zw, in); err != nil {
		return img, err
	}
	if err := zw.Close(); err != nil {
		return img, err
	}
	st, err := out.Stat()
	if err != nil {
		return img, err
	}
	img.zstBytes, img.sum = st.Size(), hex.EncodeToString(h.Sum(nil))
	return img, out.Close()
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ErrInterrupted is returned when the run was cancelled.
var ErrInterrupted = errors.New("interrupted")
