package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// MBR partition types written for the Raspberry Pi layout.
const (
	MBRTypeFAT32LBA = 0x0c // the Pi firmware looks for a FAT partition
	MBRTypeLinux    = 0x83
)

// MBR partition numbers of the Raspberry Pi layout (docs/architecture.md):
// the init finds them by number on the disk whose MBR signature the kernel
// command line names (ballast.disk=), as MBR has no partition names.
const (
	MBRBootPart = 1
	MBRSlotA    = 2
	MBRSlotB    = 3
	MBRDataPart = 4
)

// MBRLayout is what WriteMBR puts on the disk: the same four partitions as
// the GPT layout, in an MBR, for boards whose boot ROM reads only MBR.
type MBRLayout struct {
	// Boot holds every file of the boot partition (firmware, device
	// trees, config.txt, cmdline.txt, kernel, initramfs, user-data).
	Boot *filetree.Tree
	// SystemA is the system squashfs written raw into partition 2.
	SystemA string
	// SlotSize, DataSize and ImageSize are as in Layout.
	SlotSize, DataSize, ImageSize int64
	// Signature is the MBR disk signature (bytes 440..443); the boot
	// command line names it as ballast.disk=%08x. Must not be zero.
	Signature uint32
	// ModTime stamps every FAT entry.
	ModTime time.Time
	// Seed derives the FAT serial.
	Seed string
}

// MBRPartition is one planned MBR entry.
type MBRPartition struct {
	Type          byte
	Start, Length uint32 // sectors
}

// PlanMBR returns the four partitions and the image size for l and a
// system image of systemSize bytes.
func PlanMBR(l MBRLayout, systemSize int64) ([4]MBRPartition, int64, error) {
	gl := Layout{SlotSize: l.SlotSize, DataSize: l.DataSize, ImageSize: l.ImageSize, SystemA: l.SystemA}
	slot, data := gl.SlotSizeOrDefault(), gl.DataSizeOrDefault()
	var parts [4]MBRPartition
	if err := checkSizes(l.SystemA, systemSize, slot, data); err != nil {
		return parts, 0, err
	}
	lba := int64(firstLBA)
	for i, p := range []struct {
		typ  byte
		size int64
	}{{MBRTypeFAT32LBA, BootSize}, {MBRTypeLinux, slot}, {MBRTypeLinux, slot}, {MBRTypeLinux, data}} {
		n := p.size / sectorSize
		parts[i] = MBRPartition{Type: p.typ, Start: uint32(lba), Length: uint32(n)}
		lba += n
	}
	minSize := lba * sectorSize
	size := l.ImageSize
	switch {
	case size == 0:
		size = minSize
	case size < minSize:
		return parts, 0, fmt.Errorf("image size %d is smaller than the %d bytes the partitions need", size, minSize)
	case size%sectorSize != 0:
		return parts, 0, fmt.Errorf("image size %d is not a multiple of %d", size, sectorSize)
	}
	if size/sectorSize > 1<<32-1 {
		return parts, 0, fmt.Errorf("image size %d is beyond what an MBR addresses (2 TiB)", size)
	}
	return parts, size, nil
}

// MBRBytes returns the 512-byte master boot record: no boot code (the Pi's
// boot ROM does not run it), the disk signature, four entries, 0x55AA.
// CHS fields hold the "use LBA" marker, as for any disk beyond 8 GiB.
func MBRBytes(sig uint32, parts [4]MBRPartition) []byte {
	mbr := make([]byte, sectorSize)
	binary.LittleEndian.PutUint32(mbr[440:], sig)
	for i, p := range parts {
		if p.Length == 0 {
			continue
		}
		e := mbr[446+16*i : 446+16*(i+1)]
		copy(e[1:4], []byte{0xfe, 0xff, 0xff})
		e[4] = p.Type
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], p.Start)
		binary.LittleEndian.PutUint32(e[12:], p.Length)
	}
	mbr[510], mbr[511] = 0x55, 0xaa
	return mbr
}

// WriteMBR writes the MBR disk image to path atomically (a temporary file
// renamed over path when complete). The image is sparse like Write's.
func WriteMBR(ctx context.Context, path string, l MBRLayout) (err error) {
	if l.Boot == nil {
		return errors.New("disk: MBRLayout.Boot is nil")
	}
	if l.Signature == 0 {
		return errors.New("disk: MBRLayout.Signature is zero (the init finds the disk by it)")
	}
	for _, p := range []string{KernelPath, InitrdPath} {
		if e := l.Boot.Get(p); e == nil || e.Kind != filetree.File {
			return fmt.Errorf("disk: boot tree lacks /%s", p)
		}
	}
	st, err := os.Stat(l.SystemA)
	if err != nil {
		return fmt.Errorf("disk: system image: %w", err)
	}
	parts, size, err := PlanMBR(l, st.Size())
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	f, err := createImageFile(path, size)
	if err != nil {
		return err
	}
	defer f.finish(&err)
	if _, err := f.WriteAt(MBRBytes(l.Signature, parts), 0); err != nil {
		return fmt.Errorf("disk: writing MBR: %w", err)
	}
	boot := parts[MBRBootPart-1]
	vol := FAT{
		Label:         BootLabel,
		Serial:        Serial(l.Seed, "fat"),
		Size:          int64(boot.Length) * sectorSize,
		HiddenSectors: boot.Start,
		ModTime:       l.ModTime,
	}
	if err := WriteFAT(f, int64(boot.Start)*sectorSize, vol, l.Boot); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if err := copyFile(ctx, f, int64(parts[MBRSlotA-1].Start)*sectorSize, l.SystemA); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	return nil
}
