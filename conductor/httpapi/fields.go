package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/ingot-dev/ingot/conductor/node"
)

// settable describes a node field an operator may set: its minor version
// and whether it is accepted on create, on patch, or both.
type settable struct {
	minor         int
	create, patch bool
	nested        bool // a JSON object whose keys may be patched
}

var nodeSettable = map[string]settable{
	"uuid":                 {1, true, false, false},
	"name":                 {5, true, true, false},
	"driver":               {1, true, true, false},
	"driver_info":          {1, true, true, true},
	"instance_info":        {1, true, true, true},
	"properties":           {1, true, true, true},
	"extra":                {1, true, true, true},
	"instance_uuid":        {1, true, true, false},
	"chassis_uuid":         {1, true, true, false},
	"maintenance":          {1, false, true, false},
	"maintenance_reason":   {1, false, true, false},
	"resource_class":       {21, true, true, false},
	"network_interface":    {20, true, true, false},
	"storage_interface":    {33, true, true, false},
	"rescue_interface":     {38, true, true, false},
	"bios_interface":       {40, true, true, false},
	"conductor_group":      {46, true, true, false},
	"automated_clean":      {47, true, true, false},
	"protected":            {48, false, true, false},
	"protected_reason":     {48, false, true, false},
	"owner":                {50, true, true, false},
	"description":          {51, true, true, false},
	"retired":              {61, true, true, false},
	"retired_reason":       {61, true, true, false},
	"lessee":               {65, true, true, false},
	"network_data":         {66, true, true, true},
	"shard":                {82, true, true, false},
	"boot_interface":       {31, true, true, false},
	"console_interface":    {31, true, true, false},
	"deploy_interface":     {31, true, true, false},
	"inspect_interface":    {31, true, true, false},
	"management_interface": {31, true, true, false},
	"power_interface":      {31, true, true, false},
	"raid_interface":       {31, true, true, false},
	"vendor_interface":     {31, true, true, false},
}

// typeError words a type mismatch as Ironic does.
func typeError(field string, raw json.RawMessage, want string) error {
	return badRequest("Invalid input for field/attribute %s. Value: %s. Wrong type. Expected '%s', got '%s'",
		field, string(raw), want, jsonType(raw))
}

func jsonType(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "missing"
	}
	switch t[0] {
	case '"':
		return "str"
	case '{':
		return "dict"
	case '[':
		return "list"
	case 't', 'f':
		return "bool"
	case 'n':
		return "NoneType"
	}
	return "int"
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func decString(field string, raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", typeError(field, raw, "str")
	}
	return s, nil
}

func decDict(field string, raw json.RawMessage) (map[string]any, error) {
	if isNull(raw) {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, typeError(field, raw, "dict")
	}
	return m, nil
}

// parseBool accepts JSON booleans and the strings oslo's bool_from_string
// accepts (the baremetal CLI sends "True" and "False").
func parseBool(v any) (bool, bool) {
	switch t := v.(type) {
	case bool:
		return t, true
	case string:
		switch strings.ToLower(strings.TrimSpace(t)) {
		case "1", "t", "true", "on", "y", "yes":
			return true, true
		case "0", "f", "false", "off", "n", "no":
			return false, true
		}
	}
	return false, false
}

func decBool(field string, raw json.RawMessage) (*bool, error) {
	if isNull(raw) {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, typeError(field, raw, "bool")
	}
	switch v.(type) {
	case bool, string:
	default:
		return nil, typeError(field, raw, "bool")
	}
	b, ok := parseBool(v)
	if !ok {
		return nil, badRequest("Invalid input for field/attribute %s. Value: %s. Unrecognized value '%v', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'",
			field, string(raw), v)
	}
	return &b, nil
}

