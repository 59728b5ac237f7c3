// Package configdrive puts an OpenStack config drive on a disk that
// already holds a whole-disk image, as ironic-python-agent does: the
// drive (an ISO 9660 or FAT image labelled "config-2", which cloud-init
// and Ignition look for) goes into an existing partition with that label,
// or into a new partition at the end of the disk.
//
// Decode turns what Ironic sends (base64 of a gzipped image, base64 of a
// raw image, or the raw bytes) into the image; Install writes it. Both
// take untrusted input and are fuzzed. The agent uses them on its disk;
// the conductor's iSCSI deploy on the LUN it writes.
package configdrive

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Label is the filesystem label cloud-init looks for.
const Label = "config-2"

// MaxSize bounds a decoded config drive, as IPA does.
const MaxSize = 64 << 20

// PartitionSize is the size of a partition Install creates (IPA's 64 MiB).
const PartitionSize = 64 << 20

// FATPartitionSize is the size of a partition Install creates for a vfat
// rebuild: with 4096-byte sectors FAT32 needs 65525 clusters of at least
// 4 KiB, and go-diskfs writes only FAT12 (512-byte sectors) and FAT32.
const FATPartitionSize = 300 << 20

var (
	// ErrTooLarge means the decoded config drive exceeds MaxSize.
	ErrTooLarge = errors.New("config drive too large")
	// ErrInvalid means the bytes are not a config drive image.
	ErrInvalid = errors.New("invalid config drive")
	// ErrNoTable means the disk has no partition table to add to.
	ErrNoTable = errors.New("no partition table on the disk")
	// ErrNoSpace means the disk has no room left for the config drive.
	ErrNoSpace = errors.New("no space for the config drive")
)

// Decode returns the image inside a config drive as Ironic passes it:
// base64 of a gzipped image (what Ironic builds), base64 of a raw image,
// or the raw image bytes. The result is an ISO 9660 or FAT image of at
// most MaxSize bytes.
func Decode(data []byte) ([]byte, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: it is empty", ErrInvalid)
	}
	raw := data
	if b, err := base64.StdEncoding.DecodeString(string(data)); err == nil {
		raw = b
	}
	if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrInvalid, err)
		}
		out, err := io.ReadAll(io.LimitReader(zr, MaxSize+1))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrInvalid, err)
		}
		raw = out
	}
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: more than %d MiB once decoded", ErrTooLarge, MaxSize>>20)
	}
	if _, ok := imageLabel(bytes.NewReader(raw), 0); !ok {
		return nil, fmt.Errorf("%w: %d bytes that are neither an ISO 9660 nor a FAT image", ErrInvalid, len(raw))
	}
	return raw, nil
}

// FilesystemLabel returns the label of the ISO 9660 or FAT filesystem
// starting at off, and whether one was recognised.
func FilesystemLabel(r io.ReaderAt, off int64) (string, bool) {
	return imageLabel(r, off)
}

// isoLabel returns the volume id of an ISO 9660 image, and whether img is
// one.
func isoLabel(img []byte) (string, bool) {
	return pvdLabel(bytes.NewReader(img), 0)
}

// pvdLabel reads an ISO 9660 primary volume descriptor at off: its
// volume id, and whether there is one.
func pvdLabel(r io.ReaderAt, off int64) (string, bool) {
	pvd := make([]byte, 72)
	if n, _ := r.ReadAt(pvd, off+32768); n != len(pvd) || pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return "", false
	}
	return strings.TrimRight(string(pvd[40:72]), " \x00"), true
}

// imageLabel recognises an ISO 9660 primary volume descriptor or a FAT
// boot sector at off.
func imageLabel(r io.ReaderAt, off int64) (string, bool) {
	if label, ok := pvdLabel(r, off); ok {
		return label, true
	}
	bs := make([]byte, 512)
	if n, _ := r.ReadAt(bs, off); n != len(bs) || bs[510] != 0x55 || bs[511] != 0xaa {
		return "", false
	}
	switch {
	case string(bs[82:87]) == "FAT32":
		return strings.TrimRight(string(bs[71:82]), " \x00"), true
	case string(bs[54:57]) == "FAT" && bs[38] == 0x29:
		return strings.TrimRight(string(bs[43:54]), " \x00"), true
	}
	return "", false
}

// IsConfigDrive reports whether a label is a config drive's, in the case
// cloud-init accepts (IPA's vfat rebuild writes CONFIG-2).
func IsConfigDrive(label string) bool { return strings.EqualFold(label, Label) }

// Device is the disk Install writes: reads and writes at any offset.
type Device interface {
	io.ReaderAt
	io.WriterAt
}

// Placement says where Install put the config drive.
type Placement struct {
	Table     string `json:"table"`     // "gpt" or "msdos"
	Partition int    `json:"partition"` // 1-based partition number
	Offset    int64  `json:"offset"`    // byte offset of the partition
	Size      int64  `json:"size"`      // byte size of the partition
	Created   bool   `json:"created"`   // a new partition was added
	// Filesystem is "vfat" when an ISO drive was rebuilt for a disk with
	// sectors larger than 2048 bytes, else "" (the image as given).
	Filesystem string `json:"filesystem,omitempty"`
}

