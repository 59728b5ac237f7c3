package iscsie2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ingot-dev/ingot/agent/blockdev"
	"github.com/ingot-dev/ingot/agent/blockdev/blockdevtest"
	"github.com/ingot-dev/ingot/agent/cmdapi"
	"github.com/ingot-dev/ingot/agent/extension"
	"github.com/ingot-dev/ingot/conductor/agentclient"
	"github.com/ingot-dev/ingot/conductor/engine"
	"github.com/ingot-dev/ingot/conductor/imagecache"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/conductor/service"
	"github.com/ingot-dev/ingot/conductor/store"
	"github.com/ingot-dev/ingot/shared/api"
	sharedcd "github.com/ingot-dev/ingot/shared/configdrive"
	"github.com/ingot-dev/ingot/shared/imagestream"
)

// The iscsi deploy interface end to end in one process: the conductor's
// engine (SQLite store, a fake BMC) drives Ingot's real agent extensions
// behind the real command API (the conductor's agent client talks to it
// over loopback HTTP); the conductor's image cache serves the image; the
// agent exports a file-backed disk with its own target and the engine
// writes onto it with the initiator. Faults are injected where they
// happen on a real machine: the agent's disk (panics, corruption,
// slowness) and the wire between the two (credentials, ports).

// bmc is the node's power: always obeys.
type bmc struct {
	mu    sync.Mutex
	state node.PowerState
}

func (b *bmc) PowerState(context.Context) (node.PowerState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, nil
}

func (b *bmc) SetPowerState(_ context.Context, s node.PowerState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s == node.PowerOff || s == node.PowerSoftOff {
		b.state = node.PowerOff
	} else {
		b.state = node.PowerOn
	}
	return nil
}

type mgmt struct{}

func (mgmt) SetBootDevice(context.Context, string, bool, bool) error { return nil }
func (mgmt) BootDevice(context.Context) (string, bool, error)        { return "", false, node.ErrUnsupported }
func (mgmt) SupportedBootDevices() []string                          { return []string{"pxe", "disk"} }

type drivers struct{ p *bmc }

func (d drivers) Power(*node.Node) (engine.Power, error)           { return d.p, nil }
func (d drivers) Management(*node.Node) (engine.Management, error) { return mgmt{}, nil }
func (d drivers) Validate(*node.Node) map[string]error             { return map[string]error{} }

// progressStore records every deploy_progress the engine saves.
type progressStore struct {
	*store.DB
	mu   sync.Mutex
	seen []map[string]any
}

