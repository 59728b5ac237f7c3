// Package node holds the conductor's domain types: Node, Port, provision and
// power states, the provisioning events, and the errors the rest of the
// conductor classifies with errors.Is.
//
// It imports nothing from the project and does no I/O. Values here are what
// the store persists and what the API renders; the rules that move a node
// between states live in package provision, and the code that applies them
// lives in package engine.
package node

import (
	"errors"
	"fmt"
	"time"
)

// State is a provision state, spelled exactly as Ironic spells it on the wire.
type State string

// Provision states (Ironic's names).
const (
	StateNone          State = ""
	StateEnroll        State = "enroll"
	StateVerifying     State = "verifying"
	StateManageable    State = "manageable"
	StateInspecting    State = "inspecting"
	StateInspectWait   State = "inspect wait"
	StateInspectFailed State = "inspect failed"
	StateCleaning      State = "cleaning"
	StateCleanWait     State = "clean wait"
	StateCleanFailed   State = "clean failed"
	StateAvailable     State = "available"
	StateDeploying     State = "deploying"
	StateDeployWait    State = "wait call-back"
	StateDeployFailed  State = "deploy failed"
	StateActive        State = "active"
	StateDeleting      State = "deleting"
	StateError         State = "error"
	StateAdopting      State = "adopting"
	StateAdoptFailed   State = "adopt failed"
)

// States lists every provision state the conductor knows, in a stable order.
func States() []State {
	return []State{
		StateEnroll, StateVerifying, StateManageable,
		StateInspecting, StateInspectWait, StateInspectFailed,
		StateCleaning, StateCleanWait, StateCleanFailed,
		StateAvailable, StateDeploying, StateDeployWait, StateDeployFailed,
		StateActive, StateDeleting, StateError, StateAdopting, StateAdoptFailed,
	}
}

// Valid reports whether s is a known provision state.
func (s State) Valid() bool {
	for _, k := range States() {
		if s == k {
			return true
		}
	}
	return false
}

// Event is something that happens to a node: an operator verb or an outcome
// of work the conductor did.
type Event string

// Events. The first group are operator verbs (what the API's "target" maps
// to); the second group are outcomes reported by the engine.
const (
	EventManage  Event = "manage"
	EventProvide Event = "provide"
	EventInspect Event = "inspect"
	EventClean   Event = "clean"
	EventDeploy  Event = "deploy"
	EventRebuild Event = "rebuild"
	EventDelete  Event = "delete"
	EventAbort   Event = "abort"
	EventAdopt   Event = "adopt"

	EventDone    Event = "done"
	EventFail    Event = "fail"
	EventWait    Event = "wait"
	EventResume  Event = "resume"
	EventTimeout Event = "timeout"
)

// Events lists every event, in a stable order.
func Events() []Event {
	return []Event{
		EventManage, EventProvide, EventInspect, EventClean, EventDeploy,
		EventRebuild, EventDelete, EventAbort, EventAdopt,
		EventDone, EventFail, EventWait, EventResume, EventTimeout,
	}
}

// PowerState is a node's power state as Ironic spells it. The empty value
// means unknown (null on the wire).
type PowerState string

// Power states and power targets.
const (
	PowerUnknown    PowerState = ""
	PowerOn         PowerState = "power on"
	PowerOff        PowerState = "power off"
	PowerError      PowerState = "error"
	PowerReboot     PowerState = "rebooting"
	PowerSoftOff    PowerState = "soft power off"
	PowerSoftReboot PowerState = "soft rebooting"
)

// Boot devices (Ironic's names).
const (
	BootPXE   = "pxe"
	BootDisk  = "disk"
	BootCDROM = "cdrom"
	BootBIOS  = "bios"
	BootSafe  = "safe"
)

// Interfaces names the driver interface implementation a node uses for each
// of Ironic's interface kinds.
type Interfaces struct {
	Bios       string
	Boot       string
	Console    string
	Deploy     string
	Inspect    string
	Management string
	Network    string
	Power      string
	Raid       string
	Rescue     string
	Storage    string
	Vendor     string
}

