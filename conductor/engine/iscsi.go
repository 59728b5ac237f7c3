package engine

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/ingot-dev/ingot/conductor/iscsi"
	"github.com/ingot-dev/ingot/conductor/node"
	"github.com/ingot-dev/ingot/shared/api"
	sharedcd "github.com/ingot-dev/ingot/shared/configdrive"
	"github.com/ingot-dev/ingot/shared/imagestream"
	proto "github.com/ingot-dev/ingot/shared/iscsi"
)

// iscsiDeploy is Ironic's former "iscsi" deploy interface, Ingot's
// fallback for nodes whose agent cannot fetch images itself: the node
// boots the agent, looks up and heartbeats exactly as with "direct", but
// write_image runs on the conductor. On the heartbeat that reaches it,
// the conductor
//
//  1. prepares the image in its own cache (file:// or http(s) with the
//     checksum fields, as for direct),
//  2. generates per-deploy CHAP credentials (crypto/rand; kept in memory
//     for this write only, never stored or logged),
//  3. asks the agent to export the install disk (root device hints as
//     for direct) as LUN 1 of iqn.2008-10.org.openstack:<node uuid> on
//     <host of the agent's callback URL>:<portal port>
//     (iscsi.start_iscsi_target, metadata wiped),
//  4. logs in with the pure-Go initiator (bounded retries while the
//     target is unreachable), refuses an image larger than the LUN before
//     writing anything, streams the image from the cache (decompressed,
//     checksummed), syncs and reads back (sampled by default),
//  5. tells the agent the write is done (iscsi.stop_iscsi_target, which
//     also reports panics the target contained),
//
// and goes on with the direct interface's tail: prepare_instance_boot,
// tear_down_agent, switch_to_tenant_network, boot_instance. Progress shows
// in driver_internal_info.deploy_progress; any failure fails the
// deployment like direct's (powered off, last_error set). The write runs
// in the heartbeat's task with the node reserved and in "deploying", so a
// conductor restart mid-write fails the node on recovery, and the write
// is bounded by ISCSIOptions.WriteTimeout. Cleaning is direct's.
type iscsiDeploy struct{ directDeploy }

// ISCSIIQNPrefix names the target an agent exports: IPA's default,
// followed by the node's UUID.
const ISCSIIQNPrefix = "iqn.2008-10.org.openstack:"

// driver_internal_info key of the iscsi interface.
const diISCSIWarning = "iscsi_warning"

// ISCSIOptions configure the iscsi deploy interface. Zero values are the
// defaults.
type ISCSIOptions struct {
	// PortalPort is the port agents export the disk on (3260, IPA's);
	// a node's driver_info iscsi_portal_port overrides it.
	PortalPort int
	// Verify is how much of the written image is read back: "none",
	// "sampled" (the default: the first, every 64th and the last MiB) or
	// "full"; a node's driver_info iscsi_verify overrides it.
	Verify string
	// LoginAttempts and LoginRetryInterval bound the logins while the
	// agent's target is unreachable (5, from 1 s doubling).
	LoginAttempts      int
	LoginRetryInterval time.Duration
	// WriteTimeout bounds one whole write (DeployCallbackTimeout).
	WriteTimeout time.Duration
	// ProgressInterval is how often deploy_progress is saved during the
	// write (2 s).
	ProgressInterval time.Duration
	// Writer tunes the initiator (chunk size, depth, reconnect budget);
	// its Verify is set from Verify.
	Writer iscsi.WriterOptions
	// Stream tunes the stream from the image cache (client, retries).
	Stream imagestream.Options
}

func (o *ISCSIOptions) defaults(callback time.Duration) {
	if o.PortalPort == 0 {
		o.PortalPort = 3260
	}
	if o.Verify == "" {
		o.Verify = "sampled"
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = callback
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 2 * time.Second
	}
}

// agentDriven reports whether n's deploy interface works through an agent
// on heartbeats (direct, iscsi).
func agentDriven(n *node.Node) bool {
	return n.Interfaces.Deploy == "direct" || n.Interfaces.Deploy == "iscsi"
}

