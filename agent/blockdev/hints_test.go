package blockdev

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/ingot-dev/ingot/shared/api"
)

func sp(s string) *string { return &s }

const gib = 1 << 30

// testDisks: a virtio disk, a SAS SSD with WWN, an NVMe and a small USB
// stick, in listing order.
var testDisks = []api.Disk{
	{Name: "/dev/vda", Size: 20 * gib, Rotational: true, Serial: sp("VIRTIO-1"), Vendor: sp("0x1af4"),
		ByPath: sp("/dev/disk/by-path/pci-0000:00:04.0")},
	{Name: "/dev/sda", Model: "PERC H730", Size: 480 * gib, Serial: sp("00ab CD"), Vendor: sp("DELL"),
		WWN: sp("0x6d0946606c47d800"), WWNWithExtension: sp("0x6d0946606c47d8002a1b7c0a1e5b2b4f"), HCTL: sp("0:2:0:0"),
		ByPath: sp("/dev/disk/by-path/pci-0000:18:00.0-scsi-0:2:0:0"), Tran: sp("sas")},
	{Name: "/dev/nvme0n1", Model: "SAMSUNG MZ1LB960HAJQ-00007", Size: 894 * gib, Serial: sp("S435NA0M"),
		WWN: sp("eui.0025388b91b3c2a1"), Tran: sp("nvme")},
	{Name: "/dev/sdb", Model: "Cruzer", Size: 2 * gib, Rotational: true, Serial: sp("4C53"), Vendor: sp("SanDisk")},
}

