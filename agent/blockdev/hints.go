package blockdev

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/ingot-dev/ingot/shared/api"
)

// ErrNoDevice means no disk qualifies as the install target: none matches
// the root device hints, or (without hints) none is large enough. It is
// never answered by falling back to another disk.
var ErrNoDevice = errors.New("no suitable device")

// ErrInvalidHints marks root device hints that cannot be parsed.
var ErrInvalidHints = errors.New("invalid root device hints")

// MinRootSize is IPA's smallest acceptable install disk when no hints are
// given: 4 GiB.
const MinRootSize = 4 << 30

type hintKind int

const (
	kindString hintKind = iota
	kindInt
	kindBool
)

// hintKinds are IPA's valid root device hints and their types.
var hintKinds = map[string]hintKind{
	"size": kindInt, "model": kindString, "wwn": kindString, "serial": kindString, "vendor": kindString,
	"wwn_with_extension": kindString, "wwn_vendor_extension": kindString, "name": kindString,
	"rotational": kindBool, "hctl": kindString, "by_path": kindString, "tran": kindString,
}

// Operators of oslo.utils' specs_matcher, as IPA uses them.
const (
	opOr    = "<or>"
	opAllIn = "<all-in>"
	opIn    = "<in>"
)

// unaryOps in specs_matcher's grammar order ("=" is its odd alias of ">=").
var unaryOps = []string{"==", "=", "!=", "<in>", ">=", "<=", ">", "<", "s==", "s!=", "s<=", "s<", "s>=", "s>"}

// hint is one parsed root device hint.
type hint struct {
	key    string
	kind   hintKind
	op     string
	values []string // normalised (strings) or decimal (numbers)
	b      bool     // kindBool
}

// Hints are parsed root device hints; the zero value (no hints) selects
// IPA's default disk.
type Hints struct {
	hints []hint
	raw   string
}

// Empty reports whether no hint was given.
func (h Hints) Empty() bool { return len(h.hints) == 0 }

// String renders the hints as given, for error messages and logs.
func (h Hints) String() string { return h.raw }

// ParseHints reads root device hints as Ironic stores them (node
// properties.root_device or instance_info.root_device): keys from IPA's
// list; string values with an optional specs_matcher operator ("s== x",
// "<in> x", "<or> a <or> b"), a bare string meaning "s=="; size in GiB as
// an integer or an operator expression ("> 100"); rotational a boolean.
func ParseHints(raw map[string]any) (Hints, error) {
	var h Hints
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var desc []string
	for _, k := range keys {
		v := raw[k]
		desc = append(desc, fmt.Sprintf("%s=%v", k, v))
		kind, ok := hintKinds[k]
		if !ok {
			valid := make([]string, 0, len(hintKinds))
			for n := range hintKinds {
				valid = append(valid, n)
			}
			slices.Sort(valid)
			return Hints{}, fmt.Errorf("%w: unknown hint %q (valid: %s)", ErrInvalidHints, k, strings.Join(valid, ", "))
		}
		hn, err := parseHint(k, kind, v)
		if err != nil {
			return Hints{}, fmt.Errorf("%w: %v", ErrInvalidHints, err)
		}
		h.hints = append(h.hints, hn)
	}
	h.raw = strings.Join(desc, " ")
	return h, nil
}