// setNodeField sets one settable field of n from its JSON value.
func setNodeField(n *node.Node, name string, raw json.RawMessage) error {
	var err error
	str := func(dst *string) { *dst, err = decString(name, raw) }
	dict := func(dst *map[string]any) { *dst, err = decDict(name, raw) }
	flag := func(dst *bool) {
		var b *bool
		if b, err = decBool(name, raw); err == nil {
			*dst = b != nil && *b
		}
	}
	if kind, ok := strings.CutSuffix(name, "_interface"); ok {
		var v string
		if v, err = decString(name, raw); err == nil {
			n.Interfaces.Set(kind, v)
		}
		return err
	}
	switch name {
	case "uuid":
		str(&n.UUID)
	case "name":
		str(&n.Name)
	case "driver":
		str(&n.Driver)
	case "driver_info":
		dict(&n.DriverInfo)
	case "instance_info":
		dict(&n.InstanceInfo)
	case "properties":
		dict(&n.Properties)
	case "extra":
		dict(&n.Extra)
	case "network_data":
		dict(&n.NetworkData)
	case "instance_uuid":
		str(&n.InstanceUUID)
	case "chassis_uuid":
		str(&n.ChassisUUID)
		if err == nil && n.ChassisUUID != "" {
			err = node.Errorf(node.ErrInvalid, "Chassis %s could not be found.", n.ChassisUUID)
		}
	case "maintenance":
		flag(&n.Maintenance)
	case "maintenance_reason":
		str(&n.MaintenanceReason)
	case "resource_class":
		str(&n.ResourceClass)
	case "conductor_group":
		str(&n.ConductorGroup)
	case "automated_clean":
		n.AutomatedClean, err = decBool(name, raw)
	case "protected":
		flag(&n.Protected)
	case "protected_reason":
		str(&n.ProtectedReason)
	case "owner":
		str(&n.Owner)
	case "description":
		str(&n.Description)
	case "retired":
		flag(&n.Retired)
	case "retired_reason":
		str(&n.RetiredReason)
	case "lessee":
		str(&n.Lessee)
	case "shard":
		str(&n.Shard)
	default:
		return badRequest("Unknown attribute for argument node: %s", name)
	}
	return err
}

// nodeCreateFromBody builds a node from a create request, checking each
// field's name, type and version.
func nodeCreateFromBody(body map[string]json.RawMessage, minor int) (*node.Node, error) {
	n := &node.Node{}
	names := make([]string, 0, len(body))
	for k := range body {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s, ok := nodeSettable[k]
		if !ok || !s.create {
			if k == "traits" {
				return nil, badRequest("Cannot specify node traits on node creation. Traits must be set via the node traits API.")
			}
			return nil, badRequest("Additional properties are not allowed ('%s' was unexpected)", k)
		}
		if s.minor > minor {
			return nil, notAcceptable(fmt.Sprintf("Field %q requires API version 1.%d or later; this request used %s.", k, s.minor, versionString(minor)))
		}
		if err := setNodeField(n, k, body[k]); err != nil {
			return nil, err
		}
	}
	if n.Driver == "" {
		return nil, badRequest("Mandatory field missing: driver")
	}
	return n, nil
}

// patchOp is one RFC 6902 operation, as Ironic accepts them.
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
	From  string          `json:"from,omitempty"`
}

// internalAttrs are node fields the conductor owns; patching them is a
// client error, worded as Ironic words it.
var nodeInternal = []string{"uuid", "created_at", "updated_at", "driver_internal_info", "provision_state",
	"target_provision_state", "power_state", "target_power_state", "last_error", "reservation",
	"console_enabled", "provision_updated_at", "inspection_started_at", "inspection_finished_at",
	"clean_step", "deploy_step", "raid_config", "target_raid_config", "conductor", "allocation_uuid",
	"fault", "boot_mode", "secure_boot", "traits", "links", "ports", "states", "portgroups", "volume"}

// decodePatch parses and checks a JSON patch against the fields a
// resource allows: internal fields, unknown root fields, nested paths into
// scalar fields and fields of newer versions are refused before anything
// is applied.
func decodePatch(b []byte, minor int, settableOf func(string) (settable, bool), internal []string) ([]byte, error) {
	var ops []patchOp
	if err := json.Unmarshal(b, &ops); err != nil {
		return nil, badRequest("Malformed JSON patch: %v (a JSON array of operations is required)", jsonErr(err))
	}
	if len(ops) == 0 {
		return nil, badRequest("The JSON patch is empty.")
	}
	for _, op := range ops {
		switch op.Op {
		case "add", "replace":
			if len(op.Value) == 0 {
				return nil, badRequest("'add' and 'replace' operations need a value")
			}
		case "remove":
		default:
			return nil, badRequest("Invalid patch operation %q: only add, replace and remove are supported", op.Op)
		}
		if !strings.HasPrefix(op.Path, "/") || op.Path == "/" {
			return nil, badRequest("Invalid patch path %q", op.Path)
		}
		segs := strings.Split(op.Path[1:], "/")
		top := unescapePointer(segs[0])
		if slices.Contains(internal, top) {
			return nil, badRequest("'/%s' is an internal attribute and can not be updated", top)
		}
		s, ok := settableOf(top)
		if !ok || !s.patch {
			return nil, badRequest("Adding a new attribute (/%s) to the root of the resource is not allowed", top)
		}
		if s.minor > minor {
			return nil, notAcceptable(fmt.Sprintf("Field %q requires API version 1.%d or later; this request used %s.", top, s.minor, versionString(minor)))
		}
		if len(segs) > 1 && !s.nested {
			return nil, badRequest("Invalid patch path %q: %s is not an object", op.Path, top)
		}
		if len(segs) == 1 && op.Op == "add" && s.nested && !isObject(op.Value) && !isNull(op.Value) {
			return nil, typeError(top, op.Value, "dict")
		}
	}
	return json.Marshal(ops)
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

func unescapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}

