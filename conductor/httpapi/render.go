package httpapi

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ingot-dev/ingot/conductor/node"
)

// objWriter writes one JSON object field by field, in a fixed order,
// without building an intermediate map: list responses of thousands of
// nodes stay cheap.
type objWriter struct {
	b *bytes.Buffer
	n int
}

func newObj(b *bytes.Buffer) *objWriter { b.WriteByte('{'); return &objWriter{b: b} }

func (o *objWriter) end() { o.b.WriteByte('}') }

func (o *objWriter) key(k string) {
	if o.n > 0 {
		o.b.WriteByte(',')
	}
	o.n++
	appendString(o.b, k)
	o.b.WriteByte(':')
}

func (o *objWriter) str(k, v string) {
	o.key(k)
	appendString(o.b, v)
}

// nstr writes a string, or null when empty.
func (o *objWriter) nstr(k, v string) {
	o.key(k)
	if v == "" {
		o.b.WriteString("null")
		return
	}
	appendString(o.b, v)
}

func (o *objWriter) boolean(k string, v bool) {
	o.key(k)
	o.b.WriteString(strconv.FormatBool(v))
}

func (o *objWriter) nbool(k string, v *bool) {
	o.key(k)
	if v == nil {
		o.b.WriteString("null")
		return
	}
	o.b.WriteString(strconv.FormatBool(*v))
}

func (o *objWriter) time(k string, t time.Time) {
	o.key(k)
	if t.IsZero() {
		o.b.WriteString("null")
		return
	}
	appendString(o.b, FormatTime(t))
}

// value writes any JSON-encodable value; nil maps become {}.
func (o *objWriter) value(k string, v any) {
	o.key(k)
	if m, ok := v.(map[string]any); ok && m == nil {
		o.b.WriteString("{}")
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		o.b.WriteString("null")
		return
	}
	o.b.Write(b)
}

// FormatTime renders a time as Ironic does: microseconds, explicit UTC
// offset.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000-07:00") }

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string.
func appendString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b.WriteString(s[start:i])
			switch c {
			case '"', '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			default:
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString(s[start:i])
			b.WriteString(`\ufffd`)
			i++
			start = i
			continue
		}
		i += size
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}

// Mask is what secrets are replaced with, as Ironic does.
const Mask = "******"