func parseHint(key string, kind hintKind, v any) (hint, error) {
	h := hint{key: key, kind: kind}
	switch kind {
	case kindBool:
		b, ok := boolValue(v)
		if !ok {
			return h, fmt.Errorf("hint %q is not a Boolean value: %v", key, v)
		}
		h.b = b
		return h, nil
	case kindInt:
		var expr string
		switch n := v.(type) {
		case float64:
			if n != math.Trunc(n) || math.IsInf(n, 0) {
				return h, fmt.Errorf("hint %q is not an integer value: %v", key, v)
			}
			expr = strconv.FormatFloat(n, 'f', -1, 64)
		case int:
			expr = strconv.Itoa(n)
		case int64:
			expr = strconv.FormatInt(n, 10)
		case string:
			expr = n
		default:
			return h, fmt.Errorf("hint %q is not an integer value: %v", key, v)
		}
		op, vals, err := splitExpression(key, expr)
		if err != nil {
			return h, err
		}
		if op == "" {
			op = "=="
		}
		if strings.HasPrefix(op, "s") || op == opIn || op == opAllIn {
			return h, fmt.Errorf("hint %q: operator %q does not apply to numbers", key, op)
		}
		for _, s := range vals {
			n, err := strconv.Atoi(s)
			if err != nil {
				return h, fmt.Errorf("hint %q is not an integer value: %q", key, expr)
			}
			if n <= 0 {
				return h, fmt.Errorf("hint %q should be a positive integer: %q", key, expr)
			}
		}
		h.op, h.values = op, vals
		return h, nil
	}
	s, ok := v.(string)
	if !ok {
		return h, fmt.Errorf("hint %q is not a string value: %v", key, v)
	}
	op, vals, err := splitExpression(key, s)
	if err != nil {
		return h, err
	}
	if op == "" {
		op = "s=="
	}
	if !strings.HasPrefix(op, "s") && op != opIn && op != opAllIn && op != opOr {
		return h, fmt.Errorf("hint %q: numeric operator %q does not apply to strings", key, op)
	}
	for i, x := range vals {
		if key == "name" && !strings.HasPrefix(x, "/") && (op == "s==" || op == "s!=" || op == opOr) {
			x = "/dev/" + x // IPA accepts names without /dev/
		}
		vals[i] = quote(x)
	}
	h.op, h.values = op, vals
	return h, nil
}

// splitExpression separates a hint expression into its operator ("" when
// none) and values, as IPA's _extract_hint_operator_and_values does: the
// expression is trimmed and lower-cased; n-ary operators split it on the
// operator, unary operators take the rest as one value.
func splitExpression(key, expr string) (op string, values []string, err error) {
	e := strings.ToLower(strings.TrimSpace(expr))
	if e == "" {
		return "", nil, fmt.Errorf("hint %q expression is empty", key)
	}
	for _, nary := range []string{opOr, opAllIn} {
		if strings.HasPrefix(e, nary) {
			for _, part := range strings.Split(e, nary) {
				if p := strings.TrimSpace(part); p != "" {
					values = append(values, p)
				}
			}
			if len(values) == 0 {
				return "", nil, fmt.Errorf("hint %q: operator %s without a value", key, nary)
			}
			return nary, values, nil
		}
	}
	for _, u := range unaryOps {
		if rest, ok := strings.CutPrefix(e, u); ok {
			rest = strings.TrimSpace(rest)
			if rest == "" {
				return "", nil, fmt.Errorf("hint %q: operator %s without a value", key, u)
			}
			return u, []string{rest}, nil
		}
	}
	return "", []string{e}, nil
}

// quote is Python's urllib.parse.quote(s, safe="/"), which IPA applies to
// both sides of a string comparison.
func quote(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.-~/", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func boolValue(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "1", "t", "true", "on", "y", "yes":
			return true, true
		case "0", "f", "false", "off", "n", "no":
			return false, true
		}
	case float64:
		if x == 1 || x == 0 {
			return x == 1, true
		}
	}
	return false, false
}

// deviceString returns a disk's attribute for a string hint, or ok=false
// when the disk has no value for it (IPA then skips the disk).
func deviceString(d api.Disk, key string) (string, bool) {
	p := func(s *string) (string, bool) {
		if s == nil || *s == "" {
			return "", false
		}
		return *s, true
	}
	switch key {
	case "name":
		return d.Name, d.Name != ""
	case "model":
		return d.Model, d.Model != ""
	case "wwn":
		return p(d.WWN)
	case "serial":
		return p(d.Serial)
	case "vendor":
		return p(d.Vendor)
	case "wwn_with_extension":
		return p(d.WWNWithExtension)
	case "wwn_vendor_extension":
		return p(d.WWNVendorExtension)
	case "hctl":
		return p(d.HCTL)
	case "by_path":
		return p(d.ByPath)
	case "tran":
		return p(d.Tran)
	}
	return "", false
}

func (h hint) match(d api.Disk) bool {
	switch h.kind {
	case kindBool:
		return d.Rotational == h.b
	case kindInt:
		gib := float64(d.Size) / (1 << 30)
		return matchNumber(gib, h.op, h.values)
	}
	v, ok := deviceString(d, h.key)
	if !ok {
		return false
	}
	return matchString(quote(strings.ToLower(strings.TrimSpace(v))), h.op, h.values)
}

