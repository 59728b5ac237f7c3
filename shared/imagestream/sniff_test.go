package imagestream

import (
	"bytes"
	"encoding/binary"
	"flag"
	"os"
	"os/exec"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

var update = flag.Bool("update", false, "regenerate testdata/image.bz2 with the bzip2 program")

// testdata/image.bz2 is bzip2 -9 of makeImage(bzip2Seed, bzip2Size): the
// standard library decodes bzip2 but cannot encode it.
const (
	bzip2Seed = 44
	bzip2Size = 200_000
)

func TestBzip2Testdata(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate testdata/image.bz2")
	}
	cmd := exec.Command("bzip2", "-9", "-c")
	cmd.Stdin = bytes.NewReader(makeImage(bzip2Seed, bzip2Size))
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/image.bz2", out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSniffCompression(t *testing.T) {
	img := makeImage(30, 200_000)
	bz2, err := os.ReadFile("testdata/image.bz2")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want Compression
	}{
		{"raw disk", img, Compression{Format: FormatRaw, Supported: true, ContentSize: -1}},
		{"empty", nil, Compression{Format: FormatRaw, Supported: true, ContentSize: -1}},
		{"gzip", gzipBytes(t, img), Compression{Format: FormatGzip, Supported: true, ContentSize: -1, Window: 32 << 10}},
		{"zstd with size and an 8 MiB window", zstdBytes(t, img, true, zstd.WithWindowSize(8<<20)),
			Compression{Format: FormatZstd, Supported: true, ContentSize: 200_000, Window: 256 << 10}}, // the encoder shrinks the window to the size
		{"zstd streamed with a 4 MiB window", zstdBytes(t, img, false, zstd.WithWindowSize(4<<20)),
			Compression{Format: FormatZstd, Supported: true, ContentSize: -1, Window: 4 << 20}},
		{"zstd skippable frame first", append([]byte{0x5a, 0x2a, 0x4d, 0x18, 0, 0, 0, 0}, zstdBytes(t, img, false)...),
			Compression{Format: FormatZstd, Supported: true, ContentSize: -1}},
		{"xz 1 MiB dictionary", xzDict(t, img, 1<<20), Compression{Format: FormatXZ, Supported: true, ContentSize: -1, Window: 1 << 20}},
		{"xz 3 MiB dictionary", xzDict(t, img, 3<<20), Compression{Format: FormatXZ, Supported: true, ContentSize: -1, Window: 3 << 20}},
		{"xz truncated in the block header", xzDict(t, img, 1<<20)[:14], Compression{Format: FormatXZ, Supported: true, ContentSize: -1}},
		{"bzip2", bz2, Compression{Format: FormatBzip2, Supported: true, ContentSize: -1, Window: 900_000}},
		{"BZh without block magic is raw", []byte("BZh9 hello world"), Compression{Format: FormatRaw, Supported: true, ContentSize: -1}},
		{"lz4", []byte{0x04, 0x22, 0x4d, 0x18, 1, 2, 3}, Compression{Format: "lz4", ContentSize: -1}},
		{"lzip", []byte("LZIP\x01"), Compression{Format: "lzip", ContentSize: -1}},
		{"zip", []byte("PK\x03\x04...."), Compression{Format: "zip", ContentSize: -1}},
		{"truncated zstd header", []byte{0x28, 0xb5, 0x2f, 0xfd}, Compression{Format: FormatZstd, Supported: true, ContentSize: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in[:min(len(tc.in), SniffLen)]
			if diff := cmp.Diff(tc.want, SniffCompression(in)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func xzDict(t *testing.T, b []byte, dict int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{DictCap: dict}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSniffContainer(t *testing.T) {
	vdi := make([]byte, 512)
	copy(vdi, "<<< Oracle VM VirtualBox Disk Image >>>\n")
	binary.LittleEndian.PutUint32(vdi[0x40:], 0xbeda107f)
	iso := make([]byte, 0x8010)
	copy(iso[0x8001:], "CD001")
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"raw disk", makeImage(31, 4096), FormatRaw},
		{"zeros", make([]byte, 4096), FormatRaw},
		{"empty", nil, FormatRaw},
		{"qcow2", []byte("QFI\xfb\x00\x00\x00\x03"), "qcow2"},
		{"qed", []byte("QED\x00\x00"), "qed"},
		{"vmdk sparse", []byte("KDMV\x01\x00\x00\x00"), "vmdk"},
		{"vmdk descriptor", []byte("# Disk DescriptorFile\nversion=1\n"), "vmdk"},
		{"vhdx", []byte("vhdxfile\x00"), "vhdx"},
		{"dynamic vhd", []byte("conectix\x00\x00"), "vhd"},
		{"vdi", vdi, "vdi"},
		{"parallels", []byte("WithoutFreeSpace\x02\x00"), "ploop"},
		{"iso 9660 is written raw", iso, FormatRaw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SniffContainer(tc.in); got != tc.want {
				t.Errorf("SniffContainer = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-99/100", 0, 99, 100, true},
		{"bytes 100-199/*", 100, 199, -1, true},
		{" bytes 5-5/6 ", 5, 5, 6, true},
		{"bytes 5-4/6", 0, 0, 0, false},
		{"bytes 5-6/6", 0, 0, 0, false},
		{"bytes -1-4/6", 0, 0, 0, false},
		{"bytes */100", 0, 0, 0, false},
		{"items 0-1/2", 0, 0, 0, false},
		{"bytes 0-1", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		s, e, tot, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok || s != tc.start || e != tc.end || tot != tc.total {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v", tc.in, s, e, tot, err)
		}
	}
}

func FuzzSniff(f *testing.F) {
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x04, 0x21, 0, 0})
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4, 0xe6, 0xd6, 0xb4, 0x46, 2, 0, 0x21, 1, 0x16, 0, 0, 0})
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Add([]byte("BZh91AY&SY"))
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"))
	f.Add([]byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := SniffCompression(b)
		if c.Format == "" || (c.Format == FormatRaw && (!c.Supported || c.Window != 0)) {
			t.Fatalf("bad result %+v", c)
		}
		if c.Window < 0 || c.ContentSize < -1 {
			t.Fatalf("negative sizes %+v", c)
		}
		if c != SniffCompression(bytes.Clone(b)) {
			t.Fatal("not deterministic")
		}
		// More bytes never change the format.
		if c2 := SniffCompression(append(bytes.Clone(b), 0, 1, 2)); len(b) >= 10 && c2.Format != c.Format {
			t.Fatalf("format changed with more bytes: %s -> %s", c.Format, c2.Format)
		}
		if SniffContainer(b) == "" {
			t.Fatal("empty container format")
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	f.Add("bytes 0-99/100")
	f.Add("bytes 1-2/*")
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, err := parseContentRange(s)
		if err != nil {
			return
		}
		if start < 0 || end < start || (total >= 0 && end >= total) || total < -1 {
			t.Fatalf("accepted an impossible range %d-%d/%d from %q", start, end, total, s)
		}
	})
}