func (s *progressStore) UpdateNode(ctx context.Context, n *node.Node) error {
	if p, ok := n.DriverInternalInfo["deploy_progress"].(map[string]any); ok {
		s.mu.Lock()
		s.seen = append(s.seen, node.CloneMap(p))
		s.mu.Unlock()
	}
	return s.DB.UpdateNode(ctx, n)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// faultyDisk wraps the agent's disk; hook sees every write at or beyond
// 2 MiB (the image's body; the metadata wipe writes below that and at
// the end of the disk).
type faultyDisk struct {
	*blockdev.Device
	hook func(p []byte, off int64) ([]byte, error)
}

func (d faultyDisk) WriteAt(p []byte, off int64) (int, error) {
	if off >= 2<<20 && off < d.Size()-(1<<20) && d.hook != nil {
		q, err := d.hook(p, off)
		if err != nil {
			return 0, err
		}
		if _, err := d.Device.WriteAt(q, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return d.Device.WriteAt(p, off)
}

type rigOptions struct {
	diskSize int64
	// hook injects disk faults (see faultyDisk).
	hook func(p []byte, off int64) ([]byte, error)
	// tamper rewrites start_iscsi_target's parameters on their way to
	// the agent.
	tamper func(params map[string]any)
	iscsi  engine.ISCSIOptions
}

type rig struct {
	t       *testing.T
	eng     *engine.Engine
	db      *progressStore
	power   *bmc
	ext     *extension.Extensions
	agent   *httptest.Server
	disk    string
	logs    *lockedBuffer
	cache   *httptest.Server
	secret  atomic.Value // the CHAP secret the agent received
	node    *node.Node
	mac     string
	imgSrv  *httptest.Server
	imgMu   sync.Mutex
	images  map[string][]byte
	started atomic.Int32
	token   atomic.Value // the agent token the conductor minted at lookup
}

func (r *rig) agentToken() string { s, _ := r.token.Load().(string); return s }

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	if o.diskSize == 0 {
		o.diskSize = 5 << 30 // sparse; no hints take the smallest disk of 4 GiB or more
	}
	r := &rig{t: t, power: &bmc{state: node.PowerOff}, logs: &lockedBuffer{}, mac: "52:54:00:aa:bb:01", images: map[string][]byte{}}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(r.logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelInfo}))

	// The agent.
	r.disk = blockdevtest.Disk(t, o.diskSize)
	r.ext = extension.New(extension.Options{
		Disk:       r.disk,
		PowerGrace: -1, // the "machine" is this process: nothing dies with the answer
		ISCSIHost:  "127.0.0.1",
		Open: func(p string) (extension.Device, error) {
			d, err := blockdev.Open(p)
			if err != nil {
				return nil, err
			}
			return faultyDisk{Device: d, hook: o.hook}, nil
		},
		Power:   nopPower{},
		EFIVars: t.TempDir(),
		GOARCH:  "amd64",
		Log:     log.With("side", "agent"),
	})
	t.Cleanup(func() { r.ext.Close() })
	capi := cmdapi.New(r.ext.Registry(), cmdapi.Options{Token: r.agentToken, Log: log.With("side", "agent")})
	r.agent = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost {
			body, _ := io.ReadAll(req.Body)
			var cmd struct {
				Name   string         `json:"name"`
				Params map[string]any `json:"params"`
			}
			if json.Unmarshal(body, &cmd) == nil && cmd.Name == "iscsi.start_iscsi_target" {
				r.started.Add(1)
				if s, ok := cmd.Params["chap_secret"].(string); ok {
					r.secret.Store(s)
				}
				if o.tamper != nil {
					o.tamper(cmd.Params)
					body, _ = json.Marshal(cmd)
				}
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			req.ContentLength = int64(len(body))
		}
		capi.ServeHTTP(w, req)
	}))
	t.Cleanup(func() { r.agent.Close(); capi.Close() })

	// The conductor: cache, engine.
	r.cache = httptest.NewUnstartedServer(nil)
	cache, err := imagecache.New(imagecache.Options{Dir: t.TempDir(), MaxBytes: 1 << 30, BaseURL: "http://" + r.cache.Listener.Addr().String(), Log: log,
		Download: func(ctx context.Context, info api.ImageInfo, dst *os.File) (string, string, error) {
			res, err := imagestream.Stream(ctx, info, dst, imagestream.Options{NoDecompress: true, Log: log})
			return res.Algo, res.Digest, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	r.cache.Config.Handler = cache.Handler()
	r.cache.Start()
	t.Cleanup(r.cache.Close)
	r.imgSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.imgMu.Lock()
		b, ok := r.images[req.URL.Path]
		r.imgMu.Unlock()
		if !ok {
			http.NotFound(w, req)
			return
		}
		http.ServeContent(w, req, "img", time.Unix(0, 0), bytes.NewReader(b))
	}))
	t.Cleanup(r.imgSrv.Close)

	db, err := store.Open(t.Context(), store.SQLiteURL(filepath.Join(t.TempDir(), "state.db")), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r.db = &progressStore{DB: db}
	iopts := o.iscsi
	if iopts.PortalPort == 0 {
		iopts.PortalPort = freePort(t)
	}
	if iopts.LoginAttempts == 0 {
		iopts.LoginAttempts, iopts.LoginRetryInterval = 3, 10*time.Millisecond
	}
	if iopts.Writer.ReconnectDelay == 0 {
		iopts.Writer.ReconnectDelay = 10 * time.Millisecond
	}
	iopts.ProgressInterval = time.Millisecond
	r.eng = engine.New(r.db, drivers{r.power}, log.With("side", "conductor"), engine.Options{
		Conductor: "c1", Agent: service.Agent{C: agentclient.New(agentclient.Options{Log: log})}, Images: cache,
		PostDeployPowerOffRetries: 1, PostDeployPowerOffInterval: time.Millisecond, CommandPollInterval: 10 * time.Millisecond,
		CheckInterval: -1, PowerSyncInterval: -1, LockRetryInterval: time.Millisecond, ISCSI: iopts,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

type nopPower struct{}

func (nopPower) PowerOff(context.Context) error { return nil }
func (nopPower) Reboot(context.Context) error   { return nil }

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// enroll creates the node with deploy_interface iscsi and instance_info.
func (r *rig) enroll(t *testing.T, instance map[string]any, props map[string]any) {
	t.Helper()
	n, err := r.eng.CreateNode(t.Context(), &node.Node{Name: "iscsi-node", Driver: "fake-hardware",
		Interfaces: node.Interfaces{Deploy: "iscsi"}, InstanceInfo: instance, Properties: props},
		engine.CreateOptions{InitialState: node.StateAvailable})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.eng.CreatePort(t.Context(), &node.Port{Address: r.mac, NodeUUID: n.UUID, PXEEnabled: true}); err != nil {
		t.Fatal(err)
	}
	r.node = n
}

// deploy runs a deployment the way a booted agent drives it: lookup, then
// heartbeats until the node settles.
func (r *rig) deploy(t *testing.T) *node.Node {
	t.Helper()
	return r.deployWith(t, engine.ProvisionRequest{Target: "active"})
}

func (r *rig) deployWith(t *testing.T, req engine.ProvisionRequest) *node.Node {
	t.Helper()
	if err := r.eng.Provision(t.Context(), r.node.UUID, req); err != nil {
		t.Fatal(err)
	}
	r.eng.Wait()
	res, err := r.eng.Lookup(t.Context(), []string{r.mac}, "", true)
	if err != nil {
		t.Fatal(err)
	}
	r.token.Store(res.Token)
	for i := 0; i < 10; i++ {
		err := r.eng.Heartbeat(t.Context(), r.node.UUID, api.HeartbeatRequest{CallbackURL: r.agent.URL, AgentToken: res.Token, AgentVersion: "ingot-test"})
		if err != nil && !errors.Is(err, node.ErrInvalid) {
			t.Fatal(err)
		}
		r.eng.Wait()
		n, err := r.db.GetNode(t.Context(), r.node.UUID)
		if err != nil {
			t.Fatal(err)
		}
		if n.ProvisionState == node.StateActive || n.ProvisionState == node.StateDeployFailed {
			return n
		}
	}
	n, _ := r.db.GetNode(t.Context(), r.node.UUID)
	t.Fatalf("the deployment did not settle: %q %q", n.ProvisionState, n.LastError)
	return nil
}

func (r *rig) diskSum(t *testing.T, n int) string {
	t.Helper()
	f, err := os.Open(r.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return sum(b)
}

// diskZero reports whether the disk's first n bytes are zero.
func (r *rig) diskZero(t *testing.T, n int) bool {
	t.Helper()
	f, err := os.Open(r.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	io.ReadFull(f, b)
	return bytes.Equal(b, make([]byte, n))
}

// noSecret checks the CHAP secret the agent received appears nowhere an
// operator or a log reader could see it.
func (r *rig) noSecret(t *testing.T) {
	t.Helper()
	s, _ := r.secret.Load().(string)
	if len(s) < 12 {
		t.Fatalf("the agent received no CHAP secret (%q)", s)
	}
	n, _ := r.db.GetNode(t.Context(), r.node.UUID)
	b, _ := json.Marshal(n)
	if strings.Contains(string(b), s) {
		t.Error("the CHAP secret is stored on the node")
	}
	if strings.Contains(r.logs.String(), s) {
		t.Error("the CHAP secret is in a log")
	}
	res, err := http.Get(r.agent.URL + "/v1/commands/?agent_token=" + r.agentToken())
	if err != nil {
		t.Fatal(err)
	}
	hist, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if strings.Contains(string(hist), s) || !strings.Contains(string(hist), "stop_iscsi_target") {
		t.Errorf("the agent's command history: %s", hist)
	}
}

// targetStopped checks the agent's target is gone.
func (r *rig) targetStopped(t *testing.T) {
	t.Helper()
	c := agentclient.New(agentclient.Options{})
	res, err := c.Execute(t.Context(), agentclient.Endpoint{URL: r.agent.URL, Token: r.agentToken()}, "iscsi.get_target_status", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(res.CommandResult), `"running":true`) {
		t.Errorf("the agent's target still runs: %s", res.CommandResult)
	}
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// gptImage is a whole-disk image with a GPT (ESP and root partition) and
// pseudo-random content, MBR disk id 0x12345678.
func gptImage(t *testing.T, size int64) []byte {
	t.Helper()
	p := blockdevtest.Disk(t, size)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rnd := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, size-2<<20)
	for i := range data {
		if i%4096 < 3000 {
			data[i] = byte(rnd.Uint32())
		}
	}
	f.WriteAt(data, 1<<20)
	blockdevtest.GPT(t, f, size, "5d2e8c1a-3b4f-4e6a-9d7c-1a2b3c4d5e6f", []blockdevtest.Part{
		{Start: 1 << 20, Size: 2 << 20, TypeGUID: blockdev.ESPTypeGUID, UUID: "7a3f0d2c-51e4-4a3b-9c1e-2f6b8d0a4e11", Name: "EFI System"},
		{Start: 3 << 20, Size: size - 4<<20, TypeGUID: "0fc63daf-8483-4772-8e79-3d69d8477de4", UUID: "b9a4c0de-0000-4000-8000-00000000beef", Name: "root"},
	})
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zst(t *testing.T, b []byte) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// fileImage writes b where the cache can take it from (file://).
func fileImage(t *testing.T, name string, b []byte) map[string]any {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]any{"image_source": "file://" + p, "image_os_hash_algo": "sha256", "image_os_hash_value": sum(b)}
}

// httpImage serves b from the image server (http://, checksum fields).
func (r *rig) httpImage(name string, b []byte) map[string]any {
	r.imgMu.Lock()
	r.images["/"+name] = b
	r.imgMu.Unlock()
	return map[string]any{"image_source": r.imgSrv.URL + "/" + name, "image_os_hash_algo": "sha256", "image_os_hash_value": sum(b)}
}

func TestISCSIDeployEndToEnd(t *testing.T) {
	img := gptImage(t, 12<<20+512*3) // not a multiple of the 1 MiB chunk
	for _, tc := range []struct {
		name     string
		instance func(r *rig) map[string]any
	}{
		{"raw image from a local file", func(r *rig) map[string]any { return fileImage(t, "disk.raw", img) }},
		{"zstd image over http", func(r *rig) map[string]any { return r.httpImage("disk.raw.zst", zst(t, img)) }},
		{"gzip image from a local file, full read-back", func(r *rig) map[string]any { return fileImage(t, "disk.raw.gz", gz(t, img)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, rigOptions{iscsi: engine.ISCSIOptions{Verify: map[bool]string{true: "full", false: "sampled"}[strings.Contains(tc.name, "full")]}})
			r.enroll(t, tc.instance(r), nil)
			n := r.deploy(t)
			if n.ProvisionState != node.StateActive || n.LastError != "" || n.PowerState != node.PowerOn {
				t.Fatalf("after deploy: %q %q power %q", n.ProvisionState, n.LastError, n.PowerState)
			}
			if got := r.diskSum(t, len(img)); got != sum(img) {
				t.Errorf("the disk holds %s, want the image's %s", got, sum(img))
			}
			if n.DriverInternalInfo["root_uuid_or_disk_id"] != "0x12345678" {
				t.Errorf("root uuid %v: the agent did not read the written table on stop", n.DriverInternalInfo["root_uuid_or_disk_id"])
			}
			if _, ok := n.DriverInternalInfo["bootloader_warning"]; ok {
				t.Errorf("bootloader warning %v", n.DriverInternalInfo["bootloader_warning"])
			}
			for _, k := range []string{"deploy_progress", "iscsi_warning", "agent_secret_token"} {
				if _, ok := n.DriverInternalInfo[k]; ok {
					t.Errorf("%s survived the deployment", k)
				}
			}
			r.db.mu.Lock()
			seen := r.db.seen
			r.db.mu.Unlock()
			if len(seen) < 2 {
				t.Fatalf("deploy_progress saved %d times", len(seen))
			}
			if last := seen[len(seen)-1]; last["step"] != "write_image" || num(last["bytes"]) != int64(len(img)) || last["percent"] != 100.0 {
				t.Errorf("last progress %v", last)
			}
			r.noSecret(t)
			r.targetStopped(t)
		})
	}
}

// TestISCSIDeployConfigDrive: under the iscsi interface the conductor
// writes the config drive too, over the same session, after the image:
// a config-2 partition at the end of the agent's disk, the image intact.
func TestISCSIDeployConfigDrive(t *testing.T) {
	img := gptImage(t, 12<<20)
	r := newRig(t, rigOptions{})
	r.enroll(t, fileImage(t, "disk.raw", img), nil)
	n := r.deployWith(t, engine.ProvisionRequest{Target: "active",
		ConfigDrive: map[string]any{"meta_data": map[string]any{"hostname": "over-iscsi"}}})
	if n.ProvisionState != node.StateActive || n.LastError != "" {
		t.Fatalf("after deploy: %q %q", n.ProvisionState, n.LastError)
	}
	d, err := blockdev.Open(r.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, len(img))
	d.ReadAt(got, 0)
	const table = 34 * 512
	if !bytes.Equal(got[:440], img[:440]) || !bytes.Equal(got[table:len(img)-512], img[table:len(img)-512]) {
		t.Error("the image's data changed")
	}
	tab, err := blockdev.ReadTable(d, d.Size())
	if err != nil || len(tab.Partitions) != 3 || tab.Partitions[2].Name != sharedcd.Label {
		t.Fatalf("table %+v %v", tab, err)
	}
	cd := tab.Partitions[2]
	if label, _ := sharedcd.FilesystemLabel(d, cd.Start); label != sharedcd.Label || cd.Start+cd.Size > d.Size()-33*512 || cd.Start < d.Size()-65<<20 {
		t.Errorf("config drive partition %+v holds %q", cd, label)
	}
	b := make([]byte, 1<<20)
	d.ReadAt(b, cd.Start)
	if !bytes.Contains(b, []byte(`"hostname":"over-iscsi"`)) {
		t.Error("the drive lacks its meta_data")
	}
	r.noSecret(t)
	r.targetStopped(t)
}

func num(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case float64:
		return int64(x)
	}
	return -1
}

func TestISCSIDeployFaults(t *testing.T) {
	img := gptImage(t, 8<<20)
	small := map[string]any{"root_device": map[string]any{"size": "<= 1"}}
	var once atomic.Bool
	for _, tc := range []struct {
		name     string
		opts     rigOptions
		props    map[string]any
		image    []byte // default img, raw
		gzip     bool
		want     string // in last_error; "" means the deploy succeeds
		zeroDisk bool   // nothing may land on the disk
		warning  string // in driver_internal_info iscsi_warning
	}{
		{name: "a raw image larger than the disk writes nothing", opts: rigOptions{diskSize: 6 << 20}, props: small,
			want: "does not fit the node's install disk", zeroDisk: true},
		{name: "a gzip image larger than the disk writes nothing", opts: rigOptions{diskSize: 6 << 20}, props: small, gzip: true,
			want: "does not fit the node's install disk", zeroDisk: true},
		{name: "CHAP credentials that do not match fail clearly", opts: rigOptions{tamper: func(p map[string]any) {
			p["chap_secret"] = "not-the-conductors-secret"
		}}, want: "CHAP authentication with the agent's iSCSI target", zeroDisk: true},
		{name: "a target on another port is unreachable after bounded logins", opts: rigOptions{tamper: func(p map[string]any) {
			p["portal_port"] = freePort(t)
		}}, want: "unreachable", zeroDisk: true},
		{name: "a target panic mid-write is contained, the write resumes and is reported", opts: rigOptions{
			hook: func(p []byte, off int64) ([]byte, error) {
				if off >= 4<<20 && once.CompareAndSwap(false, true) {
					panic("injected disk panic")
				}
				return p, nil
			}}, warning: "contained 1 panics"},
		{name: "a target that panics on every write fails, never succeeds", opts: rigOptions{
			hook: func(p []byte, off int64) ([]byte, error) { panic("injected disk panic") }},
			want: "Writing the image over iSCSI"},
		{name: "a disk that silently corrupts data fails the read-back", opts: rigOptions{
			hook: func(p []byte, off int64) ([]byte, error) {
				q := bytes.Clone(p)
				q[0] ^= 0xff
				return q, nil
			}}, want: "Reading back the image written over iSCSI found different data"},
		{name: "a disk that fails writes fails the deployment", opts: rigOptions{
			hook: func(p []byte, off int64) ([]byte, error) { return nil, errors.New("injected EIO") }},
			want: "Writing the image over iSCSI"},
		{name: "a write slower than the write timeout fails", opts: rigOptions{
			iscsi: engine.ISCSIOptions{WriteTimeout: 300 * time.Millisecond},
			hook: func(p []byte, off int64) ([]byte, error) {
				time.Sleep(100 * time.Millisecond)
				return p, nil
			}}, want: "did not finish within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.opts)
			image := img
			if tc.image != nil {
				image = tc.image
			}
			served := image
			name := "disk.raw"
			if tc.gzip {
				served, name = gz(t, image), "disk.raw.gz"
			}
			r.enroll(t, fileImage(t, name, served), tc.props)
			start := time.Now()
			n := r.deploy(t)
			t.Logf("settled in %v: %q", time.Since(start).Round(time.Millisecond), n.LastError)
			if tc.want == "" {
				if n.ProvisionState != node.StateActive {
					t.Fatalf("%q %q, want active", n.ProvisionState, n.LastError)
				}
				if got := r.diskSum(t, len(image)); got != sum(image) {
					t.Error("the disk does not hold the image")
				}
			} else {
				if n.ProvisionState != node.StateDeployFailed || !strings.Contains(n.LastError, "Deploy step deploy.write_image failed") ||
					!strings.Contains(n.LastError, tc.want) {
					t.Fatalf("%q %q, want deploy failed with %q", n.ProvisionState, n.LastError, tc.want)
				}
				if n.PowerState != node.PowerOff {
					t.Errorf("power %q after a failed deployment", n.PowerState)
				}
			}
			checked := len(image)
			if tc.opts.diskSize != 0 && tc.opts.diskSize < int64(checked) {
				checked = int(tc.opts.diskSize)
			}
			if tc.zeroDisk && !r.diskZero(t, checked) {
				t.Error("the disk was written")
			}
			if w, _ := n.DriverInternalInfo["iscsi_warning"].(string); !strings.Contains(w, tc.warning) || (tc.warning == "") != (w == "") {
				t.Errorf("iscsi_warning %q, want %q", w, tc.warning)
			}
			if r.started.Load() != 1 {
				t.Errorf("start_iscsi_target sent %d times", r.started.Load())
			}
			r.noSecret(t)
			r.targetStopped(t)
		})
	}
}