// Node is a bare-metal machine under the conductor's management.
type Node struct {
	ID   int64 // insertion order; Ironic's default sort key
	UUID string
	Name string

	Driver     string
	Interfaces Interfaces

	DriverInfo         map[string]any
	DriverInternalInfo map[string]any
	InstanceInfo       map[string]any
	Properties         map[string]any
	Extra              map[string]any
	NetworkData        map[string]any
	DeployStep         map[string]any
	CleanStep          map[string]any
	RaidConfig         map[string]any
	TargetRaidConfig   map[string]any
	Traits             []string

	InstanceUUID   string
	ResourceClass  string
	ConductorGroup string
	Description    string
	Owner          string
	Lessee         string
	ChassisUUID    string
	Shard          string

	ProvisionState       State
	TargetProvisionState State
	ProvisionUpdatedAt   time.Time
	LastError            string

	PowerState       PowerState
	TargetPowerState PowerState

	Maintenance       bool
	MaintenanceReason string
	Fault             string

	Protected       bool
	ProtectedReason string
	Retired         bool
	RetiredReason   string
	AutomatedClean  *bool
	ConsoleEnabled  bool

	BootMode   string
	SecureBoot *bool

	InspectionStartedAt  time.Time
	InspectionFinishedAt time.Time

	// Reservation names the conductor holding the node's exclusive lock,
	// empty when free. Conductor is the conductor that owns the node.
	Reservation string
	Conductor   string

	CreatedAt time.Time
	UpdatedAt time.Time

	// Version increases on every persisted change; writes carry the version
	// they read and fail with ErrConflict when it moved.
	Version int64
}

// Clone returns a deep copy of n, so a caller can mutate it without touching
// the original's maps.
func (n *Node) Clone() *Node {
	c := *n
	c.DriverInfo = CloneMap(n.DriverInfo)
	c.DriverInternalInfo = CloneMap(n.DriverInternalInfo)
	c.InstanceInfo = CloneMap(n.InstanceInfo)
	c.Properties = CloneMap(n.Properties)
	c.Extra = CloneMap(n.Extra)
	c.NetworkData = CloneMap(n.NetworkData)
	c.DeployStep = CloneMap(n.DeployStep)
	c.CleanStep = CloneMap(n.CleanStep)
	c.RaidConfig = CloneMap(n.RaidConfig)
	c.TargetRaidConfig = CloneMap(n.TargetRaidConfig)
	if n.Traits != nil {
		c.Traits = append([]string(nil), n.Traits...)
	}
	if n.AutomatedClean != nil {
		v := *n.AutomatedClean
		c.AutomatedClean = &v
	}
	if n.SecureBoot != nil {
		v := *n.SecureBoot
		c.SecureBoot = &v
	}
	return &c
}

// Port is a network interface of a node, identified by its MAC address.
type Port struct {
	ID                  int64
	UUID                string
	Address             string // lower-case MAC, unique
	NodeUUID            string
	PXEEnabled          bool
	LocalLinkConnection map[string]any
	PhysicalNetwork     string
	Extra               map[string]any
	InternalInfo        map[string]any
	IsSmartNIC          bool
	Name                string
	CreatedAt           time.Time
	UpdatedAt           time.Time
	Version             int64
}

// Clone returns a deep copy of p.
func (p *Port) Clone() *Port {
	c := *p
	c.LocalLinkConnection = CloneMap(p.LocalLinkConnection)
	c.Extra = CloneMap(p.Extra)
	c.InternalInfo = CloneMap(p.InternalInfo)
	return &c
}

// Conductor is a running conductor process as registered in the store.
type Conductor struct {
	Hostname       string
	ConductorGroup string
	Drivers        []string
	CreatedAt      time.Time
	UpdatedAt      time.Time // refreshed by the conductor's liveness heartbeat
}

// Sentinel errors. Packages wrap them with %w and detail; the API maps them
// to status codes in one place.
var (
	ErrNotFound          = errors.New("not found")
	ErrConflict          = errors.New("conflict")       // optimistic version check failed
	ErrLocked            = errors.New("node is locked") // reservation held by a conductor
	ErrInvalidTransition = errors.New("invalid state transition")
	ErrInvalid           = errors.New("invalid request")
	ErrDuplicate         = errors.New("already exists")
	ErrUnsupported       = errors.New("not supported")
)

// LockedError reports which conductor holds a node's reservation.
type LockedError struct {
	Node   string
	Holder string
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("Node %s is locked by host %s, please retry after the current operation is completed.", e.Node, e.Holder)
}

// Unwrap makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Unwrap() error { return ErrLocked }

// TransitionError reports an action a node's current state does not allow.
type TransitionError struct {
	Node   string
	Action string
	State  State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("The requested action \"%s\" can not be performed on node \"%s\" while it is in state \"%s\".", e.Action, e.Node, e.State)
}

// Unwrap makes errors.Is(err, ErrInvalidTransition) true.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// CloneMap deep-copies a JSON-shaped map (values are maps, slices, strings,
// numbers, booleans or nil). A nil map stays nil.
func CloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = cloneValue(v)
	}
	return c
}

func cloneValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return CloneMap(t)
	case []any:
		c := make([]any, len(t))
		for i, e := range t {
			c[i] = cloneValue(e)
		}
		return c
	default:
		return v
	}
}

// Error is an error whose message is fit to show an API client (Ironic's
// faultstring) and which classifies as Kind under errors.Is.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the error's kind.
func (e *Error) Unwrap() error { return e.Kind }

// Errorf builds an *Error of the given kind.
func Errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
