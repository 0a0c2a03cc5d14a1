package datapart

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ballast-os/ballast/init/blockdev"
	"github.com/ballast-os/ballast/init/mounts"
)

// Label is the data partition's GPT name and ext4 label.
const Label = "BALLAST_DATA"

// MountPoint is where the data partition is mounted.
const MountPoint = "/persist"

// Persistent is one directory kept on the data partition and bound over
// its place in the running system.
type Persistent struct {
	Name   string // directory under /persist
	Target string
	Mode   os.FileMode
}

// PersistentDirs are the binds of docs/architecture.md, in mount order.
var PersistentDirs = []Persistent{
	{"var-lib-rancher", "/var/lib/rancher", 0o755},
	{"etc-rancher", "/etc/rancher", 0o755},
	{"var-lib-ballast", "/var/lib/ballast", 0o700},
	{"var-log", "/var/log", 0o755},
	{"home", "/home", 0o755},
	{"root", "/root", 0o700},
}

// Runner runs a program and returns its combined output.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// Preparer finds, grows, formats and mounts the data partition. Every
// outside effect goes through a field so tests run without devices.
type Preparer struct {
	SysClassBlock string // /sys/class/block
	DevDir        string // /dev
	Root          string // file-system root the mount points live under ("/")
	Mounter       mounts.Mounter
	Run           Runner
	Log           *slog.Logger
	// ResizePartition tells the kernel the partition's new extent without
	// re-reading the whole table (BLKRRPART fails while the root slot on the
	// same disk is mounted). Defaults to the BLKPG ioctl.
	ResizePartition func(disk *os.File, num int, startBytes, lengthBytes int64) error
	// SectorSize returns the disk's logical sector size; defaults to the
	// BLKSSZGET ioctl, 512 for an image file.
	SectorSize func(disk *os.File) int
}

// Result describes the data partition after Prepare.
type Result struct {
	Device string // "/dev/vda4", "" for tmpfs
	// FirstBoot is true when the file system was created in this boot.
	FirstBoot bool
	Grew      bool
	TmpFS     bool
}

// Prepare finds BALLAST_DATA on rootDisk (any disk when rootDisk is "",
// as on the live ISO), grows it, formats or grows its ext4, mounts it on
// /persist and binds the persistent directories. Without a data partition
// /persist is a tmpfs; that is an error unless live is set.
func (p *Preparer) Prepare(ctx context.Context, rootDisk string, live bool) (Result, error) {
	devs, err := blockdev.Scan(p.SysClassBlock)
	if err != nil {
		return Result{}, err
	}
	var part *blockdev.Device
	for _, d := range blockdev.ByPartName(devs, Label) {
		if rootDisk == "" || d.Disk == rootDisk {
			part = &d
			break
		}
	}
	// An MBR disk (Raspberry Pi) has no partition names: the data
	// partition is number 4 of the root's disk.
	mbr := false
	if part == nil && rootDisk != "" && p.isMBR(rootDisk) {
		if d, ok := blockdev.Partition(devs, rootDisk, MBRPartition); ok {
			part, mbr = &d, true
		}
	}
	if part == nil {
		res := Result{TmpFS: true, FirstBoot: true}
		if err := p.mountTmpfs(); err != nil {
			return res, err
		}
		if live {
			return res, nil
		}
		return res, fmt.Errorf("no %s partition on disk %q (found: %s); data kept on tmpfs, lost at reboot", Label, rootDisk, blockdev.Describe(devs))
	}
	res := Result{Device: part.Path(p.DevDir)}

	if grew, err := p.grow(*part, mbr); err != nil {
		// Not fatal: the node runs on the partition as it is.
		p.Log.Error("growing data partition failed", "device", res.Device, "err", err)
	} else {
		res.Grew = grew
	}

	hasFS, blank, err := inspect(res.Device)
	if err != nil {
		return res, err
	}
	if !hasFS && !blank && formatting(res.Device) {
		// A power cut during the first boot's mkfs: nothing was ever
		// stored here; format again.
		p.Log.Warn("data partition: an earlier format did not finish; formatting again", "device", res.Device)
		blank = true
	}
	if !hasFS && !blank {
		// Something is there, but no ext4 superblock reads back: a
		// flaky card, a bad read, a torn write. Never format it: try
		// e2fsck from a backup superblock, else run without it.
		hasFS = p.repair(ctx, res.Device)
		if !hasFS {
			res.TmpFS = true
			if err := p.mountTmpfs(); err != nil {
				return res, err
			}
			return res, fmt.Errorf("%s holds data but no readable ext4 file system, and e2fsck could not repair it from a backup superblock: NOT formatting it (the node's cluster state, volumes and keys may be on it). Data kept on tmpfs for this boot. Repair it by hand (e2fsck -b 32768 %s), or zero its first MiB to start afresh", res.Device, res.Device)
		}
	}
	switch {
	case hasFS:
		p.fsck(ctx, res.Device)
	default:
		// The builder's placeholder: the first MiB is zeros.
		p.Log.Info("creating file system on data partition", "device", res.Device)
		if err := setFormatting(res.Device, true); err != nil {
			return res, err
		}
		// nodiscard: a discard would erase the marker at the end too.
		if out, err := p.Run(ctx, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-L", Label, res.Device); err != nil {
			return res, fmt.Errorf("mkfs.ext4 %s: %w: %s", res.Device, err, out)
		}
		if err := setFormatting(res.Device, false); err != nil {
			return res, err
		}
		res.FirstBoot = true
	}
	m := mounts.Mount{Source: res.Device, Target: MountPoint, FSType: "ext4", Flags: unix.MS_NOATIME}
	if err := m.Apply(p.Mounter, p.Root); err != nil {
		return res, err
	}
	if !res.FirstBoot {
		if err := p.growFS(ctx, res.Device); err != nil {
			p.Log.Error("growing data file system failed", "device", res.Device, "err", err)
		}
	}
	return res, p.bindAll()
}

