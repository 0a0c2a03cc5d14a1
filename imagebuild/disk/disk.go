// Package disk writes ballast's raw GPT disk image (docs/architecture.md,
// "Disk image"): BALLAST_BOOT (FAT32 EFI System partition with systemd-boot
// and GRUB's BIOS menu), BALLAST_A (the system squashfs), BALLAST_B (empty)
// and BALLAST_DATA (a placeholder the init formats and grows).
//
// The GPT comes from go-diskfs, with disk and partition GUIDs derived from
// Layout.Seed; the FAT volume from this package's own writer (fat.go),
// because go-diskfs stamps FAT entries with the wall clock. For legacy BIOS
// the GRUB core image built by the host's grub-mkimage goes in the gap
// between the GPT entries and the first partition (LBA 64..2047) and
// boot.img into the protective MBR's code area (grub.go).
//
// The image is a sparse file: unwritten regions (the empty slot B, the
// data placeholder) are holes that read as zeros.
package disk

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// Names and sizes fixed by docs/architecture.md.
const (
	BootName  = "BALLAST_BOOT"
	SlotAName = "BALLAST_A"
	SlotBName = "BALLAST_B"
	DataName  = "BALLAST_DATA"
	// BootLabel is the FAT volume label of BALLAST_BOOT (FAT labels hold
	// 11 characters).
	BootLabel = "BALLASTBOOT"

	MiB = int64(1) << 20
	// BootSize is the size of BALLAST_BOOT.
	BootSize = 128 * MiB
	// DefaultSlotSize is the default size of BALLAST_A and BALLAST_B.
	DefaultSlotSize = 512 * MiB
	// DefaultDataSize is the placeholder size of BALLAST_DATA.
	DefaultDataSize = 64 * MiB

	// firstLBA is where the first partition starts (1 MiB alignment).
	firstLBA = 2048
	// coreLBA is where GRUB's core image goes; the GPT entries end at
	// LBA 33, and 64 leaves room for tools that enlarge the entry array.
	coreLBA = 64
)

// Kernel and initramfs paths on the boot partition (and the ISO).
const (
	KernelPath    = "ballast/vmlinuz"
	InitrdPath    = "ballast/initrd.img"
	BuildJSONPath = "ballast/build.json"
	UserDataPath  = "user-data"
	GrubCfgPath   = "boot/grub/grub.cfg"
	LoaderConf    = "loader/loader.conf"
	LoaderEntry   = "loader/entries/ballast-a.conf"
)

// Layout is what Write puts on the disk.
type Layout struct {
	// Boot holds the caller's boot partition files: at least
	// ballast/vmlinuz and ballast/initrd.img, usually also
	// ballast/build.json and user-data. Write adds the boot loaders'
	// files to a copy; Boot is not modified.
	Boot *filetree.Tree
	// SystemA is the path of the system squashfs written raw into
	// BALLAST_A.
	SystemA string
	// SlotSize is the size of BALLAST_A and BALLAST_B; 0 means
	// DefaultSlotSize.
	SlotSize int64
	// DataSize is the size of the BALLAST_DATA placeholder; 0 means
	// DefaultDataSize.
	DataSize int64
	// ImageSize is the size of the image file; 0 means the minimum that
	// holds the partitions. A larger size leaves free space after
	// BALLAST_DATA, which the init grows into.
	ImageSize int64
	// Arch is "amd64" (x86_64) or "arm64" (aarch64).
	Arch string
	// Cmdline is the kernel command line without ballast.slot, which
	// Write appends.
	Cmdline string
	// SystemdBootEFI is systemd-bootx64.efi (or -aa64) from Debian's
	// systemd-boot-efi package. Required: UEFI is the main boot chain.
	SystemdBootEFI []byte
	// GrubModulesDir is GRUB's i386-pc module directory (from Debian's
	// grub-pc-bin); empty means no legacy BIOS boot.
	GrubModulesDir string
	// ModTime stamps every FAT entry (SOURCE_DATE_EPOCH).
	ModTime time.Time
	// Seed derives the disk and partition GUIDs, the MBR disk signature
	// and the FAT serial: pass a hash of the build inputs. Empty means a
	// seed derived from the other fields.
	Seed string
}

