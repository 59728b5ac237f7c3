// Package api holds the JSON wire types shared by Ingot's agent and
// conductor: the ramdisk half of Ironic's API (lookup, heartbeat), the
// agent's command API as ironic-python-agent (IPA) serves it, deploy and
// clean steps, image_info, the hardware inventory, and the error envelopes
// of both APIs.
//
// The shapes are Ironic's and IPA's, so that a real Ironic conductor can
// drive Ingot's agent and real IPA can run under Ingot's conductor. It
// imports only the standard library.
//
// Version history (APIVersion):
//
//	1  2026-11-24  Ironic 21.4 / IPA 9.x wire protocol: lookup (microversion
//	               1.62, agent token), heartbeat (1.68, agent_verify_ca),
//	               command API v1; Ingot adds command progress while RUNNING.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// APIVersion is the version of this package's wire contract.
const APIVersion = 1

// Microversions of Ironic's API the agent uses.
const (
	// LookupVersion is the microversion at which lookup mints an agent
	// token.
	LookupVersion = "1.62"
	// HeartbeatVersion is the microversion that accepts agent_verify_ca.
	HeartbeatVersion = "1.68"
	// VersionHeader carries the microversion on every Ironic API request.
	VersionHeader = "X-OpenStack-Ironic-API-Version"
)

// AgentPort is the agent command API's default port.
const AgentPort = 9999

// --- Ironic side: lookup and heartbeat --------------------------------------

// LookupResponse answers GET /v1/lookup.
type LookupResponse struct {
	Node   LookupNode   `json:"node"`
	Config LookupConfig `json:"config"`
}

// LookupNode is the part of the node an agent may see.
type LookupNode struct {
	UUID               string         `json:"uuid"`
	Properties         map[string]any `json:"properties"`
	InstanceInfo       map[string]any `json:"instance_info"`
	DriverInternalInfo map[string]any `json:"driver_internal_info"`
	Links              []Link         `json:"links,omitempty"`
}

// Link is an Ironic API link.
type Link struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
}

// LookupConfig is the agent configuration Ironic hands out with a lookup.
type LookupConfig struct {
	HeartbeatTimeout int `json:"heartbeat_timeout"`
	// AgentToken is the token the agent must present; "******" when it was
	// already handed out; null below microversion 1.62.
	AgentToken                  *string  `json:"agent_token"`
	AgentTokenRequired          bool     `json:"agent_token_required"`
	AgentMD5ChecksumEnable      bool     `json:"agent_md5_checksum_enable"`
	DisableDeepImageInspection  bool     `json:"disable_deep_image_inspection"`
	PermittedImageFormats       []string `json:"permitted_image_formats,omitempty"`
	AgentSkipBMCDetect          bool     `json:"agent_skip_bmc_detect"`
	EnableBIOSBootloaderInstall bool     `json:"enable_bios_bootloader_install"`
	TLSMinVersion               string   `json:"tls_min_version,omitempty"`
}

// MaskedToken is what Ironic returns instead of a token it handed out
// before.
const MaskedToken = "******"

// MinTokenLength is the length from which IPA accepts a token as valid.
const MinTokenLength = 32

// Validate checks a lookup answer carries what an agent needs.
func (r *LookupResponse) Validate() error {
	if r.Node.UUID == "" {
		return errors.New("lookup response: node.uuid is missing")
	}
	if r.Config.HeartbeatTimeout < 0 {
		return fmt.Errorf("lookup response: negative heartbeat_timeout %d", r.Config.HeartbeatTimeout)
	}
	return nil
}

// HeartbeatRequest is the body of POST /v1/heartbeat/{node}.
type HeartbeatRequest struct {
	CallbackURL   string `json:"callback_url"`
	AgentToken    string `json:"agent_token"`
	AgentVersion  string `json:"agent_version"`
	AgentVerifyCA string `json:"agent_verify_ca,omitempty"`
	// AgentStatus and AgentStatusMessage (microversion 1.72) come from
	// non-IPA ramdisks; Ingot's agent does not send them.
	AgentStatus        string `json:"agent_status,omitempty"`
	AgentStatusMessage string `json:"agent_status_message,omitempty"`
}