// conductorRuns reports whether the conductor runs deploy step name
// itself: all of conductorSteps but write_image, which the agent runs,
// except under the iscsi interface.
func conductorRuns(n *node.Node, name string) bool {
	_, ours := conductorSteps[name]
	return ours && (name != stepWriteImage || n.Interfaces.Deploy == "iscsi")
}

// errRetryLater makes a conductor step wait for the next heartbeat
// instead of failing (the agent was busy or did not answer).
var errRetryLater = errors.New("retry on the next heartbeat")

func (d iscsiDeploy) validate(n *node.Node) error {
	if err := d.directDeploy.validate(n); err != nil {
		return err
	}
	if d.e.opts.Images == nil {
		return errors.New("the iscsi deploy interface streams images from the conductor's image cache, which is not configured")
	}
	_, err := d.e.iscsiSettings(n)
	return err
}

func (d iscsiDeploy) deploy(ctx context.Context, n *node.Node) (node.Event, error) {
	setInternal(n, diISCSIWarning, nil)
	return d.directDeploy.deploy(ctx, n)
}

// iscsiSettings are one node's portal port and read-back mode.
type iscsiSettings struct {
	port   int
	verify iscsi.VerifyMode
}

// iscsiSettings reads the conductor's defaults and the node's
// driver_info overrides.
func (e *Engine) iscsiSettings(n *node.Node) (iscsiSettings, error) {
	s := iscsiSettings{port: e.opts.ISCSI.PortalPort}
	if v, ok := n.DriverInfo["iscsi_portal_port"]; ok && v != nil {
		p, err := strconv.Atoi(strings.TrimSpace(fmt.Sprint(v)))
		if err != nil || p < 1 || p > 65535 {
			return s, fmt.Errorf("driver_info iscsi_portal_port %v is not a TCP port", v)
		}
		s.port = p
	}
	mode := e.opts.ISCSI.Verify
	if v, ok := n.DriverInfo["iscsi_verify"].(string); ok && v != "" {
		mode = v
	}
	switch strings.ToLower(mode) {
	case "none":
		s.verify = iscsi.VerifyNone
	case "sampled":
		s.verify = iscsi.VerifySampled
	case "full":
		s.verify = iscsi.VerifyFull
	default:
		return s, fmt.Errorf("iscsi_verify %q: want none, sampled or full", mode)
	}
	return s, nil
}

// newCHAPSecret returns 32 URL-safe characters from crypto/rand.
func newCHAPSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// iscsiImage prepares the image in the conductor's cache and returns
// where to stream it from.
func (e *Engine) iscsiImage(ctx context.Context, n *node.Node) (api.ImageInfo, error) {
	src, _ := n.InstanceInfo["image_source"].(string)
	u, err := url.Parse(src)
	if err != nil {
		return api.ImageInfo{}, fmt.Errorf("instance_info image_source %q is not a URL: %v", src, err)
	}
	want, err := e.checksumOf(n)
	if err != nil && u.Scheme != "file" {
		return api.ImageInfo{}, err
	}
	if e.opts.Images == nil {
		return api.ImageInfo{}, errors.New("the conductor's image cache is not configured")
	}
	info, err := e.opts.Images.Prepare(ctx, src, want)
	if err != nil {
		return api.ImageInfo{}, fmt.Errorf("cache image %s: %w", src, err)
	}
	info.ID = path.Base(u.Path)
	info.DiskFormat, _ = n.InstanceInfo["image_disk_format"].(string)
	if info.DiskFormat == "" {
		info.DiskFormat = "raw"
	}
	return info, nil
}