// SlotSizeOrDefault returns SlotSize, or DefaultSlotSize when unset.
func (l Layout) SlotSizeOrDefault() int64 {
	if l.SlotSize == 0 {
		return DefaultSlotSize
	}
	return l.SlotSize
}

// DataSizeOrDefault returns DataSize, or DefaultDataSize when unset.
func (l Layout) DataSizeOrDefault() int64 {
	if l.DataSize == 0 {
		return DefaultDataSize
	}
	return l.DataSize
}

func (l Layout) seed() string {
	if l.Seed != "" {
		return l.Seed
	}
	return fmt.Sprintf("%s|%s|%d|%d|%d|%d", l.Arch, l.Cmdline, l.SlotSize, l.DataSize, l.ImageSize, l.ModTime.Unix())
}

// GUID derives a stable UUID for name from seed.
func GUID(seed, name string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte("ballast:"+seed+":"+name)).String()
}

// Serial derives a stable 32-bit number (FAT serial, MBR signature).
func Serial(seed, name string) uint32 {
	h := sha256.Sum256([]byte("ballast:" + seed + ":" + name))
	return binary.LittleEndian.Uint32(h[:4])
}

// EFIBootName is the removable-media loader path for arch.
func EFIBootName(arch string) (string, error) {
	switch arch {
	case "amd64", "x86_64":
		return "EFI/BOOT/BOOTX64.EFI", nil
	case "arm64", "aarch64":
		return "EFI/BOOT/BOOTAA64.EFI", nil
	}
	return "", fmt.Errorf("architecture %q: want amd64 or arm64", arch)
}

// partition is one planned GPT entry.
type partition struct {
	name       string
	typ        gpt.Type
	start, end uint64 // LBAs, inclusive
}

func (p partition) offset() int64 { return int64(p.start) * sectorSize }
func (p partition) size() int64   { return int64(p.end-p.start+1) * sectorSize }

// checkSizes validates the slot and data sizes of either partition scheme
// and that the system image fits its slot.
func checkSizes(systemA string, systemSize, slot, data int64) error {
	for _, s := range []struct {
		what string
		n    int64
	}{{"slot size", slot}, {"data size", data}} {
		if s.n <= 0 || s.n%MiB != 0 {
			return fmt.Errorf("%s %d: want a positive multiple of 1 MiB", s.what, s.n)
		}
	}
	if systemSize > slot {
		return fmt.Errorf("system image %s is %d bytes, larger than the %d-byte slot", systemA, systemSize, slot)
	}
	return nil
}

func plan(l Layout, systemSize int64) ([]partition, int64, error) {
	slot, data := l.SlotSizeOrDefault(), l.DataSizeOrDefault()
	if err := checkSizes(l.SystemA, systemSize, slot, data); err != nil {
		return nil, 0, err
	}
	var parts []partition
	lba := uint64(firstLBA)
	for _, p := range []struct {
		name string
		typ  gpt.Type
		size int64
	}{
		{BootName, gpt.EFISystemPartition, BootSize},
		{SlotAName, gpt.LinuxFilesystem, slot},
		{SlotBName, gpt.LinuxFilesystem, slot},
		{DataName, gpt.LinuxFilesystem, data},
	} {
		n := uint64(p.size / sectorSize)
		parts = append(parts, partition{name: p.name, typ: p.typ, start: lba, end: lba + n - 1})
		lba += n
	}
	// The backup GPT needs 33 sectors; round the end up to 1 MiB.
	minSize := int64(lba)*sectorSize + MiB
	size := l.ImageSize
	switch {
	case size == 0:
		size = minSize
	case size < minSize:
		return nil, 0, fmt.Errorf("image size %d is smaller than the %d bytes the partitions need", size, minSize)
	case size%sectorSize != 0:
		return nil, 0, fmt.Errorf("image size %d is not a multiple of %d", size, sectorSize)
	}
	return parts, size, nil
}