// MBRPartition is the data partition's number on an MBR disk
// (docs/architecture.md, "Raspberry Pi SD card").
const MBRPartition = 4

// isMBR reports whether disk carries a DOS partition table, not a GPT.
func (p *Preparer) isMBR(disk string) bool {
	f, err := os.Open(filepath.Join(p.DevDir, disk))
	if err != nil {
		return false
	}
	defer f.Close()
	_, ok := blockdev.MBRSignature(f)
	return ok
}

// placeholderSize is how much of the data partition the image builder
// leaves zeroed: a partition whose first MiB is all zeros was never
// formatted, and is the only kind the init formats.
const placeholderSize = 1 << 20

// inspect reports whether dev has an ext4 superblock, and whether it is
// the builder's untouched placeholder (its first MiB zeros).
func inspect(dev string) (hasFS, blank bool, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, false, fmt.Errorf("opening data partition: %w", err)
	}
	defer f.Close()
	if hasFS, err = blockdev.HasExt4(f); err != nil || hasFS {
		if err != nil {
			err = fmt.Errorf("%s: %w", dev, err)
		}
		return hasFS, false, err
	}
	buf := make([]byte, placeholderSize)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, false, fmt.Errorf("%s: %w", dev, err)
	}
	for _, b := range buf[:n] {
		if b != 0 {
			return false, false, nil
		}
	}
	return false, true, nil
}

// formattingMarker is written 1 MiB before the data partition's end while
// mkfs.ext4 runs: mkfs zeroes the start of the partition first and writes
// the superblocks last, so a power cut in between leaves neither the
// builder's zeros nor an ext4, and only this marker tells that torn format
// from a card that lost its superblock. Not in the last blocks: mke2fs
// zeroes the last 64-128 KiB (old RAID superblocks) before anything else,
// which erased a marker there and made every torn format look like data
// (found by the power-cut test); 1 MiB before the end is a data block of
// the last group, which mkfs leaves alone.
const formattingMarker = "BALLAST_DATA: mkfs.ext4 in progress\n"

const (
	markerBlock   = 4096
	markerFromEnd = 1 << 20
)

func markerOffset(f *os.File) (int64, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if size < placeholderSize+markerFromEnd {
		return 0, fmt.Errorf("%s: %d bytes is too small for a data partition", f.Name(), size)
	}
	return (size - markerFromEnd) &^ (markerBlock - 1), nil
}

// setFormatting writes (on) or clears the marker, synced.
func setFormatting(dev string, on bool) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("data partition: %w", err)
	}
	defer f.Close()
	off, err := markerOffset(f)
	if err != nil {
		return err
	}
	block := make([]byte, markerBlock)
	if on {
		copy(block, formattingMarker)
	}
	if _, err := f.WriteAt(block, off); err != nil {
		return fmt.Errorf("data partition: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("data partition: %w", err)
	}
	return nil
}

// formatting reports whether the marker is there.
func formatting(dev string) bool {
	f, err := os.Open(dev)
	if err != nil {
		return false
	}
	defer f.Close()
	off, err := markerOffset(f)
	if err != nil {
		return false
	}
	b := make([]byte, len(formattingMarker))
	if _, err := f.ReadAt(b, off); err != nil {
		return false
	}
	return string(b) == formattingMarker
}

// fsck runs `e2fsck -p` before the mount, as a boot's fsck pass does.
// What it cannot fix is logged; the kernel's ext4 then decides (errors
// remount it read-only) rather than the node losing its data partition.
func (p *Preparer) fsck(ctx context.Context, dev string) {
	out, err := p.Run(ctx, "e2fsck", "-p", dev)
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() < 4:
		p.Log.Info("e2fsck repaired the data file system", "device", dev, "output", strings.TrimSpace(string(out)))
	default:
		p.Log.Error("e2fsck found errors it could not repair; mounting anyway", "device", dev, "err", err, "output", strings.TrimSpace(string(out)))
	}
}