// iscsiWriteImage is write_image under the iscsi interface (see
// iscsiDeploy). Only errRetryLater leaves the deployment waiting; any
// other error fails it.
func (e *Engine) iscsiWriteImage(ctx context.Context, n *node.Node, ep AgentEndpoint) error {
	set, err := e.iscsiSettings(n)
	if err != nil {
		return err
	}
	u, err := url.Parse(ep.URL)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("the agent's callback URL %q has no host to reach its iSCSI target on", ep.URL)
	}
	info, err := e.iscsiImage(ctx, n)
	if err != nil {
		return err
	}
	log := e.log.With("node", n.UUID)
	// The config drive is read before the disk is exported: a bad one
	// fails the deployment with the disk untouched.
	drive, err := e.configDriveImage(ctx, n)
	if err != nil {
		return err
	}
	if cmds, err := e.opts.Agent.Commands(ctx, ep); err == nil && targetLeftRunning(cmds) {
		// An earlier attempt started the target and never got to stop it
		// (its answer was lost): start over with new credentials.
		log.Info("stopping the iscsi target an earlier attempt left running")
		e.stopTarget(ctx, n, ep)
	}

	creds := proto.Credentials{User: "ingot", Secret: newCHAPSecret()}
	iqn := ISCSIIQNPrefix + n.UUID
	res, err := e.opts.Agent.Execute(ctx, ep, "iscsi.start_iscsi_target", map[string]any{
		"iqn": iqn, "portal_port": set.port, "wipe_disk_metadata": true,
		"chap_username": creds.User, "chap_secret": creds.Secret, "node": agentNode(n)}, true)
	switch {
	case errors.Is(err, ErrAgentBusy), errors.Is(err, ErrAgentUnreachable):
		return fmt.Errorf("%w: start the agent's iSCSI target: %v", errRetryLater, err)
	case err != nil:
		return fmt.Errorf("start the agent's iSCSI target: %w", err)
	case res.CommandStatus != api.StatusSucceeded:
		return fmt.Errorf("The agent could not export its disk over iSCSI: %s", commandError(res))
	}

	portal := net.JoinHostPort(u.Hostname(), strconv.Itoa(set.port))
	wopts := e.opts.ISCSI.Writer
	wopts.Verify = set.verify
	var saved time.Time
	progress := func(p api.Progress) {
		if p.Phase != imagestream.PhaseDone && time.Since(saved) < e.opts.ISCSI.ProgressInterval {
			return
		}
		saved = time.Now()
		setInternal(n, diDeployProgress, progressOf(stepWriteImage, &p))
		if err := e.save(ctx, n); err != nil {
			log.Warn("record deploy progress", "err", err)
		}
	}
	var after func(iscsi.LUNAccess, int64, int) error
	if drive != nil {
		after = func(lun iscsi.LUNAccess, size int64, bs int) error {
			p, err := sharedcd.Install(lun, size, bs, drive)
			if err != nil {
				return fmt.Errorf("write the config drive over iscsi: %w", err)
			}
			log.Info("config drive written over iscsi", "partition", p.Partition, "table", p.Table, "created", p.Created,
				"offset", p.Offset, "size", p.Size, "bytes", len(drive))
			return nil
		}
	}
	wctx, cancel := context.WithTimeout(ctx, e.opts.ISCSI.WriteTimeout)
	defer cancel()
	log.Info("writing the image over iscsi", "image", info.ID, "portal", portal, "target", iqn, "verify", set.verify)
	r, werr := iscsi.WriteImage(wctx, iscsi.Config{Portal: portal, TargetIQN: iqn, CHAP: creds,
		Logger: e.log.With("node", n.UUID, "component", "iscsi")},
		info, iscsi.ImageOptions{Writer: wopts, LoginAttempts: e.opts.ISCSI.LoginAttempts,
			LoginRetryInterval: e.opts.ISCSI.LoginRetryInterval, Stream: e.opts.ISCSI.Stream, Progress: progress, After: after})
	st, serr := e.stopTarget(ctx, n, ep)
	if werr != nil {
		if wctx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("Writing the image over iSCSI did not finish within %s (%d bytes acknowledged): %v",
				e.opts.ISCSI.WriteTimeout, r.Writer.Acknowledged, werr)
		}
		return iscsiFailure(werr, portal, iqn)
	}
	if serr != nil {
		return fmt.Errorf("The image was written, but the agent could not stop its iSCSI target and flush the disk: %v", serr)
	}
	if st.Panics > 0 {
		msg := fmt.Sprintf("The agent's iSCSI target contained %d panics during the write of node %s (last: %s); the write resumed and completed.",
			st.Panics, n.UUID, st.LastPanic)
		log.Warn("iscsi target panicked during the write", "panics", st.Panics, "last_panic", st.LastPanic)
		setInternal(n, diISCSIWarning, msg)
	}
	log.Info("write_image over iscsi finished", "bytes", r.Stream.Written, "reconnects", r.Writer.Reconnects,
		"verified_bytes", r.Writer.Verified, "duration", r.Duration.Round(time.Millisecond))
	return nil
}