// Write writes the disk image to path atomically: a temporary file next to
// it is renamed over path only when complete, and removed on error.
func Write(ctx context.Context, path string, l Layout) (err error) {
	if l.Boot == nil {
		return errors.New("disk: Layout.Boot is nil")
	}
	for _, p := range []string{KernelPath, InitrdPath} {
		if e := l.Boot.Get(p); e == nil || e.Kind != filetree.File {
			return fmt.Errorf("disk: boot tree lacks /%s", p)
		}
	}
	if len(l.SystemdBootEFI) == 0 {
		return errors.New("disk: Layout.SystemdBootEFI is empty (systemd-boot from systemd-boot-efi is required)")
	}
	st, err := os.Stat(l.SystemA)
	if err != nil {
		return fmt.Errorf("disk: system image: %w", err)
	}
	parts, size, err := plan(l, st.Size())
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	boot, err := BootTree(l)
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	var grubImg *GrubImage
	if l.GrubModulesDir != "" {
		if grubImg, err = diskGrub(ctx, l.GrubModulesDir); err != nil {
			return fmt.Errorf("disk: %w", err)
		}
	}

	f, err := createImageFile(path, size)
	if err != nil {
		return err
	}
	defer f.finish(&err)
	seed := l.seed()
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		ProtectiveMBR:      true,
		GUID:               GUID(seed, "disk"),
	}
	for i, p := range parts {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1,
			Start: p.start,
			End:   p.end,
			Size:  uint64(p.size()),
			Type:  p.typ,
			Name:  p.name,
			GUID:  GUID(seed, p.name),
		})
	}
	if err := table.Write(f, size); err != nil {
		return fmt.Errorf("disk: writing GPT: %w", err)
	}
	// go-diskfs leaves the MBR's first 446 bytes alone: set the disk
	// signature (a zero one makes some tools invent their own).
	var sig [4]byte
	binary.LittleEndian.PutUint32(sig[:], Serial(seed, "mbr"))
	if _, err := f.WriteAt(sig[:], 440); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	bootPart := parts[0]
	vol := FAT{
		Label:         BootLabel,
		Serial:        Serial(seed, "fat"),
		Size:          bootPart.size(),
		HiddenSectors: uint32(bootPart.start),
		ModTime:       l.ModTime,
	}
	if err := WriteFAT(f, bootPart.offset(), vol, boot); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if err := copyFile(ctx, f, parts[1].offset(), l.SystemA); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	// BALLAST_B and BALLAST_DATA: a fresh sparse file already reads as
	// zeros, which is what "first MiB zeroed" asks for, without writing.

	if grubImg != nil {
		if err := installGrub(f.File, grubImg); err != nil {
			return fmt.Errorf("disk: %w", err)
		}
	}
	return nil
}

// diskGrubModules are the modules the disk's core image embeds: enough to
// read the GPT and FAT, find the boot partition and load grub.cfg, which
// then boots Linux with a serial console.
var diskGrubModules = []string{
	"biosdisk", "part_gpt", "fat", "normal", "linux", "search", "configfile",
	"echo", "test", "serial", "terminal",
}

// diskEarlyConfig finds BALLAST_BOOT by its label; if that fails, the
// prefix (hd0,gpt1) still points at it on the boot disk.
const diskEarlyConfig = `search --no-floppy --set=root --label ` + BootLabel + `
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
`

func diskGrub(ctx context.Context, dir string) (*GrubImage, error) {
	img, err := MakeGrubImage(ctx, GrubCoreConfig{
		Format:      "i386-pc",
		ModulesDir:  dir,
		Prefix:      "(hd0,gpt1)/boot/grub",
		EarlyConfig: diskEarlyConfig,
		Modules:     diskGrubModules,
		BootImage:   "boot.img",
	})
	if err != nil {
		return nil, err
	}
	if max := (firstLBA - coreLBA) * sectorSize; len(img.Core) > max {
		return nil, fmt.Errorf("GRUB core image is %d bytes; the gap before the first partition holds %d", len(img.Core), max)
	}
	return img, nil
}

