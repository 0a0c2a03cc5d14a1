// Package blockdev finds block devices and partitions through sysfs
// (/sys/class/block): the kernel exports a GPT partition's name as PARTNAME
// in its uevent, so no partition table has to be parsed to find the root.
package blockdev

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Device is a disk or a partition as sysfs shows it.
type Device struct {
	Name string // "vda2"
	// Disk is the whole disk a partition belongs to ("vda"); equal to
	// Name for a whole disk.
	Disk     string
	PartNum  int    // 0 for a whole disk
	PartName string // GPT partition name (PARTNAME), "" if none
	// Start and Sectors are in 512-byte units, as sysfs reports them.
	Start   uint64
	Sectors uint64
	Major   int
	Minor   int
}

// Path is the device node under devDir (normally /dev).
func (d Device) Path(devDir string) string { return filepath.Join(devDir, d.Name) }

// Size is the device size in bytes.
func (d Device) Size() uint64 { return d.Sectors * 512 }

// IsPartition reports whether d is a partition.
func (d Device) IsPartition() bool { return d.PartNum > 0 }

// Scan lists the block devices under sysClassBlock (normally
// /sys/class/block), sorted by name.
func Scan(sysClassBlock string) ([]Device, error) {
	ents, err := os.ReadDir(sysClassBlock)
	if err != nil {
		return nil, fmt.Errorf("listing block devices: %w", err)
	}
	var out []Device
	for _, e := range ents {
		dir := filepath.Join(sysClassBlock, e.Name())
		d := Device{Name: e.Name(), Disk: e.Name()}
		if err := readUevent(filepath.Join(dir, "uevent"), &d); err != nil {
			continue // a device that vanished while we looked
		}
		d.Sectors, _ = readUint(filepath.Join(dir, "size"))
		if n, err := readUint(filepath.Join(dir, "partition")); err == nil {
			d.PartNum = int(n)
			d.Start, _ = readUint(filepath.Join(dir, "start"))
			// The partition's sysfs directory sits inside its disk's.
			if real, err := filepath.EvalSymlinks(dir); err == nil {
				d.Disk = filepath.Base(filepath.Dir(real))
			}
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func readUevent(path string, d *Device) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "PARTNAME":
			d.PartName = v
		case "DEVNAME":
			d.Name = v
		case "MAJOR":
			d.Major, _ = strconv.Atoi(v)
		case "MINOR":
			d.Minor, _ = strconv.Atoi(v)
		}
	}
	return nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// ByPartName returns the partitions named name.
func ByPartName(devs []Device, name string) []Device {
	var out []Device
	for _, d := range devs {
		if d.IsPartition() && d.PartName == name {
			out = append(out, d)
		}
	}
	return out
}

// ErrNotFound is returned when a wait ends without the device.
var ErrNotFound = errors.New("device not found")

// Wait polls find every interval until it returns a device or timeout
// passes. Disks appear asynchronously after their driver loads (USB in
// particular), hence the polling.
func Wait(ctx context.Context, timeout, interval time.Duration, find func() (Device, bool, error)) (Device, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		d, ok, err := find()
		if err != nil {
			return Device{}, err
		}
		if ok {
			return d, nil
		}
		select {
		case <-ctx.Done():
			return Device{}, fmt.Errorf("%w after %v", ErrNotFound, timeout)
		case <-time.After(interval):
		}
	}
}