// Validate checks the fields Ironic checks before looking at the node.
func (h *HeartbeatRequest) Validate() error {
	if h.CallbackURL != "" {
		u, err := url.Parse(h.CallbackURL)
		if err != nil || !strings.Contains(u.Scheme, "http") || u.Host == "" {
			return fmt.Errorf("Invalid callback_url %q", h.CallbackURL)
		}
	}
	if h.AgentVersion == "" && h.AgentStatus == "" {
		return errors.New("Agent did not transmit a version")
	}
	return nil
}

// --- agent side: command API ------------------------------------------------

// Command statuses.
const (
	StatusRunning             = "RUNNING"
	StatusSucceeded           = "SUCCEEDED"
	StatusFailed              = "FAILED"
	StatusVersionMismatch     = "VERSION_MISMATCH"
	StatusCleanVersionMismach = "CLEAN_VERSION_MISMATCH"
)

// CommandRequest is the body of POST /v1/commands/.
type CommandRequest struct {
	// Name is "<extension>.<command>", e.g. "deploy.execute_deploy_step".
	Name   string                     `json:"name"`
	Params map[string]json.RawMessage `json:"params"`
}

// Split returns a command name's extension and command.
func (c *CommandRequest) Split() (ext, cmd string, err error) {
	ext, cmd, ok := strings.Cut(c.Name, ".")
	if !ok || ext == "" || cmd == "" || strings.Contains(cmd, ".") {
		return "", "", fmt.Errorf("invalid command name %q: want <extension>.<command>", c.Name)
	}
	return ext, cmd, nil
}

// CommandResult is one command's state, as IPA reports it.
type CommandResult struct {
	ID string `json:"id"`
	// CommandName is the short name, without the extension.
	CommandName   string          `json:"command_name"`
	CommandStatus string          `json:"command_status"`
	CommandError  *CommandError   `json:"command_error"`
	CommandResult json.RawMessage `json:"command_result"`
	// Progress is Ingot's addition: what a running command has done so
	// far. Ironic ignores it; Ingot's conductor shows it on the node.
	Progress *Progress `json:"progress,omitempty"`
}

// CommandError is a failed command's error, as IPA serialises exceptions.
type CommandError struct {
	Type    string `json:"type"`
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details string `json:"details"`
}

func (e *CommandError) Error() string {
	if e.Details != "" {
		return e.Details
	}
	return e.Message
}

// CommandList answers GET /v1/commands/: every command since the agent
// started, oldest first.
type CommandList struct {
	Commands []CommandResult `json:"commands"`
}

// Progress reports a long-running command's progress.
type Progress struct {
	Phase          string  `json:"phase,omitempty"`
	Bytes          int64   `json:"bytes"`
	Total          int64   `json:"total,omitempty"`
	Percent        float64 `json:"percent,omitempty"`
	BytesPerSecond float64 `json:"bytes_per_second,omitempty"`
	Resumes        int     `json:"resumes,omitempty"`
}

// AgentStatus answers GET /v1/status.
type AgentStatus struct {
	StartedAt float64 `json:"started_at"`
	Version   string  `json:"version"`
}

// Fault is the error body of the agent's API ({"faultcode", "faultstring"})
// and the inner document of Ironic's error envelope.
type Fault struct {
	Faultcode   string  `json:"faultcode"`
	Faultstring string  `json:"faultstring"`
	Debuginfo   *string `json:"debuginfo"`
}

// ErrorEnvelope is Ironic's API error body: error_message holds a JSON
// encoded Fault.
type ErrorEnvelope struct {
	ErrorMessage string `json:"error_message"`
}

// FaultString extracts the human message from an error body of either API:
// Ironic's envelope, the agent's fault, or (failing both) the raw text.
func FaultString(body []byte) string {
	var env ErrorEnvelope
	if json.Unmarshal(body, &env) == nil && env.ErrorMessage != "" {
		var f Fault
		if json.Unmarshal([]byte(env.ErrorMessage), &f) == nil && f.Faultstring != "" {
			return f.Faultstring
		}
		var d struct {
			Description string `json:"description"`
		}
		if json.Unmarshal([]byte(env.ErrorMessage), &d) == nil && d.Description != "" {
			return d.Description
		}
		return env.ErrorMessage
	}
	var f Fault
	if json.Unmarshal(body, &f) == nil && f.Faultstring != "" {
		return f.Faultstring
	}
	return strings.TrimSpace(string(body))
}