func installGrub(f *os.File, img *GrubImage) error {
	if err := patchDiskboot(img.Core, 0, coreLBA+1); err != nil {
		return err
	}
	if _, err := f.WriteAt(img.Core, coreLBA*sectorSize); err != nil {
		return fmt.Errorf("writing GRUB core image: %w", err)
	}
	mbr := make([]byte, sectorSize)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("reading MBR: %w", err)
	}
	installBootSector(mbr, img.Boot, bootKernelSector, coreLBA, true)
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("writing MBR: %w", err)
	}
	return nil
}

func copyFile(ctx context.Context, w io.WriterAt, off int64, path string) error {
	r, err := os.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	buf := make([]byte, 4*MiB)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if _, err := w.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("copying %s: %w", path, err)
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("reading %s: %w", path, rerr)
		}
	}
}

// BootTree returns a copy of l.Boot with the boot loaders' files added:
// systemd-boot and its menu, and GRUB's menu when BIOS boot is on.
func BootTree(l Layout) (*filetree.Tree, error) {
	t := filetree.New(l.ModTime)
	if err := t.Merge(l.Boot); err != nil {
		return nil, err
	}
	// The root is pinned to this disk by its GUID (init/initramfs.go).
	// gpt: a primary GPT torn by a power cut during the first boot's
	// partition grow (go-diskfs writes the backup first, then the primary)
	// is read from the backup; without it Linux finds no partitions at all.
	cmdline := l.Cmdline + " gpt ballast.disk=" + GUID(l.seed(), "disk") + " ballast.slot=A"
	files, err := SystemdBootFiles(l.Arch, l.SystemdBootEFI, "ballast (slot A)", cmdline)
	if err != nil {
		return nil, err
	}
	if l.GrubModulesDir != "" {
		cfg, err := GrubConfig("ballast (slot A)", cmdline)
		if err != nil {
			return nil, err
		}
		files[GrubCfgPath] = []byte(cfg)
	}
	for _, p := range sortedPaths(files) {
		if err := t.AddFile(p, 0o644, files[p]); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// SystemdBootFiles returns systemd-boot's loader and a one-entry menu that
// boots /ballast/vmlinuz with cmdline, keyed by path.
func SystemdBootFiles(arch string, efi []byte, title, cmdline string) (map[string][]byte, error) {
	name, err := EFIBootName(arch)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(cmdline+title, "\n\r") {
		return nil, fmt.Errorf("kernel command line %q: contains a line break", cmdline)
	}
	return map[string][]byte{
		name:       efi,
		LoaderConf: []byte("default ballast-a.conf\ntimeout 0\nconsole-mode keep\neditor no\n"),
		LoaderEntry: []byte(fmt.Sprintf("title %s\nlinux /%s\ninitrd /%s\noptions %s\n",
			title, KernelPath, InitrdPath, strings.TrimSpace(cmdline))),
	}, nil
}

// GrubConfig returns a grub.cfg with one entry booting /ballast/vmlinuz
// with cmdline on the VGA and first serial consoles.
func GrubConfig(title, cmdline string) (string, error) {
	// GRUB parses the linux line like a shell: refuse what it would
	// reinterpret rather than quote it subtly wrong.
	if strings.ContainsAny(cmdline+title, "\"'\\$;{}\n\r`") {
		return "", fmt.Errorf("kernel command line %q: GRUB would reinterpret one of \" ' \\ $ ; { } `", cmdline)
	}
	return fmt.Sprintf(`serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=0
set default=0
menuentry "%s" {
	linux /%s %s
	initrd /%s
}
`, title, KernelPath, strings.TrimSpace(cmdline), InitrdPath), nil
}

func sortedPaths(m map[string][]byte) []string {
	return slices.Sorted(maps.Keys(m))
}