// repair tries e2fsck with the backup superblocks mkfs.ext4 leaves (4 KiB
// blocks, then 1 KiB) and reports whether an ext4 superblock reads back.
func (p *Preparer) repair(ctx context.Context, dev string) bool {
	for _, sb := range [][2]string{{"32768", "4096"}, {"8193", "1024"}} {
		out, err := p.Run(ctx, "e2fsck", "-y", "-b", sb[0], "-B", sb[1], dev)
		p.Log.Warn("data partition has no readable superblock; e2fsck from a backup", "device", dev, "superblock", sb[0], "err", err, "output", strings.TrimSpace(string(out)))
		if ok, _, err := inspect(dev); err == nil && ok {
			p.Log.Warn("data file system repaired from a backup superblock", "device", dev)
			return true
		}
	}
	return false
}

func (p *Preparer) mountTmpfs() error {
	m := mounts.Mount{Source: "tmpfs", Target: MountPoint, FSType: "tmpfs", Data: "mode=0755", Flags: unix.MS_NOSUID | unix.MS_NODEV}
	if err := m.Apply(p.Mounter, p.Root); err != nil {
		return err
	}
	return p.bindAll()
}

// bindAll creates /persist/<name> and binds it over its target.
func (p *Preparer) bindAll() error {
	var errs []error
	for _, d := range PersistentDirs {
		src := filepath.Join(MountPoint, d.Name)
		if err := os.MkdirAll(filepath.Join(p.Root, src), d.Mode); err != nil {
			errs = append(errs, fmt.Errorf("creating %s: %w", src, err))
			continue
		}
		b := mounts.Bind(filepath.Join(p.Root, src), d.Target)
		b.Mode = d.Mode
		if err := b.Apply(p.Mounter, p.Root); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// grow grows the partition and tells the kernel. It reports whether the
// partition grew.
func (p *Preparer) grow(part blockdev.Device, mbr bool) (bool, error) {
	diskPath := filepath.Join(p.DevDir, part.Disk)
	f, err := os.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("opening disk: %w", err)
	}
	defer f.Close()
	size, err := DiskSize(f)
	if err != nil {
		return false, err
	}
	ss := 512
	if p.SectorSize != nil {
		ss = p.SectorSize(f)
	} else if n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && n > 0 {
		ss = n
	}
	var res GrowResult
	if mbr {
		res, err = GrowMBR(f, size, ss, part.PartNum)
	} else {
		res, err = GrowGPT(f, size, ss, Label)
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", diskPath, err)
	}
	if !res.Grew {
		return false, nil
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("syncing %s: %w", diskPath, err)
	}
	resize := p.ResizePartition
	if resize == nil {
		resize = blkpgResize
	}
	start := int64(res.Start) * int64(ss)
	length := int64(res.NewEnd-res.Start+1) * int64(ss)
	if err := resize(f, res.Index, start, length); err != nil {
		return true, fmt.Errorf("telling the kernel about the grown partition %d of %s: %w", res.Index, diskPath, err)
	}
	p.Log.Info("grew data partition", "disk", diskPath, "partition", res.Index, "size_mib", length>>20)
	return true, nil
}

// growFS runs resize2fs on the mounted file system when it is smaller
// than its partition (including after a crash between growing the
// partition and the file system).
func (p *Preparer) growFS(ctx context.Context, dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	partSize, err := DiskSize(f)
	if err != nil {
		return err
	}
	fsSize, err := ext4Size(f)
	if err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	if partSize-fsSize < 1<<20 {
		return nil
	}
	p.Log.Info("growing data file system", "device", dev, "from_mib", fsSize>>20, "to_mib", partSize>>20)
	if out, err := p.Run(ctx, "resize2fs", dev); err != nil {
		return fmt.Errorf("resize2fs %s: %w: %s", dev, err, out)
	}
	return nil
}

// ext4Size reads the file system size in bytes from the superblock.
func ext4Size(f *os.File) (int64, error) {
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return 0, fmt.Errorf("reading superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 {
		return 0, errors.New("no ext4 superblock")
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[0x4:]))
	const feature64bit = 0x80
	if binary.LittleEndian.Uint32(sb[0x60:])&feature64bit != 0 {
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	logBlock := binary.LittleEndian.Uint32(sb[0x18:])
	if logBlock > 6 {
		return 0, fmt.Errorf("bad block size 2^(10+%d)", logBlock)
	}
	return int64(blocks << (10 + logBlock)), nil
}

// blkpgResize is BLKPG_RESIZE_PARTITION.
func blkpgResize(disk *os.File, num int, start, length int64) error {
	part := unix.BlkpgPartition{Start: start, Length: length, Pno: int32(num)}
	arg := unix.BlkpgIoctlArg{
		Op:      unix.BLKPG_RESIZE_PARTITION,
		Datalen: int32(unsafe.Sizeof(part)),
		Data:    (*byte)(unsafe.Pointer(&part)),
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, disk.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg)))
	if errno != 0 {
		return errno
	}
	return nil
}
