package node

import (
	"fmt"
	"slices"
	"strings"
)

// Interface kinds, named as Ironic names the node fields without the
// "_interface" suffix.
const (
	KindBios       = "bios"
	KindBoot       = "boot"
	KindConsole    = "console"
	KindDeploy     = "deploy"
	KindInspect    = "inspect"
	KindManagement = "management"
	KindNetwork    = "network"
	KindPower      = "power"
	KindRaid       = "raid"
	KindRescue     = "rescue"
	KindStorage    = "storage"
	KindVendor     = "vendor"
)

// InterfaceKinds lists the interface kinds in Ironic's validate order.
func InterfaceKinds() []string {
	return []string{KindBoot, KindDeploy, KindManagement, KindNetwork, KindPower,
		KindBios, KindConsole, KindInspect, KindRaid, KindRescue, KindStorage, KindVendor}
}

// Get returns the implementation name for kind.
func (i *Interfaces) Get(kind string) string {
	if p := i.field(kind); p != nil {
		return *p
	}
	return ""
}

// Set sets the implementation name for kind; it reports false for an
// unknown kind.
func (i *Interfaces) Set(kind, impl string) bool {
	p := i.field(kind)
	if p == nil {
		return false
	}
	*p = impl
	return true
}

func (i *Interfaces) field(kind string) *string {
	switch kind {
	case KindBios:
		return &i.Bios
	case KindBoot:
		return &i.Boot
	case KindConsole:
		return &i.Console
	case KindDeploy:
		return &i.Deploy
	case KindInspect:
		return &i.Inspect
	case KindManagement:
		return &i.Management
	case KindNetwork:
		return &i.Network
	case KindPower:
		return &i.Power
	case KindRaid:
		return &i.Raid
	case KindRescue:
		return &i.Rescue
	case KindStorage:
		return &i.Storage
	case KindVendor:
		return &i.Vendor
	}
	return nil
}

// HardwareType is one of Ironic's hardware types: the interface
// implementations it supports per kind, the first of each list being the
// default.
type HardwareType struct {
	Name      string
	Supported map[string][]string
}

// HardwareTypes returns the hardware types Ingot implements, named as Ironic
// names them. The result is a fresh value on every call.
func HardwareTypes() []HardwareType {
	common := func(m map[string][]string) map[string][]string {
		base := map[string][]string{
			KindBios:    {"no-bios", "fake"},
			KindConsole: {"no-console", "fake"},
			KindInspect: {"no-inspect", "fake", "agent"},
			KindNetwork: {"noop", "flat"},
			KindRaid:    {"no-raid", "fake"},
			KindRescue:  {"no-rescue", "fake"},
			KindStorage: {"noop", "fake"},
			KindVendor:  {"no-vendor", "fake"},
		}
		for k, v := range m {
			base[k] = v
		}
		return base
	}
	return []HardwareType{
		{Name: "fake-hardware", Supported: map[string][]string{
			KindBios:       {"fake", "no-bios"},
			KindBoot:       {"fake", "ipxe", "pxe"},
			KindConsole:    {"fake", "no-console"},
			KindDeploy:     {"fake", "direct", "iscsi"},
			KindInspect:    {"fake", "no-inspect", "agent"},
			KindManagement: {"fake", "noop"},
			KindNetwork:    {"noop", "flat"},
			KindPower:      {"fake"},
			KindRaid:       {"fake", "no-raid"},
			KindRescue:     {"fake", "no-rescue"},
			KindStorage:    {"fake", "noop"},
			KindVendor:     {"fake", "no-vendor"},
		}},
		{Name: "ipmi", Supported: common(map[string][]string{
			KindBoot:       {"ipxe", "pxe", "fake"},
			KindDeploy:     {"direct", "iscsi", "fake"},
			KindManagement: {"ipmitool", "noop"},
			KindPower:      {"ipmitool"},
			KindVendor:     {"ipmitool", "no-vendor"},
		})},
		{Name: "manual-management", Supported: common(map[string][]string{
			KindBoot:       {"ipxe", "pxe", "fake"},
			KindDeploy:     {"direct", "iscsi", "fake"},
			KindManagement: {"noop", "fake"},
			KindPower:      {"fake"},
		})},
	}
}

// LookupHardwareType returns the hardware type called name.
func LookupHardwareType(name string) (HardwareType, bool) {
	for _, h := range HardwareTypes() {
		if h.Name == name {
			return h, true
		}
	}
	return HardwareType{}, false
}

// Resolve fills every empty interface in ifs with the hardware type's
// default and checks that each named one is supported. It returns an error
// wrapping ErrInvalid that names the offending interface.
func (h HardwareType) Resolve(ifs Interfaces) (Interfaces, error) {
	for _, kind := range InterfaceKinds() {
		supported := h.Supported[kind]
		cur := ifs.Get(kind)
		if cur == "" {
			ifs.Set(kind, supported[0])
			continue
		}
		if !slices.Contains(supported, cur) {
			return ifs, fmt.Errorf("%w: %s interface implementation '%s' is not supported by hardware type %s (supported: %s)", ErrInvalid, kind, cur, h.Name, strings.Join(supported, ", "))
		}
	}
	return ifs, nil
}