// secretKey reports whether a driver_info key holds a secret: passwords,
// tokens, keys and other credentials (oslo's mask_dict_password list, plus
// every key ending in "password").
func secretKey(k string) bool {
	l := strings.ToLower(k)
	if strings.HasSuffix(l, "password") || strings.HasSuffix(l, "_key") || l == "key" {
		return true
	}
	for _, s := range []string{"password", "passwd", "secret", "token", "passphrase", "credential", "kg_key", "auth_key", "private_key"} {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// maskSecrets returns m with secret values replaced by Mask, recursing into
// nested objects; m itself is not modified.
func maskSecrets(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch {
		case secretKey(k) && v != nil && v != "":
			out[k] = Mask
		default:
			if sub, ok := v.(map[string]any); ok {
				out[k] = maskSecrets(sub)
			} else {
				out[k] = v
			}
		}
	}
	return out
}

// maskKeys returns m with the listed keys' values replaced by Mask.
func maskKeys(m map[string]any, keys ...string) map[string]any {
	var out map[string]any
	for _, k := range keys {
		if v, ok := m[k]; ok && v != nil && v != "" {
			if out == nil {
				out = make(map[string]any, len(m))
				for kk, vv := range m {
					out[kk] = vv
				}
			}
			out[k] = Mask
		}
	}
	if out == nil {
		return m
	}
	return out
}

// nodeField is one field of the node representation, with the minor
// version that introduced it.
type nodeField struct {
	name  string
	minor int
	write func(o *objWriter, n *node.Node, minor int)
}

func ifaceField(name, kind string, minor int) nodeField {
	return nodeField{name, minor, func(o *objWriter, n *node.Node, _ int) { o.nstr(name, n.Interfaces.Get(kind)) }}
}

func mapField(name string, minor int, get func(n *node.Node) map[string]any) nodeField {
	return nodeField{name, minor, func(o *objWriter, n *node.Node, _ int) { o.value(name, get(n)) }}
}

// nodeFields is the node representation in Ironic's field order. Links to
// sub-resources (links, ports, states, portgroups, volume) are written by
// writeNode.
var nodeFields = []nodeField{
	{"uuid", 1, func(o *objWriter, n *node.Node, _ int) { o.str("uuid", n.UUID) }},
	{"created_at", 1, func(o *objWriter, n *node.Node, _ int) { o.time("created_at", n.CreatedAt) }},
	{"updated_at", 1, func(o *objWriter, n *node.Node, _ int) { o.time("updated_at", n.UpdatedAt) }},
	{"automated_clean", 47, func(o *objWriter, n *node.Node, _ int) { o.nbool("automated_clean", n.AutomatedClean) }},
	ifaceField("bios_interface", node.KindBios, 40),
	ifaceField("boot_interface", node.KindBoot, 31),
	{"boot_mode", 75, func(o *objWriter, n *node.Node, _ int) { o.nstr("boot_mode", n.BootMode) }},
	mapField("clean_step", 7, func(n *node.Node) map[string]any { return n.CleanStep }),
	{"conductor_group", 46, func(o *objWriter, n *node.Node, _ int) { o.str("conductor_group", n.ConductorGroup) }},
	{"console_enabled", 1, func(o *objWriter, n *node.Node, _ int) { o.boolean("console_enabled", n.ConsoleEnabled) }},
	ifaceField("console_interface", node.KindConsole, 31),
	ifaceField("deploy_interface", node.KindDeploy, 31),
	mapField("deploy_step", 44, func(n *node.Node) map[string]any { return n.DeployStep }),
	{"description", 51, func(o *objWriter, n *node.Node, _ int) { o.nstr("description", n.Description) }},
	{"driver", 1, func(o *objWriter, n *node.Node, _ int) { o.str("driver", n.Driver) }},
	mapField("driver_info", 1, func(n *node.Node) map[string]any { return maskSecrets(n.DriverInfo) }),
	mapField("driver_internal_info", 3, func(n *node.Node) map[string]any {
		return maskKeys(n.DriverInternalInfo, "agent_secret_token")
	}),
	mapField("extra", 1, func(n *node.Node) map[string]any { return n.Extra }),
	{"fault", 42, func(o *objWriter, n *node.Node, _ int) { o.nstr("fault", n.Fault) }},
	{"inspection_finished_at", 6, func(o *objWriter, n *node.Node, _ int) { o.time("inspection_finished_at", n.InspectionFinishedAt) }},
	{"inspection_started_at", 6, func(o *objWriter, n *node.Node, _ int) { o.time("inspection_started_at", n.InspectionStartedAt) }},
	ifaceField("inspect_interface", node.KindInspect, 31),
	mapField("instance_info", 1, func(n *node.Node) map[string]any {
		return maskKeys(maskSecrets(n.InstanceInfo), "configdrive", "image_url")
	}),
	{"instance_uuid", 1, func(o *objWriter, n *node.Node, _ int) { o.nstr("instance_uuid", n.InstanceUUID) }},
	{"last_error", 1, func(o *objWriter, n *node.Node, _ int) { o.nstr("last_error", n.LastError) }},
	{"lessee", 65, func(o *objWriter, n *node.Node, _ int) { o.nstr("lessee", n.Lessee) }},
	{"maintenance", 1, func(o *objWriter, n *node.Node, _ int) { o.boolean("maintenance", n.Maintenance) }},
	{"maintenance_reason", 1, func(o *objWriter, n *node.Node, _ int) { o.nstr("maintenance_reason", n.MaintenanceReason) }},
	ifaceField("management_interface", node.KindManagement, 31),
	{"name", 5, func(o *objWriter, n *node.Node, _ int) { o.nstr("name", n.Name) }},
	mapField("network_data", 66, func(n *node.Node) map[string]any { return n.NetworkData }),
	ifaceField("network_interface", node.KindNetwork, 20),
	{"owner", 50, func(o *objWriter, n *node.Node, _ int) { o.nstr("owner", n.Owner) }},
	ifaceField("power_interface", node.KindPower, 31),
	{"power_state", 1, func(o *objWriter, n *node.Node, _ int) { o.nstr("power_state", string(n.PowerState)) }},
	mapField("properties", 1, func(n *node.Node) map[string]any { return n.Properties }),
	{"protected", 48, func(o *objWriter, n *node.Node, _ int) { o.boolean("protected", n.Protected) }},
	{"protected_reason", 48, func(o *objWriter, n *node.Node, _ int) { o.nstr("protected_reason", n.ProtectedReason) }},
	{"provision_state", 1, func(o *objWriter, n *node.Node, minor int) {
		o.nstr("provision_state", visibleState(n.ProvisionState, minor))
	}},
	{"provision_updated_at", 1, func(o *objWriter, n *node.Node, _ int) { o.time("provision_updated_at", n.ProvisionUpdatedAt) }},
	mapField("raid_config", 12, func(n *node.Node) map[string]any { return n.RaidConfig }),
	ifaceField("raid_interface", node.KindRaid, 31),
	ifaceField("rescue_interface", node.KindRescue, 38),
	{"reservation", 1, func(o *objWriter, n *node.Node, _ int) { o.nstr("reservation", n.Reservation) }},
	{"resource_class", 21, func(o *objWriter, n *node.Node, _ int) { o.nstr("resource_class", n.ResourceClass) }},
	{"retired", 61, func(o *objWriter, n *node.Node, _ int) { o.boolean("retired", n.Retired) }},
	{"retired_reason", 61, func(o *objWriter, n *node.Node, _ int) { o.nstr("retired_reason", n.RetiredReason) }},
	{"secure_boot", 75, func(o *objWriter, n *node.Node, _ int) { o.nbool("secure_boot", n.SecureBoot) }},
	{"shard", 82, func(o *objWriter, n *node.Node, _ int) { o.nstr("shard", n.Shard) }},
	ifaceField("storage_interface", node.KindStorage, 33),
	{"target_power_state", 1, func(o *objWriter, n *node.Node, _ int) { o.nstr("target_power_state", string(n.TargetPowerState)) }},
	{"target_provision_state", 1, func(o *objWriter, n *node.Node, minor int) {
		o.nstr("target_provision_state", visibleState(n.TargetProvisionState, minor))
	}},
	mapField("target_raid_config", 12, func(n *node.Node) map[string]any { return n.TargetRaidConfig }),
	{"traits", 37, func(o *objWriter, n *node.Node, _ int) {
		if n.Traits == nil {
			o.value("traits", []string{})
			return
		}
		o.value("traits", n.Traits)
	}},
	ifaceField("vendor_interface", node.KindVendor, 31),
	{"conductor", 49, func(o *objWriter, n *node.Node, _ int) { o.nstr("conductor", n.Conductor) }},
	{"allocation_uuid", 52, func(o *objWriter, n *node.Node, _ int) { o.key("allocation_uuid"); o.b.WriteString("null") }},
	{"chassis_uuid", 1, func(o *objWriter, n *node.Node, _ int) { o.nstr("chassis_uuid", n.ChassisUUID) }},
}

// visibleState hides "available" before 1.2, where Ironic called it
// NOSTATE (null).
func visibleState(s node.State, minor int) string {
	if minor < 2 && s == node.StateAvailable {
		return ""
	}
	return string(s)
}

// nodeListFields are the fields of a non-detailed node list.
var nodeListFields = []string{"uuid", "instance_uuid", "maintenance", "power_state", "provision_state", "name"}

// nodeFieldMinor returns the minor version that introduced a node field,
// and whether the field exists.
func nodeFieldMinor(name string) (int, bool) {
	for _, f := range nodeFields {
		if f.name == name {
			return f.minor, true
		}
	}
	return 0, false
}

// writeNode renders n. fields selects a subset (nil: all); subresources
// adds the ports/states/portgroups/volume links of a full representation.
func writeNode(b *bytes.Buffer, base string, n *node.Node, minor int, fields map[string]bool, subresources bool) {
	o := newObj(b)
	for _, f := range nodeFields {
		if f.minor > minor || (fields != nil && !fields[f.name]) {
			continue
		}
		f.write(o, n, minor)
	}
	o.value("links", links(base, "nodes", n.UUID))
	if subresources {
		o.value("ports", links(base, "nodes", n.UUID+"/ports"))
		if minor >= 14 {
			o.value("states", links(base, "nodes", n.UUID+"/states"))
		}
		if minor >= 24 {
			o.value("portgroups", links(base, "nodes", n.UUID+"/portgroups"))
		}
		if minor >= 32 {
			o.value("volume", links(base, "nodes", n.UUID+"/volume"))
		}
	}
	o.end()
}

// portField is one field of the port representation.
type portField struct {
	name  string
	minor int
	write func(o *objWriter, p *node.Port)
}

var portFields = []portField{
	{"uuid", 1, func(o *objWriter, p *node.Port) { o.str("uuid", p.UUID) }},
	{"address", 1, func(o *objWriter, p *node.Port) { o.str("address", p.Address) }},
	{"created_at", 1, func(o *objWriter, p *node.Port) { o.time("created_at", p.CreatedAt) }},
	{"updated_at", 1, func(o *objWriter, p *node.Port) { o.time("updated_at", p.UpdatedAt) }},
	{"extra", 1, func(o *objWriter, p *node.Port) { o.value("extra", p.Extra) }},
	{"internal_info", 18, func(o *objWriter, p *node.Port) { o.value("internal_info", p.InternalInfo) }},
	{"is_smartnic", 53, func(o *objWriter, p *node.Port) { o.boolean("is_smartnic", p.IsSmartNIC) }},
	{"local_link_connection", 19, func(o *objWriter, p *node.Port) { o.value("local_link_connection", p.LocalLinkConnection) }},
	{"node_uuid", 1, func(o *objWriter, p *node.Port) { o.str("node_uuid", p.NodeUUID) }},
	{"physical_network", 34, func(o *objWriter, p *node.Port) { o.nstr("physical_network", p.PhysicalNetwork) }},
	{"portgroup_uuid", 24, func(o *objWriter, p *node.Port) { o.key("portgroup_uuid"); o.b.WriteString("null") }},
	{"pxe_enabled", 19, func(o *objWriter, p *node.Port) { o.boolean("pxe_enabled", p.PXEEnabled) }},
}

var portListFields = []string{"uuid", "address"}

func portFieldMinor(name string) (int, bool) {
	for _, f := range portFields {
		if f.name == name {
			return f.minor, true
		}
	}
	return 0, false
}

func writePort(b *bytes.Buffer, base string, p *node.Port, minor int, fields map[string]bool) {
	o := newObj(b)
	for _, f := range portFields {
		if f.minor > minor || (fields != nil && !fields[f.name]) {
			continue
		}
		f.write(o, p)
	}
	o.value("links", links(base, "ports", p.UUID))
	o.end()
}
