package efiboot

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var esp = Partition{Number: 1, StartLBA: 2048, SizeLBA: 16384,
	// 7a3f0d2c-51e4-4a3b-9c1e-2f6b8d0a4e11 on disk
	GUID: [16]byte{0x2c, 0x0d, 0x3f, 0x7a, 0xe4, 0x51, 0x3b, 0x4a, 0x9c, 0x1e, 0x2f, 0x6b, 0x8d, 0x0a, 0x4e, 0x11}}

func TestLoadOptionBytes(t *testing.T) {
	e := Entry{Description: "ingot", Partition: esp, Path: `\EFI\BOOT\BOOTX64.EFI`}
	// Built by hand from the UEFI spec (3.1.3 Load Options, 10.3.5.1 Hard
	// Drive, 10.3.5.4 File Path, 10.3.1 End of Hardware Device Path).
	want := "01000000" + "5e00" + // LOAD_OPTION_ACTIVE, FilePathListLength = 42 + 48 + 4
		"69006e0067006f0074000000" + // "ingot\0" UTF-16LE
		"04012a00" + "01000000" + "0008000000000000" + "0040000000000000" +
		"2c0d3f7ae4513b4a9c1e2f6b8d0a4e11" + "0202" +
		"04043000" + hex.EncodeToString(utf16le(`\EFI\BOOT\BOOTX64.EFI`+"\x00")) +
		"7fff0400"
	if got := hex.EncodeToString(e.LoadOption()); got != want {
		t.Errorf("load option\n got %s\nwant %s", got, want)
	}
	attr, desc, dp, err := ParseLoadOption(e.LoadOption())
	if err != nil || attr != 1 || desc != "ingot" || !bytes.Equal(dp, e.devicePath()) {
		t.Errorf("round trip: %d %q %x %v", attr, desc, dp, err)
	}
}

func TestMBRDevicePath(t *testing.T) {
	e := Entry{Partition: Partition{Number: 1, StartLBA: 2048, SizeLBA: 100, MBR: true, MBRSignature: 0x2b1ac57f}, Path: `\x`}
	hd := e.devicePath()[:42]
	if got := hex.EncodeToString(hd[24:42]); got != "7fc51a2b"+strings.Repeat("00", 12)+"0101" {
		t.Errorf("MBR signature fields %s", got)
	}
}

func utf16le(s string) []byte {
	var b []byte
	for _, r := range s {
		b = binary.LittleEndian.AppendUint16(b, uint16(r))
	}
	return b
}

func readVar(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name+"-"+GlobalVariable))
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint32(b) != 7 {
		t.Errorf("%s attributes %x", name, b[:4])
	}
	return b[4:]
}

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	v := Vars{Dir: dir}
	// Firmware already has Boot0000 (PXE) and Boot0001 (a disk), in that
	// order.
	other := Entry{Description: "UEFI PXEv4", Partition: Partition{Number: 9}, Path: `\x`}
	if err := v.write("Boot0000", other.LoadOption()); err != nil {
		t.Fatal(err)
	}
	if err := v.write("Boot0001", Entry{Description: "disk", Partition: Partition{Number: 2}, Path: `\y`}.LoadOption()); err != nil {
		t.Fatal(err)
	}
	if err := v.write("BootOrder", []byte{0, 0, 1, 0}); err != nil {
		t.Fatal(err)
	}
	e := Entry{Description: "ingot", Partition: esp, Path: DefaultLoader("amd64")}
	n, err := v.Ensure(e)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || !bytes.Equal(readVar(t, dir, "Boot0002"), e.LoadOption()) {
		t.Errorf("new entry %d: %x", n, readVar(t, dir, "Boot0002"))
	}
	if order, _ := v.BootOrder(); !slices.Equal(order, []uint16{2, 0, 1}) {
		t.Errorf("BootOrder %v", order)
	}

	t.Run("a second call reuses the entry and keeps the order", func(t *testing.T) {
		n, err := v.Ensure(Entry{Description: "renamed", Partition: esp, Path: DefaultLoader("amd64")})
		if err != nil || n != 2 {
			t.Fatalf("n %d err %v", n, err)
		}
		if order, _ := v.BootOrder(); !slices.Equal(order, []uint16{2, 0, 1}) {
			t.Errorf("BootOrder %v", order)
		}
		ents, _ := v.Entries()
		if len(ents) != 3 {
			t.Errorf("%d entries", len(ents))
		}
	})
	t.Run("an entry moved back in the order returns to the front", func(t *testing.T) {
		if err := v.write("BootOrder", []byte{0, 0, 1, 0, 2, 0}); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Ensure(e); err != nil {
			t.Fatal(err)
		}
		if got := readVar(t, dir, "BootOrder"); !bytes.Equal(got, []byte{2, 0, 0, 0, 1, 0}) {
			t.Errorf("BootOrder bytes %x", got)
		}
	})
	t.Run("no efivarfs", func(t *testing.T) {
		_, err := Vars{Dir: filepath.Join(dir, "missing")}.Ensure(e)
		if !errors.Is(err, ErrNoEFIVars) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("junk variables are ignored", func(t *testing.T) {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "Boot0000-"+GlobalVariable), []byte{7, 0}, 0o644)
		os.WriteFile(filepath.Join(d, "BootXYZW-"+GlobalVariable), []byte{7, 0, 0, 0}, 0o644)
		os.WriteFile(filepath.Join(d, "Boot0003-"+GlobalVariable), []byte{7, 0, 0, 0, 1}, 0o644)
		n, err := Vars{Dir: d}.Ensure(e)
		if err != nil || n != 1 {
			t.Errorf("n %d err %v", n, err)
		}
	})
}

func TestDefaultLoader(t *testing.T) {
	for arch, want := range map[string]string{"amd64": "BOOTX64.EFI", "arm64": "BOOTAA64.EFI", "riscv64": "BOOTRISCV64.EFI"} {
		if !strings.HasSuffix(DefaultLoader(arch), want) {
			t.Errorf("%s: %s", arch, DefaultLoader(arch))
		}
	}
}

// FuzzParseLoadOption: boot variables come from firmware; decoding never
// panics and never returns a device path longer than the input.
func FuzzParseLoadOption(f *testing.F) {
	f.Add(Entry{Description: "ingot", Partition: esp, Path: `\EFI\BOOT\BOOTX64.EFI`}.LoadOption())
	f.Add([]byte{1, 0, 0, 0, 0xff, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, dp, err := ParseLoadOption(b)
		if err == nil && len(dp) > len(b) {
			t.Fatal("device path longer than input")
		}
	})
}