// Install writes img (a decoded config drive) onto dev, a disk of size
// bytes with sectorSize-byte logical sectors (512 when 0): into the
// partition labelled config-2 if there is one, else into a new partition
// of PartitionSize at the end of the disk (GPT: the table is rewritten
// for the whole disk, which also moves the backup header of an image
// smaller than the disk to the disk's end; MBR: a primary partition below
// 2 TiB). The boot code in the first 440 bytes is kept.
func Install(dev Device, size int64, sectorSize int, img []byte) (Placement, error) {
	if sectorSize == 0 {
		sectorSize = 512
	}
	if sectorSize < 512 || sectorSize > 4096 || sectorSize&(sectorSize-1) != 0 {
		return Placement{}, fmt.Errorf("unsupported sector size %d", sectorSize)
	}
	if len(img) == 0 {
		return Placement{}, fmt.Errorf("%w: it is empty", ErrInvalid)
	}
	if len(img) > MaxSize {
		return Placement{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(img))
	}
	mbr := make([]byte, 512)
	if _, err := dev.ReadAt(mbr, 0); err != nil {
		return Placement{}, fmt.Errorf("reading the MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return Placement{}, fmt.Errorf("%w: the image written has no MBR or GPT, so there is nowhere to add a config drive partition", ErrNoTable)
	}
	var (
		p   Placement
		err error
	)
	// A disk with sectors larger than ISO 9660's blocks gets the drive's
	// files in vfat: read them before anything is written.
	var tree *isoTree
	if _, isISO := isoLabel(img); isISO && sectorSize > 2048 {
		t, err := readISO(img)
		if err != nil {
			return Placement{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		tree = &t
	}
	want, need := int64(PartitionSize), len(img)
	if tree != nil {
		want, need = FATPartitionSize, FATPartitionSize*9/10
	}
	if isProtective(mbr) {
		p, err = installGPT(dev, size, sectorSize, need, want)
	} else {
		p, err = installMBR(dev, size, sectorSize, mbr, need, want)
	}
	if err != nil {
		return p, err
	}
	if int64(need) > p.Size {
		return p, fmt.Errorf("%w: partition %d holds %d bytes, the config drive needs %d", ErrNoSpace, p.Partition, p.Size, need)
	}
	if tree != nil {
		// Linux cannot mount ISO 9660 (2048-byte blocks) from a disk
		// with larger sectors: the files go into vfat instead, as IPA
		// does.
		if err := writeFAT(dev, size, p.Offset, p.Size, sectorSize, *tree); err != nil {
			return p, fmt.Errorf("rebuilding the config drive as vfat on partition %d: %w", p.Partition, err)
		}
		p.Filesystem = "vfat"
	} else if _, err := dev.WriteAt(img, p.Offset); err != nil {
		return p, fmt.Errorf("writing the config drive to partition %d: %w", p.Partition, err)
	}
	if s, ok := dev.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return p, fmt.Errorf("syncing the config drive: %w", err)
		}
	}
	return p, nil
}

// isProtective reports whether an MBR is GPT's protective one.
func isProtective(mbr []byte) bool {
	for i := range 4 {
		if mbr[446+16*i+4] == 0xee {
			return true
		}
	}
	return false
}

// placeAtEnd picks the sectors of a new partition: from the 1 MiB
// boundary at least size bytes before limit (exclusive) up to limit,
// after used (the first free sector). It fails when fewer than need bytes
// fit.
func placeAtEnd(used, limit uint64, sectorSize int, need int, size int64) (start, end uint64, err error) {
	ss := uint64(sectorSize)
	align := uint64(1<<20) / ss
	want := uint64(size) / ss
	if limit <= used {
		return 0, 0, fmt.Errorf("%w: the partitions reach the end of the disk", ErrNoSpace)
	}
	end = limit - 1
	start = used
	if limit-used > want {
		start = (limit - want) / align * align
		if start < used {
			start = used
		}
	} else if start%align != 0 && (start/align+1)*align <= end {
		start = (start/align + 1) * align
	}
	if (end-start+1)*ss < uint64(need) {
		return 0, 0, fmt.Errorf("%w: %d bytes free after the last partition, the config drive is %d", ErrNoSpace, (limit-used)*ss, need)
	}
	return start, end, nil
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// MaxDownload bounds a config drive fetched from a URL: the largest
// drive, base64-encoded, with room for line breaks.
const MaxDownload = MaxSize/3*4 + 1<<20

// Fetch downloads a config drive given as a URL (to Decode next): a
// status of 400 or more is an error, and so is a body over MaxDownload.
func Fetch(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("config drive URL: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download the config drive: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return nil, fmt.Errorf("download the config drive from %s: HTTP %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxDownload+1))
	if err != nil {
		return nil, fmt.Errorf("download the config drive from %s: %w", url, err)
	}
	if len(b) > MaxDownload {
		return nil, fmt.Errorf("%w: the download from %s exceeds %d bytes", ErrTooLarge, url, MaxDownload)
	}
	return b, nil
}

// IsURL reports whether a config drive argument is a URL to Fetch.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}