// --- steps and images -------------------------------------------------------

// Step is a deploy or clean step.
type Step struct {
	Interface       string         `json:"interface"`
	Step            string         `json:"step"`
	Priority        int            `json:"priority"`
	RebootRequested bool           `json:"reboot_requested"`
	Abortable       *bool          `json:"abortable,omitempty"`
	RequiresRamdisk *bool          `json:"requires_ramdisk,omitempty"`
	Args            map[string]any `json:"args,omitempty"`
	ArgsInfo        map[string]any `json:"argsinfo,omitempty"`
}

// StepsResult answers get_deploy_steps / get_clean_steps.
type StepsResult struct {
	DeploySteps            map[string][]Step `json:"deploy_steps,omitempty"`
	CleanSteps             map[string][]Step `json:"clean_steps,omitempty"`
	HardwareManagerVersion map[string]string `json:"hardware_manager_version"`
}

// ImageInfo describes the image write_image / prepare_image write.
type ImageInfo struct {
	ID              string   `json:"id"`
	URLs            []string `json:"urls"`
	Checksum        string   `json:"checksum,omitempty"`
	OSHashAlgo      string   `json:"os_hash_algo,omitempty"`
	OSHashValue     string   `json:"os_hash_value,omitempty"`
	DiskFormat      string   `json:"disk_format,omitempty"`
	ContainerFormat *string  `json:"container_format"`
	StreamRawImages bool     `json:"stream_raw_images"`
	ImageType       string   `json:"image_type,omitempty"`
	NodeUUID        string   `json:"node_uuid,omitempty"`
	// RootDevice carries root device hints when the conductor sends them
	// with the image (Ingot's conductor does; IPA reads them from the node).
	RootDevice map[string]any `json:"root_device,omitempty"`
	// ImageRequestAuthorization is a full Authorization header value,
	// base64-encoded, to send to the image server.
	ImageRequestAuthorization string            `json:"image_request_authorization,omitempty"`
	Proxies                   map[string]string `json:"proxies,omitempty"`
	NoProxy                   string            `json:"no_proxy,omitempty"`
}

// Validate applies IPA's rules: an id, at least one URL, and a usable
// checksum (a URL, a SHA-2 digest, an MD5 digest when md5Allowed, or an
// os_hash pair).
func (i *ImageInfo) Validate(md5Allowed bool) error {
	if i.ID == "" {
		return errors.New("image_info: id is missing")
	}
	if len(i.URLs) == 0 {
		return errors.New("image_info: urls is empty")
	}
	for _, u := range i.URLs {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") {
			return fmt.Errorf("image_info: %q is not an http(s) URL", u)
		}
	}
	switch {
	case i.OSHashAlgo != "" && i.OSHashValue != "":
	case strings.HasPrefix(i.Checksum, "http://") || strings.HasPrefix(i.Checksum, "https://"):
	case len(i.Checksum) > 32:
	case len(i.Checksum) == 32 && md5Allowed:
	case len(i.Checksum) == 32:
		return errors.New("image_info: MD5 checksums are not allowed; give a SHA-256 or SHA-512 os_hash")
	default:
		return errors.New("image_info: no usable checksum (checksum or os_hash_algo + os_hash_value)")
	}
	return nil
}

// PartitionUUIDs answers standby.get_partition_uuids.
type PartitionUUIDs struct {
	RootUUID      string `json:"root uuid,omitempty"`
	EFISystemUUID string `json:"efi system partition uuid,omitempty"`
	PrepBootUUID  string `json:"PReP Boot partition uuid,omitempty"`
}

// InstallBootloaderParams are image.install_bootloader's parameters.
type InstallBootloaderParams struct {
	RootUUID                string  `json:"root_uuid"`
	EFISystemPartUUID       *string `json:"efi_system_part_uuid"`
	PrepBootPartUUID        *string `json:"prep_boot_part_uuid"`
	TargetBootMode          string  `json:"target_boot_mode"`
	IgnoreBootloaderFailure *bool   `json:"ignore_bootloader_failure,omitempty"`
}