// targetStats is what stop_iscsi_target reports.
type targetStats struct {
	Sessions  int64  `json:"sessions"`
	Panics    int64  `json:"panics"`
	LastPanic string `json:"last_panic"`
}

// stopTarget sends the done notice (iscsi.stop_iscsi_target) and reads
// the target's health from the answer.
func (e *Engine) stopTarget(ctx context.Context, n *node.Node, ep AgentEndpoint) (targetStats, error) {
	var st targetStats
	res, err := e.opts.Agent.Execute(ctx, ep, "iscsi.stop_iscsi_target", map[string]any{}, true)
	if err == nil && res.CommandStatus != api.StatusSucceeded {
		err = errors.New(commandError(res))
	}
	if err != nil {
		e.log.Warn("stop the agent's iscsi target", "node", n.UUID, "err", err)
		return st, err
	}
	_ = json.Unmarshal(res.CommandResult, &st)
	return st, nil
}

// targetLeftRunning reports whether the agent's last start_iscsi_target
// succeeded and no stop followed it.
func targetLeftRunning(cmds []api.CommandResult) bool {
	running := false
	for _, c := range cmds {
		switch c.CommandName {
		case "start_iscsi_target":
			running = c.CommandStatus == api.StatusSucceeded
		case "stop_iscsi_target":
			running = false
		}
	}
	return running
}

// iscsiFailure words a failed write for last_error.
func iscsiFailure(err error, portal, iqn string) error {
	switch {
	case errors.Is(err, proto.LoginAuthFailure):
		return fmt.Errorf("CHAP authentication with the agent's iSCSI target %s at %s failed: %v", iqn, portal, err)
	case errors.Is(err, iscsi.ErrTargetUnreachable):
		return fmt.Errorf("The agent's iSCSI target at %s is unreachable (is the port open between the conductor and the node?): %v", portal, err)
	case errors.Is(err, imagestream.ErrTooLarge):
		return fmt.Errorf("The image does not fit the node's install disk; nothing was written: %v", err)
	case errors.Is(err, imagestream.ErrChecksum):
		return fmt.Errorf("Image checksum mismatch: %v", err)
	case errors.Is(err, iscsi.ErrVerify):
		return fmt.Errorf("Reading back the image written over iSCSI found different data: %v", err)
	}
	return fmt.Errorf("Writing the image over iSCSI to %s failed: %v", portal, err)
}

// configDriveImage returns the config drive instance_info carries,
// decoded (fetched first when it is a URL), or nil when there is none.
func (e *Engine) configDriveImage(ctx context.Context, n *node.Node) ([]byte, error) {
	s, _ := n.InstanceInfo["configdrive"].(string)
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	data := []byte(s)
	if sharedcd.IsURL(s) {
		client := e.opts.ISCSI.Stream.Client
		if client == nil {
			client = &http.Client{Timeout: 5 * time.Minute}
		}
		var err error
		if data, err = sharedcd.Fetch(ctx, client, s); err != nil {
			return nil, err
		}
	}
	img, err := sharedcd.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("config drive: %w", err)
	}
	return img, nil
}