func TestSelect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hints   string // JSON
		skip    string // JSON list
		disks   []api.Disk
		want    string
		wantErr error
	}{
		{name: "no hints picks the smallest disk of at least 4 GiB", hints: `{}`, want: "/dev/vda"},
		{name: "no hints and only small disks fails", hints: `{}`, disks: testDisks[3:], wantErr: ErrNoDevice},
		{name: "ties in size are broken by name", hints: `{}`, want: "/dev/vdb",
			disks: []api.Disk{{Name: "/dev/vdc", Size: 8 * gib}, {Name: "/dev/vdb", Size: 8 * gib}}},
		{name: "bare string is an exact case-insensitive match", hints: `{"serial": "s435na0m"}`, want: "/dev/nvme0n1"},
		{name: "s== with spaces in the value", hints: `{"serial": "s== 00AB CD"}`, want: "/dev/sda"},
		{name: "name without /dev/", hints: `{"name": "sda"}`, want: "/dev/sda"},
		{name: "name with s==", hints: `{"name": "s== /dev/nvme0n1"}`, want: "/dev/nvme0n1"},
		{name: "size as an integer is equality in GiB", hints: `{"size": 480}`, want: "/dev/sda"},
		{name: "size with >=", hints: `{"size": ">= 500"}`, want: "/dev/nvme0n1"},
		{name: "size with <=", hints: `{"size": "<= 20"}`, want: "/dev/vda"},
		{name: "size with !=", hints: `{"size": "!= 20"}`, want: "/dev/sda"},
		{name: "size with the odd = meaning >=", hints: `{"size": "= 21"}`, want: "/dev/sda"},
		{name: "size <or>", hints: `{"size": "<or> 2 <or> 894"}`, want: "/dev/nvme0n1"},
		{name: "model <in> substring", hints: `{"model": "<in> samsung"}`, want: "/dev/nvme0n1"},
		{name: "model <all-in>", hints: `{"model": "<all-in> perc h730"}`, want: "/dev/sda"},
		{name: "vendor <or>", hints: `{"vendor": "<or> sandisk <or> dell"}`, want: "/dev/sda"},
		{name: "s!= skips the first disk", hints: `{"name": "s!= /dev/vda"}`, want: "/dev/sda"},
		{name: "s< string ordering", hints: `{"serial": "s< 1"}`, want: "/dev/sda"},
		{name: "s>= string ordering", hints: `{"serial": "s>= w"}`, wantErr: ErrNoDevice},
		{name: "rotational false", hints: `{"rotational": false}`, want: "/dev/sda"},
		{name: "rotational as a string", hints: `{"rotational": "true", "size": ">= 10"}`, want: "/dev/vda"},
		{name: "wwn", hints: `{"wwn": "0x6d0946606c47d800"}`, want: "/dev/sda"},
		{name: "wwn_with_extension", hints: `{"wwn_with_extension": "0x6D0946606C47D8002A1B7C0A1E5B2B4F"}`, want: "/dev/sda"},
		{name: "hctl", hints: `{"hctl": "0:2:0:0"}`, want: "/dev/sda"},
		{name: "by_path", hints: `{"by_path": "/dev/disk/by-path/pci-0000:00:04.0"}`, want: "/dev/vda"},
		{name: "tran", hints: `{"tran": "nvme"}`, want: "/dev/nvme0n1"},
		{name: "several hints must all match", hints: `{"vendor": "dell", "size": ">= 100", "rotational": false}`, want: "/dev/sda"},
		{name: "a hint that matches nothing fails and never falls back", hints: `{"serial": "nope"}`, wantErr: ErrNoDevice},
		{name: "hints combine to nothing", hints: `{"vendor": "dell", "size": "< 100"}`, wantErr: ErrNoDevice},
		{name: "a disk without the attribute never matches", hints: `{"wwn_vendor_extension": "0x1"}`, wantErr: ErrNoDevice},
		{name: "hints may pick a small disk", hints: `{"vendor": "sandisk"}`, want: "/dev/sdb"},
		{name: "skip_block_devices removes candidates", hints: `{}`, skip: `[{"name": "/dev/vda"}]`, want: "/dev/sda"},
		{name: "skip_block_devices applies with hints too", hints: `{"size": ">= 1"}`, skip: `[{"name": "/dev/vda"}, {"vendor": "dell"}]`, want: "/dev/nvme0n1"},
		{name: "unknown hint", hints: `{"colour": "red"}`, wantErr: ErrInvalidHints},
		{name: "non-integer size", hints: `{"size": "big"}`, wantErr: ErrInvalidHints},
		{name: "fractional size", hints: `{"size": 1.5}`, wantErr: ErrInvalidHints},
		{name: "non-positive size", hints: `{"size": 0}`, wantErr: ErrInvalidHints},
		{name: "string operator on size", hints: `{"size": "s== 20"}`, wantErr: ErrInvalidHints},
		{name: "numeric operator on a string", hints: `{"model": ">= 3"}`, wantErr: ErrInvalidHints},
		{name: "non-string serial", hints: `{"serial": 12}`, wantErr: ErrInvalidHints},
		{name: "non-boolean rotational", hints: `{"rotational": "maybe"}`, wantErr: ErrInvalidHints},
		{name: "empty expression", hints: `{"model": "  "}`, wantErr: ErrInvalidHints},
		{name: "operator without value", hints: `{"model": "<in>"}`, wantErr: ErrInvalidHints},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var raw map[string]any
			if err := json.Unmarshal([]byte(tc.hints), &raw); err != nil {
				t.Fatal(err)
			}
			disks := tc.disks
			if disks == nil {
				disks = testDisks
			}
			var skip []Hints
			if tc.skip != "" {
				props := map[string]any{}
				if err := json.Unmarshal([]byte(`{"properties": {"skip_block_devices": `+tc.skip+`}}`), &props); err != nil {
					t.Fatal(err)
				}
				var err error
				if _, skip, err = HintsFrom(nil, props); err != nil {
					t.Fatal(err)
				}
			}
			h, err := ParseHints(raw)
			if err == nil {
				var d api.Disk
				d, err = Select(disks, h, skip)
				if err == nil && d.Name != tc.want {
					t.Errorf("selected %s, want %s", d.Name, tc.want)
				}
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestHintsFromPrecedence(t *testing.T) {
	node := map[string]any{
		"instance_info": map[string]any{"root_device": map[string]any{"name": "/dev/sda"}},
		"properties":    map[string]any{"root_device": map[string]any{"name": "/dev/vda"}},
	}
	for _, tc := range []struct {
		name  string
		image map[string]any
		node  map[string]any
		want  string
	}{
		{"image hints win", map[string]any{"name": "/dev/nvme0n1"}, node, "/dev/nvme0n1"},
		{"instance_info beats properties", nil, node, "/dev/sda"},
		{"properties alone", nil, map[string]any{"properties": node["properties"]}, "/dev/vda"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _, err := HintsFrom(tc.image, tc.node)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Select(testDisks, h, nil)
			if err != nil || d.Name != tc.want {
				t.Errorf("got %s, %v; want %s", d.Name, err, tc.want)
			}
		})
	}
	t.Run("bad skip list", func(t *testing.T) {
		_, _, err := HintsFrom(nil, map[string]any{"properties": map[string]any{"skip_block_devices": []any{"sda"}}})
		if !errors.Is(err, ErrInvalidHints) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestQuoteMatchesPython(t *testing.T) {
	// urllib.parse.quote("a b/c,d~é", safe="/") == "a%20b/c%2Cd~%C3%A9"
	if got := quote("a b/c,d~é"); got != "a%20b/c%2Cd~%C3%A9" {
		t.Errorf("quote = %q", got)
	}
}

// FuzzParseHints: hints arrive from the node's JSON; parsing never panics,
// and a disk set that Select accepts always holds the selected disk.
func FuzzParseHints(f *testing.F) {
	for _, s := range []string{`{"size": ">= 100"}`, `{"model": "<in> X"}`, `{"vendor": "<or> a <or> b"}`,
		`{"serial": "s== ABC"}`, `{"rotational": "false", "name": "sda"}`, `{"size": "<or> 1 <or> 2"}`,
		`{"model": "<all-in> a b"}`, `{"hctl": "s!= 0:0:0:0"}`, `{"wwn": ""}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var raw map[string]any
		if json.Unmarshal([]byte(s), &raw) != nil {
			return
		}
		h, err := ParseHints(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalidHints) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		d, err := Select(testDisks, h, nil)
		if err != nil {
			if !errors.Is(err, ErrNoDevice) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if !h.Empty() && !h.Match(d) {
			t.Fatalf("selected %s which does not match %s", d.Name, h)
		}
	})
}