// applyPatch applies a checked patch to doc (a JSON object) and returns the
// patched object's fields.
func applyPatch(doc map[string]any, patch []byte) (map[string]json.RawMessage, error) {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, badRequest("Invalid JSON patch: %v", err)
	}
	src, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	out, err := p.Apply(src)
	if err != nil {
		return nil, badRequest("Couldn't apply patch: %v", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(out, &fields); err != nil {
		return nil, badRequest("Couldn't apply patch: %v", err)
	}
	return fields, nil
}

// nodePatchDoc is the patchable part of a node as a JSON document, with
// secrets unmasked.
func nodePatchDoc(n *node.Node) map[string]any {
	d := map[string]any{}
	str := func(k, v string) {
		if v == "" {
			d[k] = nil
		} else {
			d[k] = v
		}
	}
	obj := func(k string, m map[string]any) {
		if m == nil {
			m = map[string]any{}
		}
		d[k] = m
	}
	str("name", n.Name)
	str("driver", n.Driver)
	obj("driver_info", n.DriverInfo)
	obj("instance_info", n.InstanceInfo)
	obj("properties", n.Properties)
	obj("extra", n.Extra)
	obj("network_data", n.NetworkData)
	str("instance_uuid", n.InstanceUUID)
	str("chassis_uuid", n.ChassisUUID)
	d["maintenance"] = n.Maintenance
	str("maintenance_reason", n.MaintenanceReason)
	str("resource_class", n.ResourceClass)
	d["conductor_group"] = n.ConductorGroup
	if n.AutomatedClean != nil {
		d["automated_clean"] = *n.AutomatedClean
	} else {
		d["automated_clean"] = nil
	}
	d["protected"] = n.Protected
	str("protected_reason", n.ProtectedReason)
	str("owner", n.Owner)
	str("description", n.Description)
	d["retired"] = n.Retired
	str("retired_reason", n.RetiredReason)
	str("lessee", n.Lessee)
	str("shard", n.Shard)
	for _, k := range node.InterfaceKinds() {
		str(k+"_interface", n.Interfaces.Get(k))
	}
	return d
}

// applyNodePatch applies a checked patch to n.
func applyNodePatch(n *node.Node, patch []byte) error {
	fields, err := applyPatch(nodePatchDoc(n), patch)
	if err != nil {
		return err
	}
	for name := range nodePatchDoc(n) {
		raw, ok := fields[name]
		if !ok {
			raw = json.RawMessage("null")
		}
		if err := setNodeField(n, name, raw); err != nil {
			return err
		}
	}
	if n.Driver == "" {
		return badRequest("driver can not be removed")
	}
	return nil
}

// parseFields reads the fields= query parameter against a resource's
// known fields.
func parseFields(q url.Values, minor int, minorOf func(string) (int, bool)) (map[string]bool, error) {
	raw, ok := q["fields"]
	if !ok {
		return nil, nil
	}
	if minor < 8 {
		return nil, notAcceptable("The fields parameter requires API version 1.8 or later.")
	}
	out := map[string]bool{}
	var bad []string
	for _, v := range raw {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			m, known := minorOf(f)
			switch {
			case !known:
				bad = append(bad, f)
			case m > minor:
				return nil, notAcceptable(fmt.Sprintf("Field %q requires API version 1.%d or later.", f, m))
			}
			out[f] = true
		}
	}
	if len(bad) > 0 {
		return nil, badRequest("Field(s) \"%s\" are not valid", strings.Join(bad, ", "))
	}
	return out, nil
}