func matchNumber(x float64, op string, vals []string) bool {
	nums := make([]float64, len(vals))
	for i, v := range vals {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return false
		}
		nums[i] = n
	}
	y := nums[0]
	switch op {
	case "==":
		return x == y
	case "=", ">=":
		return x >= y
	case "!=":
		return x != y
	case "<=":
		return x <= y
	case "<":
		return x < y
	case ">":
		return x > y
	case opOr:
		return slices.Contains(nums, x)
	}
	return false
}

func matchString(x, op string, vals []string) bool {
	y := vals[0]
	switch op {
	case "s==":
		return x == y
	case "s!=":
		return x != y
	case "s<":
		return x < y
	case "s<=":
		return x <= y
	case "s>":
		return x > y
	case "s>=":
		return x >= y
	case opIn:
		return strings.Contains(x, y)
	case opAllIn:
		for _, v := range vals {
			if !strings.Contains(x, v) {
				return false
			}
		}
		return true
	case opOr:
		return slices.Contains(vals, x)
	}
	return false
}

// Match reports whether a disk satisfies every hint.
func (h Hints) Match(d api.Disk) bool {
	for _, x := range h.hints {
		if !x.match(d) {
			return false
		}
	}
	return true
}

// Select picks the install disk as IPA's get_os_install_device does: with
// hints, the first disk in listing order that matches all of them; without
// hints, the smallest disk of at least MinRootSize (ties broken by name).
// Disks matching any of skip (properties.skip_block_devices) are never
// candidates. Anything else is ErrNoDevice — Select never falls back.
func Select(disks []api.Disk, hints Hints, skip []Hints) (api.Disk, error) {
	var cands []api.Disk
	for _, d := range disks {
		if d.Size <= 0 || slices.ContainsFunc(skip, func(s Hints) bool { return !s.Empty() && s.Match(d) }) {
			continue
		}
		cands = append(cands, d)
	}
	if !hints.Empty() {
		for _, d := range cands {
			if hints.Match(d) {
				return d, nil
			}
		}
		return api.Disk{}, fmt.Errorf("%w for deployment using these hints: %s (%d disks considered)", ErrNoDevice, hints, len(cands))
	}
	slices.SortStableFunc(cands, func(a, b api.Disk) int {
		if a.Size != b.Size {
			if a.Size < b.Size {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, d := range cands {
		if d.Size >= MinRootSize {
			return d, nil
		}
	}
	return api.Disk{}, fmt.Errorf("%w for deployment: root device hints were not provided and all %d disks found are smaller than %d bytes",
		ErrNoDevice, len(cands), MinRootSize)
}

// HintsFrom returns the root device hints that apply to a deploy, in
// IPA's order of precedence: the image's own (Ingot's conductor sends
// them), then instance_info.root_device, then properties.root_device; and
// the properties.skip_block_devices list.
func HintsFrom(image map[string]any, node map[string]any) (Hints, []Hints, error) {
	pick := func(m map[string]any, path ...string) map[string]any {
		for _, p := range path {
			next, ok := m[p].(map[string]any)
			if !ok {
				return nil
			}
			m = next
		}
		return m
	}
	raw := image
	if len(raw) == 0 {
		raw = pick(node, "instance_info", "root_device")
	}
	if len(raw) == 0 {
		raw = pick(node, "properties", "root_device")
	}
	h, err := ParseHints(raw)
	if err != nil {
		return Hints{}, nil, err
	}
	var skip []Hints
	if props := pick(node, "properties"); props != nil {
		if list, ok := props["skip_block_devices"].([]any); ok {
			for _, item := range list {
				m, ok := item.(map[string]any)
				if !ok {
					return Hints{}, nil, fmt.Errorf("%w: skip_block_devices entries must be objects, got %v", ErrInvalidHints, item)
				}
				sh, err := ParseHints(m)
				if err != nil {
					return Hints{}, nil, fmt.Errorf("skip_block_devices: %w", err)
				}
				skip = append(skip, sh)
			}
		}
	}
	return h, skip, nil
}
