// Package efiboot registers UEFI boot entries the way efibootmgr does:
// it encodes EFI_LOAD_OPTIONs whose device path names a GPT partition and
// a loader file, writes them as Boot#### variables through efivarfs, and
// puts them first in BootOrder.
//
// Encoding is pure (LoadOption, ParseLoadOption); Vars does the file I/O
// under a directory: /sys/firmware/efi/efivars on a machine, a temporary
// directory in tests. It never deletes an entry and reuses an existing
// one that points at the same partition and file.
package efiboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
)

// GlobalVariable is the vendor GUID of Boot#### and BootOrder.
const GlobalVariable = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// DefaultDir is where efivarfs is mounted.
const DefaultDir = "/sys/firmware/efi/efivars"

// Attributes of boot variables: non-volatile, boot-service and runtime
// access.
const attrs = 0x7

// loadOptionActive marks an entry the firmware may boot.
const loadOptionActive = 0x1

// Partition identifies the EFI system partition in a device path.
type Partition struct {
	Number   uint32
	StartLBA uint64
	SizeLBA  uint64
	// GUID is the partition's unique GUID in on-disk (mixed-endian) order.
	GUID [16]byte
	// MBR selects an MBR partition, identified by the disk's MBR
	// signature, instead of a GPT one.
	MBR          bool
	MBRSignature uint32
}

// Entry is a boot entry: a description and where the loader is.
type Entry struct {
	Description string
	Partition   Partition
	// Path is the loader's path on the ESP, with backslashes
	// (\EFI\BOOT\BOOTX64.EFI).
	Path string
}

// DefaultLoader returns the removable-media loader path firmware uses
// for an architecture (Go's GOARCH).
func DefaultLoader(goarch string) string {
	switch goarch {
	case "arm64":
		return `\EFI\BOOT\BOOTAA64.EFI`
	case "386":
		return `\EFI\BOOT\BOOTIA32.EFI`
	case "riscv64":
		return `\EFI\BOOT\BOOTRISCV64.EFI`
	}
	return `\EFI\BOOT\BOOTX64.EFI`
}

// devicePath encodes HD(partition)/File(path)/End.
func (e Entry) devicePath() []byte {
	var b bytes.Buffer
	// Hard drive media device path: type 4, subtype 1, length 42.
	hd := make([]byte, 42)
	hd[0], hd[1] = 0x04, 0x01
	binary.LittleEndian.PutUint16(hd[2:], 42)
	binary.LittleEndian.PutUint32(hd[4:], e.Partition.Number)
	binary.LittleEndian.PutUint64(hd[8:], e.Partition.StartLBA)
	binary.LittleEndian.PutUint64(hd[16:], e.Partition.SizeLBA)
	if e.Partition.MBR {
		binary.LittleEndian.PutUint32(hd[24:], e.Partition.MBRSignature)
		hd[40] = 0x01 // partition format: MBR
		hd[41] = 0x01 // signature type: 32-bit MBR signature
	} else {
		copy(hd[24:40], e.Partition.GUID[:])
		hd[40] = 0x02 // partition format: GPT
		hd[41] = 0x02 // signature type: GUID
	}
	b.Write(hd)
	// File path media device path: type 4, subtype 4.
	name := utf16z(e.Path)
	fp := make([]byte, 4, 4+len(name))
	fp[0], fp[1] = 0x04, 0x04
	binary.LittleEndian.PutUint16(fp[2:], uint16(4+len(name)))
	b.Write(append(fp, name...))
	// End of hardware device path.
	b.Write([]byte{0x7f, 0xff, 0x04, 0x00})
	return b.Bytes()
}

func utf16z(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u)+2)
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// LoadOption encodes an EFI_LOAD_OPTION for the entry.
func (e Entry) LoadOption() []byte {
	dp := e.devicePath()
	var b bytes.Buffer
	var hdr [6]byte
	binary.LittleEndian.PutUint32(hdr[0:], loadOptionActive)
	binary.LittleEndian.PutUint16(hdr[4:], uint16(len(dp)))
	b.Write(hdr[:])
	b.Write(utf16z(e.Description))
	b.Write(dp)
	return b.Bytes()
}

// ErrMalformed marks a load option that cannot be decoded.
var ErrMalformed = errors.New("malformed EFI load option")

