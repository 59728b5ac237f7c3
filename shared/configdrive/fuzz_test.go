package configdrive

import (
	"bytes"
	"testing"
)

func FuzzDecode(f *testing.F) {
	iso := fakeISO("config-2", 40<<10)
	f.Add(b64(gz(iso)))
	f.Add(iso[:33000])
	f.Add([]byte("H4sIAAAAAAAA"))
	f.Add(fakeFAT32("CONFIG-2"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Decode(in)
		if err != nil {
			return
		}
		if len(out) > MaxSize {
			t.Fatalf("decoded %d bytes", len(out))
		}
		if _, ok := FilesystemLabel(bytes.NewReader(out), 0); !ok {
			t.Fatal("Decode accepted an image without a filesystem")
		}
	})
}

// FuzzInstall feeds arbitrary first sectors (MBR, GPT header, entries) to
// Install: it must never panic, and when it succeeds the drive lies
// inside the disk and after the first megabyte's tables.
func FuzzInstall(f *testing.F) {
	seedGPT := gptImage(f, 16*mib, 8*mib, [2]uint64{2048, 4095})
	f.Add(seedGPT.b[:34*512])
	f.Add(mbrImage(8*mib, [2]uint32{2048, 100}).b[:512])
	f.Fuzz(func(t *testing.T, head []byte) {
		d := &memDisk{b: make([]byte, 2*mib)}
		copy(d.b, head)
		img := fakeISO("config-2", 36<<10)
		p, err := Install(d, int64(len(d.b)), 512, img)
		if err != nil {
			return
		}
		if p.Offset < 512 || p.Offset+int64(len(img)) > int64(len(d.b)) || p.Size < int64(len(img)) {
			t.Fatalf("placement %+v on an %d-byte disk", p, len(d.b))
		}
		if !bytes.Equal(d.b[p.Offset:p.Offset+int64(len(img))], img) {
			t.Fatal("drive not written where reported")
		}
	})
}
