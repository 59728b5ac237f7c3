package vmrig

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ConductorOptions say how to run the conductor.
type ConductorOptions struct {
	// Binary is the conductor executable.
	Binary string
	// Kernel and Ramdisk are the agent's boot files (local paths).
	Kernel, Ramdisk string
	// KernelParams are appended to the agent's kernel command line after
	// console=ttyS0.
	KernelParams string
	// Args are more flags, after the rig's (a later flag wins).
	Args []string
}

// Ports of the conductor's servers on the bridge.
const (
	APIPort      = 6385
	BootHTTPPort = 8080
)

// Conductor is the running conductor.
type Conductor struct {
	*Process
	APIURL  string // as the rig's HTTP client reaches it
	BootURL string
	Client  *Client
}

// StartConductor runs the conductor in the namespace: API and boot HTTP on
// the bridge, full DHCP with router advertisements on it, TFTP for
// firmware that needs an iPXE binary, SQLite in the rig's directory, JSON
// logs (the demo reads events from them). It returns once the API answers.
func (r *Rig) StartConductor(ctx context.Context, o ConductorOptions) (*Conductor, error) {
	for _, f := range []*string{&o.Binary, &o.Kernel, &o.Ramdisk} {
		if _, err := os.Stat(*f); err != nil {
			return nil, fmt.Errorf("vmrig: conductor: %w", err)
		}
		abs, err := filepath.Abs(*f)
		if err != nil {
			return nil, err
		}
		*f = abs
	}
	state := filepath.Join(r.Dir, "conductor")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return nil, err
	}
	kdir, rdir := filepath.Dir(o.Kernel), filepath.Dir(o.Ramdisk)
	api := fmt.Sprintf("%s:%d", r.ServerIP, APIPort)
	boot := fmt.Sprintf("%s:%d", r.ServerIP, BootHTTPPort)
	args := []string{o.Binary,
		"--state-dir", state, "--conductor-name", "vmrig", "--log-format", "json",
		"--api-listen", api, "--boot-http-listen", boot, "--tftp-listen", r.ServerIP + ":69",
		"--dhcp-mode", "full", "--dhcp-interface", r.Bridge,
		"--dhcp-range", r.net + ".100-" + r.net + ".199",
		"--deploy-kernel", o.Kernel, "--deploy-ramdisk", o.Ramdisk,
		"--boot-file-allowed-paths", kdir + "," + rdir,
		"--kernel-append-params", strings.TrimSpace("console=ttyS0 quiet " + o.KernelParams),
		"--ipmi-cipher-suites", "3",
	}
	args = append(args, o.Args...)
	p, err := r.Start("conductor", args)
	if err != nil {
		return nil, err
	}
	c := &Conductor{Process: p, APIURL: "http://" + api, BootURL: "http://" + boot}
	c.Client = &Client{URL: c.APIURL, HTTP: r.HTTPClient()}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.APIURL+"/v1", nil)
		resp, err := c.Client.HTTP.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.log.Info("conductor ready", "api", c.APIURL, "boot", c.BootURL)
				return c, nil
			}
		}
		select {
		case <-p.Done():
			b, _ := os.ReadFile(p.Log)
			return nil, fmt.Errorf("vmrig: conductor exited at start: %v\n%s", p.Err(), tail(string(b), 3000))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(p.Log)
			return nil, fmt.Errorf("vmrig: conductor API did not answer within 30s\n%s", tail(string(b), 3000))
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