// ParseLoadOption decodes an EFI_LOAD_OPTION: its attributes, description
// and device path bytes.
func ParseLoadOption(b []byte) (attributes uint32, description string, devicePath []byte, err error) {
	if len(b) < 6 {
		return 0, "", nil, ErrMalformed
	}
	attributes = binary.LittleEndian.Uint32(b)
	n := int(binary.LittleEndian.Uint16(b[4:]))
	rest := b[6:]
	var desc []uint16
	for {
		if len(rest) < 2 {
			return 0, "", nil, ErrMalformed
		}
		c := binary.LittleEndian.Uint16(rest)
		rest = rest[2:]
		if c == 0 {
			break
		}
		desc = append(desc, c)
	}
	if n > len(rest) {
		return 0, "", nil, ErrMalformed
	}
	return attributes, string(utf16.Decode(desc)), rest[:n], nil
}

// Vars reads and writes boot variables in an efivarfs directory.
type Vars struct {
	Dir string
}

// ErrNoEFIVars means the directory is not there: the machine did not
// boot through UEFI (or efivarfs is not mounted).
var ErrNoEFIVars = errors.New("efivarfs is not available")

func (v Vars) file(name string) string { return filepath.Join(v.Dir, name+"-"+GlobalVariable) }

// Read returns a variable's data (without the attribute word).
func (v Vars) Read(name string) ([]byte, error) {
	b, err := os.ReadFile(v.file(name))
	if err != nil {
		return nil, err
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("read %s: %w", name, ErrMalformed)
	}
	return b[4:], nil
}

// write stores a variable: attributes and data in one write, as efivarfs
// requires.
func (v Vars) write(name string, data []byte) error {
	p := v.file(name)
	makeMutable(p)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	buf := make([]byte, 4+len(data))
	binary.LittleEndian.PutUint32(buf, attrs)
	copy(buf[4:], data)
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	// On an ordinary file system (tests) a shorter variable must not keep
	// the old tail; efivarfs replaces the variable whole and refuses
	// truncation, which is fine.
	_ = f.Truncate(int64(len(buf)))
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// BootOrder returns the boot order (empty when unset).
func (v Vars) BootOrder() ([]uint16, error) {
	b, err := v.Read("BootOrder")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	order := make([]uint16, len(b)/2)
	for i := range order {
		order[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return order, nil
}

// Entries lists the existing Boot#### variables by number (nil data for
// one that cannot be read).
func (v Vars) Entries() (map[uint16][]byte, error) {
	ents, err := os.ReadDir(v.Dir)
	if err != nil {
		return nil, err
	}
	out := map[uint16][]byte{}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), "-"+GlobalVariable)
		if !ok || len(name) != 8 || !strings.HasPrefix(name, "Boot") {
			continue
		}
		n, err := strconv.ParseUint(name[4:], 16, 16)
		if err != nil {
			continue
		}
		// An unreadable entry still occupies its number.
		b, _ := v.Read(name)
		out[uint16(n)] = b
	}
	return out, nil
}

// Ensure makes e the first boot entry: it reuses a Boot#### whose device
// path is the same, or writes a new one at the lowest free number, then
// moves it to the front of BootOrder. It returns the entry's number.
func (v Vars) Ensure(e Entry) (uint16, error) {
	if fi, err := os.Stat(v.Dir); err != nil || !fi.IsDir() {
		return 0, fmt.Errorf("%w at %s", ErrNoEFIVars, v.Dir)
	}
	existing, err := v.Entries()
	if err != nil {
		return 0, fmt.Errorf("list boot entries: %w", err)
	}
	want := e.devicePath()
	num, found := uint16(0), false
	nums := make([]uint16, 0, len(existing))
	for n := range existing {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	for _, n := range nums {
		if _, _, dp, err := ParseLoadOption(existing[n]); err == nil && bytes.Equal(dp, want) {
			num, found = n, true
			break
		}
	}
	if !found {
		for n := uint16(0); ; n++ {
			if _, used := existing[n]; !used {
				num = n
				break
			}
			if n == 0xffff {
				return 0, errors.New("no free Boot#### number")
			}
		}
		if err := v.write(fmt.Sprintf("Boot%04X", num), e.LoadOption()); err != nil {
			return 0, err
		}
	}
	order, err := v.BootOrder()
	if err != nil {
		return 0, fmt.Errorf("read BootOrder: %w", err)
	}
	order = slices.DeleteFunc(order, func(x uint16) bool { return x == num })
	order = append([]uint16{num}, order...)
	b := make([]byte, 2*len(order))
	for i, x := range order {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	if err := v.write("BootOrder", b); err != nil {
		return 0, err
	}
	return num, nil
}
