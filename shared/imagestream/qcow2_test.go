package imagestream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/ingot-dev/ingot/shared/api"
)

// qcow2Opts tweak the image buildQcow2 writes.
type qcow2Opts struct {
	version      uint32 // 2 or 3 (default)
	clusterBits  uint32 // default 16
	backing      bool
	crypt        uint32
	incompatible uint64
	compression  byte
}

// buildQcow2 writes disk as a standalone qcow2 image: header, L1 table,
// L2 tables and one data cluster per cluster of disk that is not all
// zeros (the rest stay unallocated and read as zeros). Refcounts are left
// out: readers do not need them.
func buildQcow2(disk []byte, o qcow2Opts) []byte {
	if o.version == 0 {
		o.version = 3
	}
	if o.clusterBits == 0 {
		o.clusterBits = 16
	}
	cs := int64(1) << o.clusterBits
	l2Entries := cs / 8
	nClusters := (int64(len(disk)) + cs - 1) / cs
	nL2 := max(1, (nClusters+l2Entries-1)/l2Entries)
	out := make([]byte, cs*(2+nL2)) // header, L1, L2 tables
	be := binary.BigEndian
	copy(out, "QFI\xfb")
	be.PutUint32(out[4:], o.version)
	if o.backing {
		be.PutUint64(out[8:], 1024)
		be.PutUint32(out[16:], 7)
		copy(out[1024:], "base.qcow2")
	}
	be.PutUint32(out[20:], o.clusterBits)
	be.PutUint64(out[24:], uint64(len(disk)))
	be.PutUint32(out[32:], o.crypt)
	be.PutUint32(out[36:], uint32(nL2))
	be.PutUint64(out[40:], uint64(cs)) // L1 table in cluster 1
	hdrLen := uint32(qcow2HeaderV2Len)
	if o.version == 3 {
		hdrLen = 112
		be.PutUint64(out[72:], o.incompatible)
		be.PutUint32(out[96:], 4) // refcount order
		be.PutUint32(out[100:], hdrLen)
		out[104] = o.compression
	}
	// out[hdrLen:hdrLen+8] stays zero: the end of header extensions.
	for i := range nL2 {
		be.PutUint64(out[cs+8*i:], uint64(cs*(2+i))|1<<63)
	}
	zero := make([]byte, cs)
	for c := range nClusters {
		data := disk[c*cs : min(int64(len(disk)), (c+1)*cs)]
		if bytes.Equal(data, zero[:len(data)]) {
			continue
		}
		off := int64(len(out))
		out = append(out, data...)
		out = append(out, zero[:cs-int64(len(data))]...)
		be.PutUint64(out[cs*(2+c/l2Entries)+8*(c%l2Entries):], uint64(off)|1<<63)
	}
	return out
}

// sparseDisk is a disk image with zero regions a qcow2 leaves
// unallocated, and a size that is not a whole number of clusters.
func sparseDisk() []byte {
	d := makeImage(60, 3<<20+1234)
	clear(d[256<<10 : 1<<20])
	clear(d[2<<20 : 2<<20+128<<10])
	return d
}

// zeroTarget is a memTarget that can zero ranges.
type zeroTarget struct {
	*memTarget
	mu     sync.Mutex
	zeroed []int64
}

func (z *zeroTarget) ZeroRange(off, n int64) error {
	z.mu.Lock()
	z.zeroed = append(z.zeroed, off, n)
	z.mu.Unlock()
	_, err := z.WriteAt(make([]byte, n), off)
	return err
}

// garbageTarget returns a target full of 0xff, standing for a disk's old
// content, which conversion must overwrite entirely.
func garbageTarget(n int) *memTarget {
	m := newMemTarget()
	m.b = bytes.Repeat([]byte{0xff}, n)
	return m
}