// Describe summarises devices for a fatal console message:
// "vda (10.0 GiB) vda1 [BALLAST_BOOT] vda2 [BALLAST_A] ...".
func Describe(devs []Device) string {
	if len(devs) == 0 {
		return "no block devices"
	}
	var parts []string
	for _, d := range devs {
		s := d.Name
		if d.PartName != "" {
			s += " [" + d.PartName + "]"
		}
		if !d.IsPartition() {
			s += fmt.Sprintf(" (%.1f GiB)", float64(d.Size())/(1<<30))
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// ISOVolumeID reads the ISO 9660 primary volume descriptor at 32 KiB and
// returns its volume ID; ok is false when r is not an ISO 9660 volume.
func ISOVolumeID(r io.ReaderAt) (id string, ok bool) {
	var pvd [2048]byte
	if _, err := r.ReadAt(pvd[:], 16*2048); err != nil {
		return "", false
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return "", false
	}
	return strings.TrimRight(string(pvd[40:72]), " \x00"), true
}

// HasExt4 reports whether r starts with an ext2/3/4 superblock (magic
// 0xEF53 at byte 1024+56).
func HasExt4(r io.ReaderAt) (bool, error) {
	var m [2]byte
	if _, err := r.ReadAt(m[:], 1024+56); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("reading superblock: %w", err)
	}
	return m[0] == 0x53 && m[1] == 0xEF, nil
}

// MBRSignature reads the disk signature of a DOS partition table (bytes
// 440..443 of the first sector); ok is false without the 0x55AA marker or
// when the table is a GPT's protective MBR.
func MBRSignature(r io.ReaderAt) (sig uint32, ok bool) {
	var mbr [512]byte
	if _, err := r.ReadAt(mbr[:], 0); err != nil {
		return 0, false
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return 0, false
	}
	for i := 0; i < 4; i++ {
		if mbr[446+16*i+4] == 0xee {
			return 0, false
		}
	}
	return uint32(mbr[440]) | uint32(mbr[441])<<8 | uint32(mbr[442])<<16 | uint32(mbr[443])<<24, true
}

// GPTDiskGUID reads the disk GUID from a GPT header (LBA 1, for 512- and
// 4096-byte sectors), as the canonical string; ok is false without a GPT.
// Only the signature is checked: the header's CRC is for the partition
// code, and a torn primary still names its disk.
func GPTDiskGUID(r io.ReaderAt) (guid string, ok bool) {
	for _, ss := range []int64{512, 4096} {
		var h [92]byte
		if _, err := r.ReadAt(h[:], ss); err != nil {
			continue
		}
		if string(h[:8]) != "EFI PART" {
			continue
		}
		// Mixed-endian on disk: the first three fields little-endian.
		g := h[56:72]
		var u uuid.UUID
		u[0], u[1], u[2], u[3] = g[3], g[2], g[1], g[0]
		u[4], u[5] = g[5], g[4]
		u[6], u[7] = g[7], g[6]
		copy(u[8:], g[8:16])
		return u.String(), true
	}
	return "", false
}

// DiskByGUID returns the whole disk whose GPT disk GUID is guid (the
// ballast.disk= of a GPT image, which pins the root to the disk the node
// was flashed on: a USB stick with another ballast image cannot take it),
// and how many disks have it (more than one: the same image flashed
// twice; the first is taken).
func DiskByGUID(devs []Device, devDir, guid string) (Device, int) {
	found := disksWhere(devs, devDir, func(r io.ReaderAt) bool {
		got, ok := GPTDiskGUID(r)
		return ok && strings.EqualFold(got, guid)
	})
	if len(found) == 0 {
		return Device{}, 0
	}
	return found[0], len(found)
}

// disksWhere returns the whole disks under devDir whose contents match.
func disksWhere(devs []Device, devDir string, match func(io.ReaderAt) bool) []Device {
	var out []Device
	for _, d := range devs {
		if d.IsPartition() || d.Sectors == 0 || strings.HasPrefix(d.Name, "loop") || strings.HasPrefix(d.Name, "ram") {
			continue
		}
		f, err := os.Open(d.Path(devDir))
		if err != nil {
			continue
		}
		ok := match(f)
		f.Close()
		if ok {
			out = append(out, d)
		}
	}
	return out
}

// ParseDiskGUID parses a GPT ballast.disk= value, a UUID.
func ParseDiskGUID(s string) (string, error) {
	u, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return "", fmt.Errorf("disk GUID %q: want a UUID (8-4-4-4-12 hex digits)", s)
	}
	return u.String(), nil
}

// ParseDiskSignature parses the ballast.disk= value: 8 hex digits, the MBR
// disk signature as `fdisk -l` prints it ("Disk identifier: 0x1234abcd").
func ParseDiskSignature(s string) (uint32, error) {
	s = strings.TrimPrefix(strings.ToLower(s), "0x")
	if len(s) != 8 {
		return 0, fmt.Errorf("disk signature %q: want 8 hex digits", s)
	}
	n, err := strconv.ParseUint(s, 16, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("disk signature %q: want 8 hex digits, not zero", s)
	}
	return uint32(n), nil
}

// DiskBySignature returns the whole disk whose MBR signature is sig,
// opening each disk under devDir.
func DiskBySignature(devs []Device, devDir string, sig uint32) (Device, bool) {
	found := disksWhere(devs, devDir, func(r io.ReaderAt) bool {
		got, ok := MBRSignature(r)
		return ok && got == sig
	})
	if len(found) == 0 {
		return Device{}, false
	}
	return found[0], true
}

// Partition returns partition num of disk.
func Partition(devs []Device, disk string, num int) (Device, bool) {
	for _, d := range devs {
		if d.IsPartition() && d.Disk == disk && d.PartNum == num {
			return d, true
		}
	}
	return Device{}, false
}