func TestStreamConvertsQcow2(t *testing.T) {
	disk := sparseDisk()
	for _, tc := range []struct {
		name   string
		q      []byte
		zeroer bool
		decl   string
		script []fault
	}{
		{name: "v3, zeros written", q: buildQcow2(disk, qcow2Opts{}), decl: "qcow2"},
		{name: "v2, disk_format unset", q: buildQcow2(disk, qcow2Opts{version: 2})},
		{name: "target zeroes ranges itself", q: buildQcow2(disk, qcow2Opts{}), zeroer: true, decl: "qcow2"},
		{name: "4 KiB clusters", q: buildQcow2(disk, qcow2Opts{clusterBits: 12}), decl: "qcow2"},
		{name: "2 MiB clusters", q: buildQcow2(disk, qcow2Opts{clusterBits: 21}), decl: "qcow2"},
		{name: "dirty flag is fine", q: buildQcow2(disk, qcow2Opts{incompatible: 1}), decl: "qcow2"},
		{name: "both passes resume after cuts", q: buildQcow2(disk, qcow2Opts{}), decl: "qcow2",
			script: []fault{{cutAfter: 1 << 20}, {}, {}, {cutAfter: 100_000}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.qcow2", tc.q)
			s.script = tc.script
			srv := startServer(t, s)
			mem := garbageTarget(len(disk))
			var dst Target = mem
			var zt *zeroTarget
			if tc.zeroer {
				zt = &zeroTarget{memTarget: mem}
				dst = zt
			}
			info := imageInfo(srv.URL+"/disk.qcow2", tc.q)
			info.DiskFormat = tc.decl
			opts := testOptions(t)
			var progress []api.Progress
			opts.Progress = func(p api.Progress) { progress = append(progress, p) }
			opts.ProgressInterval = 1
			res, err := Stream(t.Context(), info, dst, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := mem.bytes(); !bytes.Equal(got, disk) {
				t.Fatalf("written %d bytes (sha256 %s), want %d (%s)", len(got), sha256Hex(got), len(disk), sha256Hex(disk))
			}
			if res.DiskFormat != "qcow2" || res.Format != FormatRaw || res.Written != int64(len(disk)) || res.Digest != sha256Hex(tc.q) || mem.syncs != 1 {
				t.Errorf("result %+v, %d syncs", res, mem.syncs)
			}
			reqs := s.reqs()
			if reqs[0].Range != "" {
				t.Errorf("first request %+v, want the whole file", reqs[0])
			}
			for _, r := range reqs[1:] {
				if r.Range == "" || r.IfRange == "" {
					t.Errorf("request %+v without Range and If-Range", r)
				}
			}
			if tc.zeroer && len(zt.zeroed) == 0 {
				t.Error("ZeroRange never called")
			}
			sawConverting := false
			for i, p := range progress {
				if i > 0 && (p.Percent < progress[i-1].Percent || p.Bytes < progress[i-1].Bytes) {
					t.Fatalf("progress went backwards: %+v then %+v", progress[i-1], p)
				}
				if p.Phase == PhaseVerifying && (p.Bytes != 0 || p.Percent > 50) {
					t.Fatalf("verifying progress %+v", p)
				}
				sawConverting = sawConverting || p.Phase == PhaseConverting
			}
			if !sawConverting || progress[len(progress)-1].Phase != PhaseDone {
				t.Errorf("progress phases %+v", progress)
			}
			checkNoLeak(t)
		})
	}
}

func TestStreamQcow2Failures(t *testing.T) {
	disk := sparseDisk()
	good := buildQcow2(disk, qcow2Opts{})
	flipped := bytes.Clone(good)
	flipped[len(flipped)-10] ^= 1
	for _, tc := range []struct {
		name      string
		served    []byte
		info      func(url string) api.ImageInfo
		script    []fault
		noVal     bool
		capacity  int64
		target    error
		wantInMsg string
		permanent bool
	}{
		{name: "checksum mismatch: nothing written", served: flipped, target: ErrChecksum, permanent: true,
			info: func(u string) api.ImageInfo { return imageInfo(u, good) }},
		{name: "backing file", served: buildQcow2(disk, qcow2Opts{backing: true}), target: ErrUnsupportedFormat, wantInMsg: "backing file", permanent: true},
		{name: "encrypted", served: buildQcow2(disk, qcow2Opts{crypt: 1}), target: ErrUnsupportedFormat, wantInMsg: "encrypted", permanent: true},
		{name: "external data file", served: buildQcow2(disk, qcow2Opts{incompatible: 1 << 2}), target: ErrUnsupportedFormat, wantInMsg: "external", permanent: true},
		{name: "zstd clusters", served: buildQcow2(disk, qcow2Opts{incompatible: 1 << 3, compression: 1}), target: ErrUnsupportedFormat, wantInMsg: "only zlib", permanent: true},
		{name: "virtual disk larger than the target", served: good, capacity: 1 << 20, target: ErrTooLarge, permanent: true},
		{name: "no ETag or Last-Modified", served: good, noVal: true, target: ErrUnsupportedFormat, wantInMsg: "ETag or Last-Modified", permanent: true},
		{name: "server ignores Range", served: good, script: []fault{{}, {ignoreRange: true}}, target: ErrUnsupportedFormat, wantInMsg: "ignores Range", permanent: true},
		{name: "file changed between the passes", served: good, script: []fault{{}, {swap: buildQcow2(makeImage(61, 1<<20), qcow2Opts{})}}, target: ErrChanged},
		{name: "zstd-compressed qcow2", served: zstdBytes(t, good, false), target: ErrUnsupportedFormat, wantInMsg: "compressed qcow2", permanent: true},
		{name: "disk_format raw", served: good, target: ErrUnsupportedFormat, wantInMsg: `disk_format is "raw"`, permanent: true,
			info: func(u string) api.ImageInfo { i := imageInfo(u, good); i.DiskFormat = "raw"; return i }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newImageServer()
			s.add("disk.qcow2", tc.served)
			s.script, s.noValid = tc.script, tc.noVal
			srv := startServer(t, s)
			dst := newMemTarget()
			info := imageInfo(srv.URL+"/disk.qcow2", tc.served)
			if tc.info != nil {
				info = tc.info(srv.URL + "/disk.qcow2")
			}
			opts := testOptions(t)
			opts.Capacity = tc.capacity
			_, err := Stream(t.Context(), info, dst, opts)
			msg := mustErr(t, err, tc.target)
			if !strings.Contains(msg, tc.wantInMsg) || IsPermanent(err) != tc.permanent {
				t.Errorf("error %q (permanent %v), want %q (permanent %v)", msg, IsPermanent(err), tc.wantInMsg, tc.permanent)
			}
			if dst.writes != 0 || dst.syncs != 0 {
				t.Errorf("%d writes and %d syncs of a refused image", dst.writes, dst.syncs)
			}
			checkNoLeak(t)
		})
	}
}

func TestParseQcow2Header(t *testing.T) {
	disk := makeImage(62, 1<<20)
	for _, tc := range []struct {
		name    string
		hdr     []byte
		wantErr string
	}{
		{"v3", buildQcow2(disk, qcow2Opts{}), ""},
		{"v2", buildQcow2(disk, qcow2Opts{version: 2}), ""},
		{"v1", buildQcow2(disk, qcow2Opts{version: 1}), "version 1"},
		{"truncated", buildQcow2(disk, qcow2Opts{})[:80], "truncated"},
		{"not qcow2", disk, "not a qcow2 header"},
		{"backing file", buildQcow2(disk, qcow2Opts{backing: true}), "backing file"},
		{"encrypted", buildQcow2(disk, qcow2Opts{crypt: 2}), "encrypted"},
		{"corrupt", buildQcow2(disk, qcow2Opts{incompatible: 2}), "corrupt"},
		{"unknown feature", buildQcow2(disk, qcow2Opts{incompatible: 1 << 9}), "unknown incompatible"},
		{"cluster bits too small", withField(buildQcow2(disk, qcow2Opts{}), 20, 8), "cluster bits 8"},
		{"cluster bits too large", withField(buildQcow2(disk, qcow2Opts{}), 20, 30), "cluster bits 30"},
		{"huge L1 table", withField(buildQcow2(disk, qcow2Opts{}), 36, 1<<30), "L1 table"},
		{"empty L1 table", withField(buildQcow2(disk, qcow2Opts{}), 36, 0), "L1 table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseQcow2Header(tc.hdr[:min(len(tc.hdr), SniffLen)])
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrUnsupportedFormat) {
				t.Errorf("err %v, want ErrUnsupportedFormat with %q", err, tc.wantErr)
			}
		})
	}
}

// withField sets a big-endian uint32 header field.
func withField(b []byte, off int, v uint32) []byte {
	b = bytes.Clone(b)
	binary.BigEndian.PutUint32(b[off:], v)
	return b
}

func FuzzParseQcow2Header(f *testing.F) {
	disk := makeImage(63, 256<<10)
	f.Add(buildQcow2(disk, qcow2Opts{})[:SniffLen])
	f.Add(buildQcow2(disk, qcow2Opts{version: 2})[:SniffLen])
	f.Add(buildQcow2(disk, qcow2Opts{incompatible: 1 << 3})[:SniffLen])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseQcow2Header(b)
		if err != nil {
			if !errors.Is(err, ErrUnsupportedFormat) {
				t.Fatalf("error %v is not ErrUnsupportedFormat", err)
			}
			return
		}
		if h.BackingOffset != 0 || h.CryptMethod != 0 || uint64(h.L1Size)*8 > maxQcow2L1Bytes ||
			h.ClusterBits < minQcow2ClusterBit || h.ClusterBits > maxQcow2ClusterBit {
			t.Fatalf("accepted %+v", h)
		}
	})
}
