// Package iso writes ballast's hybrid live ISO (docs/architecture.md, "ISO").
//
// The ISO 9660 file system (with Rock Ridge) and its El Torito catalog come
// from go-diskfs. Two catalog entries: BIOS no-emulation
// /boot/grub/eltorito.img (grub-mkimage -O i386-pc-eltorito, with a boot
// info table), and EFI /boot/efi.img, a FAT image (this repo's FAT writer)
// holding systemd-boot, its menu, the kernel and the initramfs.
//
// Hybrid choice: an MBR, not a GPT, in the first sector, laid out the way
// grub-mkrescue/xorriso and Debian's installer ISOs do it. Its code is
// GRUB's boot_hybrid.img, patched (like xorriso's grub2_mbr) to load the El
// Torito image's diskboot sector, whose blocklist is patched (like
// grub2_boot_info) to load the rest; partition 1 (active, type 0x00) covers
// the whole ISO and partition 2 (type 0xEF) covers efi.img, so firmware
// booting the image as a USB disk finds an EFI System partition. The end
// is padded by 300 KiB as xorriso does.
//
// Verified: the tests have xorriso recognise both catalog entries, the
// "grub2-mbr" and "grub2-boot-info" patches and efi.img as MBR partition 2,
// and mtools read efi.img through that partition. A manual smoke boot (Debian
// trixie 6.12 kernel, GRUB 2.12 modules with the host's grub-mkimage 2.06,
// systemd-boot 257) reached the initramfs in QEMU as a CD and as a disk,
// under SeaBIOS and OVMF. The EFI entry's sector count is 16-bit; efi.img
// over 32 MiB gets 0, which has not been booted yet.
//
// go-diskfs stamps the volume descriptor with the wall clock and the files
// with their staging copies' times; Write sets the staging times to ModTime
// and rewrites the descriptor's dates, so the same inputs give the same bytes.
package iso

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"github.com/ballast-os/ballast/imagebuild/disk"
	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// Paths and names fixed by docs/architecture.md.
const (
	VolumeID     = "BALLAST_LIVE"
	SystemPath   = "ballast/system.squashfs"
	EFIImagePath = "boot/efi.img"
	EltoritoPath = "boot/grub/eltorito.img"
	GrubCfgPath  = disk.GrubCfgPath
	catalogPath  = "boot/boot.cat"
	efiLabel     = "BALLASTEFI"
	blockSize    = 2048
	padding      = 300 << 10
)

// Layout is what Write puts on the ISO.
type Layout struct {
	// Files holds ballast/vmlinuz, ballast/initrd.img and usually
	// ballast/build.json and user-data; Write adds the system image, the
	// boot loaders and their menus to a copy.
	Files *filetree.Tree
	// System is the path of the system squashfs, stored as
	// /ballast/system.squashfs.
	System string
	// Arch is "amd64" or "arm64".
	Arch string
	// Cmdline is the board's kernel command line; Write appends
	// ballast.live=1.
	Cmdline string
	// SystemdBootEFI is systemd-boot's EFI binary (systemd-boot-efi).
	SystemdBootEFI []byte
	// GrubModulesDir is GRUB's i386-pc module directory; empty means no
	// BIOS boot (EFI only, no hybrid MBR boot code).
	GrubModulesDir string
	// ModTime stamps every file and the volume descriptor.
	ModTime time.Time
	// Seed derives the FAT serial and MBR signature.
	Seed string
}

// LiveArg is what Write appends to the command line.
const LiveArg = "ballast.live=1"

// grubModules: read the CD (biosdisk handles El Torito drives) or, booted
// from a USB stick, the MBR-partitioned disk; find the volume; boot Linux.
var grubModules = []string{
	"biosdisk", "iso9660", "part_msdos", "part_gpt", "normal", "linux", "search",
	"configfile", "echo", "test", "serial", "terminal",
}

const earlyConfig = `search --no-floppy --set=root --label ` + VolumeID + `
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
`

// Write writes the ISO to path atomically (temporary file, then rename).
func Write(ctx context.Context, path string, l Layout) (err error) {
	if l.Files == nil {
		return errors.New("iso: Layout.Files is nil")
	}
	for _, p := range []string{disk.KernelPath, disk.InitrdPath} {
		if e := l.Files.Get(p); e == nil || e.Kind != filetree.File {
			return fmt.Errorf("iso: files lack /%s", p)
		}
	}
	if len(l.SystemdBootEFI) == 0 {
		return errors.New("iso: Layout.SystemdBootEFI is empty")
	}
	sys, err := filetree.NewHostFile(l.System)
	if err != nil {
		return fmt.Errorf("iso: system image: %w", err)
	}
	cmdline := l.Cmdline + " " + LiveArg

	tree := filetree.New(l.ModTime)
	if err := tree.Merge(l.Files); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	if err := tree.Add(filetree.Entry{Path: SystemPath, Kind: filetree.File, Mode: 0o644, Data: sys}); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	var grub *disk.GrubImage
	if l.GrubModulesDir != "" {
		grub, err = disk.MakeGrubImage(ctx, disk.GrubCoreConfig{
			Format:      "i386-pc-eltorito",
			ModulesDir:  l.GrubModulesDir,
			Prefix:      "/boot/grub",
			EarlyConfig: earlyConfig,
			Modules:     grubModules,
			BootImage:   "boot_hybrid.img",
		})
		if err != nil {
			return fmt.Errorf("iso: %w", err)
		}
		cfg, err := disk.GrubConfig("ballast (live)", cmdline)
		if err != nil {
			return fmt.Errorf("iso: %w", err)
		}
		if err := tree.AddFile(GrubCfgPath, 0o644, []byte(cfg)); err != nil {
			return fmt.Errorf("iso: %w", err)
		}
		if err := tree.AddFile(EltoritoPath, 0o644, grub.Core); err != nil {
			return fmt.Errorf("iso: %w", err)
		}
	}

	dir := filepath.Dir(path)
	stage, err := os.MkdirTemp(dir, "."+filepath.Base(path)+".stage-*")
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := stageTree(ctx, stage, tree); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	if err := writeEFIImage(filepath.Join(stage, EFIImagePath), l, cmdline); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	if err := stampTimes(stage, l.ModTime); err != nil {
		return fmt.Errorf("iso: %w", err)
	}

	out, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	tmp := out.Name()
	out.Close()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := finalize(tmp, stage, grub != nil); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	if err := postProcess(tmp, l, grub); err != nil {
		return fmt.Errorf("iso: %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("iso: %w", err)
	}
	return nil
}

func stageTree(ctx context.Context, root string, t *filetree.Tree) error {
	for _, e := range t.Entries() {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := filepath.Join(root, filepath.FromSlash(e.Path))
		switch e.Kind {
		case filetree.Dir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case filetree.File:
			if err := stageFile(p, e); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s is a %s; the ISO holds only files and directories", e.Path, e.Kind)
		}
	}
	return nil
}

func stageFile(p string, e *filetree.Entry) error {
	r, err := e.Data.Open()
	if err != nil {
		return fmt.Errorf("opening %s: %w", e.Path, err)
	}
	defer r.Close()
	w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return fmt.Errorf("copying %s: %w", e.Path, err)
	}
	return w.Close()
}

// stampTimes sets every staged file's times to t, children before their
// directories (writing a child changes its directory's mtime).
func stampTimes(root string, t time.Time) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	if err != nil {
		return err
	}
	slices.Reverse(paths)
	for _, p := range paths {
		if err := os.Chtimes(p, t, t); err != nil {
			return err
		}
	}
	return nil
}

// EFITree is the contents of efi.img: systemd-boot, its menu (one live
// entry), the kernel and the initramfs.
func EFITree(l Layout, cmdline string) (*filetree.Tree, error) {
	t := filetree.New(l.ModTime)
	files, err := disk.SystemdBootFiles(l.Arch, l.SystemdBootEFI, "ballast (live)", cmdline)
	if err != nil {
		return nil, err
	}
	for p, b := range files {
		if err := t.AddFile(p, 0o644, b); err != nil {
			return nil, err
		}
	}
	for _, p := range []string{disk.KernelPath, disk.InitrdPath} {
		e := *l.Files.Get(p)
		if err := t.Add(e); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func writeEFIImage(p string, l Layout, cmdline string) error {
	t, err := EFITree(l, cmdline)
	if err != nil {
		return err
	}
	size := disk.FATSize(t)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	v := disk.FAT{Label: efiLabel, Serial: disk.Serial(l.Seed, "efi.img"), Size: size, ModTime: l.ModTime}
	if err := disk.WriteFAT(f, 0, v, t); err != nil {
		return fmt.Errorf("efi.img: %w", err)
	}
	return f.Close()
}

func finalize(out, stage string, bios bool) error {
	b, err := file.OpenFromPath(out, false)
	if err != nil {
		return err
	}
	defer b.Close()
	fs, err := iso9660.Create(b, 0, 0, blockSize, stage)
	if err != nil {
		return err
	}
	efi := &iso9660.ElToritoEntry{
		Platform:  iso9660.EFI,
		Emulation: iso9660.NoEmulation,
		BootFile:  "/" + EFIImagePath,
	}
	et := &iso9660.ElTorito{BootCatalog: "/" + catalogPath, HideBootCatalog: true}
	if bios {
		e := &iso9660.ElToritoEntry{
			Platform:  iso9660.BIOS,
			Emulation: iso9660.NoEmulation,
			BootFile:  "/" + EltoritoPath,
			BootTable: true,
		}
		// GRUB's cdboot.img reads the rest itself from the boot info
		// table; the BIOS loads the first 2048 bytes (4 sectors).
		e.SetLoadSize(4)
		et.Entries = append(et.Entries, e)
	}
	et.Entries = append(et.Entries, efi)
	err = fs.Finalize(iso9660.FinalizeOptions{
		RockRidge:        true,
		VolumeIdentifier: VolumeID,
		ElTorito:         et,
	})
	if err != nil {
		return fmt.Errorf("writing ISO 9660: %w", err)
	}
	return nil
}

// BootEntry is one El Torito catalog entry as stored.
type BootEntry struct {
	Platform byte   // 0 BIOS, 0xef EFI
	LBA      uint32 // in 2048-byte blocks
	Sectors  uint16 // 512-byte sectors to load
}

// ReadCatalog returns the El Torito entries of the ISO in r.
func ReadCatalog(r io.ReaderAt) ([]BootEntry, error) {
	br := make([]byte, blockSize)
	if _, err := r.ReadAt(br, 17*blockSize); err != nil {
		return nil, fmt.Errorf("reading boot record: %w", err)
	}
	if br[0] != 0 || string(br[1:6]) != "CD001" || string(br[7:30]) != "EL TORITO SPECIFICATION" {
		return nil, errors.New("no El Torito boot record at block 17")
	}
	catLBA := binary.LittleEndian.Uint32(br[0x47:])
	cat := make([]byte, blockSize)
	if _, err := r.ReadAt(cat, int64(catLBA)*blockSize); err != nil {
		return nil, fmt.Errorf("reading boot catalog at block %d: %w", catLBA, err)
	}
	if cat[0] != 1 || cat[0x1e] != 0x55 || cat[0x1f] != 0xaa {
		return nil, fmt.Errorf("boot catalog at block %d: bad validation entry", catLBA)
	}
	var out []BootEntry
	entry := func(b []byte, platform byte) {
		if b[0] == 0x88 {
			out = append(out, BootEntry{Platform: platform, Sectors: binary.LittleEndian.Uint16(b[6:]), LBA: binary.LittleEndian.Uint32(b[8:])})
		}
	}
	entry(cat[32:64], cat[1])
	for off := 64; off+64 <= blockSize; {
		h := cat[off : off+32]
		if h[0] != 0x90 && h[0] != 0x91 {
			break
		}
		n := int(binary.LittleEndian.Uint16(h[2:]))
		for i := 0; i < n && off+32*(i+2) <= blockSize; i++ {
			entry(cat[off+32*(i+1):off+32*(i+2)], h[1])
		}
		off += 32 * (n + 1)
		if h[0] == 0x91 {
			break
		}
	}
	return out, nil
}

// isoDate is ISO 9660's 17-byte volume descriptor date, in UTC.
func isoDate(t time.Time) []byte {
	t = t.UTC()
	s := fmt.Sprintf("%04d%02d%02d%02d%02d%02d%02d", t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0)
	return append([]byte(s), 0)
}

func postProcess(p string, l Layout, grub *disk.GrubImage) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	// Pad the end as xorriso does (300 KiB): BIOS and GRUB read the CD in
	// aligned multi-block chunks, and a file at the very end of the medium
	// (here grub.cfg) otherwise reads back as garbage.
	size := (st.Size()+blockSize-1)/blockSize*blockSize + padding
	if err := f.Truncate(size); err != nil {
		return err
	}

	// Primary volume descriptor dates: creation, modification,
	// expiration (unset) and effective.
	pvd := int64(16 * blockSize)
	d := isoDate(l.ModTime)
	unset := append([]byte("0000000000000000"), 0)
	for off, v := range map[int64][]byte{813: d, 830: d, 847: unset, 864: d, 156 + 18: recordDate(l.ModTime)} {
		if _, err := f.WriteAt(v, pvd+off); err != nil {
			return err
		}
	}
	// go-diskfs pads the descriptor's text fields with NULs; ISO 9660
	// pads with spaces, and label readers (blkid) may keep the NULs.
	for _, fld := range [][2]int64{{8, 32}, {40, 32}, {190, 128}, {318, 128}, {446, 128}, {574, 128}, {702, 37}, {739, 37}, {776, 37}} {
		b := make([]byte, fld[1])
		if _, err := f.ReadAt(b, pvd+fld[0]); err != nil {
			return err
		}
		for i := range b {
			if b[i] == 0 {
				b[i] = ' '
			}
		}
		if _, err := f.WriteAt(b, pvd+fld[0]); err != nil {
			return err
		}
	}

	if err := stampRecords(f, l.ModTime); err != nil {
		return err
	}
	entries, err := ReadCatalog(f)
	if err != nil {
		return err
	}
	var biosE, efiE *BootEntry
	for i := range entries {
		switch entries[i].Platform {
		case 0:
			biosE = &entries[i]
		case 0xef:
			efiE = &entries[i]
		}
	}
	if efiE == nil {
		return errors.New("no EFI entry in the boot catalog")
	}
	efiSize, err := fileSizeAt(f, efiE.LBA)
	if err != nil {
		return err
	}

	mbr := make([]byte, 512)
	if grub != nil {
		if biosE == nil {
			return errors.New("no BIOS entry in the boot catalog")
		}
		img := make([]byte, len(grub.Core))
		at := int64(biosE.LBA) * blockSize
		if _, err := f.ReadAt(img, at); err != nil {
			return fmt.Errorf("reading El Torito image: %w", err)
		}
		if err := disk.PatchHybridMBR(mbr, grub.Boot, img, biosE.LBA); err != nil {
			return err
		}
		// The boot info table (bytes 8..64) holds a checksum of the
		// 32-bit words from byte 64 on; the patch changed them.
		var sum uint32
		for i := 64; i+4 <= len(img); i += 4 {
			sum += binary.LittleEndian.Uint32(img[i:])
		}
		binary.LittleEndian.PutUint32(img[20:], sum)
		if _, err := f.WriteAt(img, at); err != nil {
			return err
		}
	}
	binary.LittleEndian.PutUint32(mbr[440:], disk.Serial(l.Seed, "iso-mbr"))
	mbrPart(mbr[446:462], 0x80, 0x00, 0, uint32(size/512))
	mbrPart(mbr[462:478], 0x00, 0xef, efiE.LBA*4, uint32((efiSize+511)/512))
	mbr[510], mbr[511] = 0x55, 0xaa
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// fileSizeAt is the size of efi.img, read from its FAT boot sector (the
// catalog's sector count is 16-bit and may be 0 for big images).
func fileSizeAt(f io.ReaderAt, lba uint32) (int64, error) {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, int64(lba)*blockSize); err != nil {
		return 0, err
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return 0, fmt.Errorf("efi.img at block %d: no FAT boot sector", lba)
	}
	n := int64(binary.LittleEndian.Uint16(bs[19:]))
	if n == 0 {
		n = int64(binary.LittleEndian.Uint32(bs[32:]))
	}
	return n * int64(binary.LittleEndian.Uint16(bs[11:])), nil
}

// mbrPart writes one MBR partition entry, with CHS fields set to the
// "use LBA" marker that tools write for large disks.
func mbrPart(b []byte, status, typ byte, start, sectors uint32) {
	b[0] = status
	copy(b[1:4], []byte{0xfe, 0xff, 0xff})
	b[4] = typ
	copy(b[5:8], []byte{0xfe, 0xff, 0xff})
	binary.LittleEndian.PutUint32(b[8:], start)
	binary.LittleEndian.PutUint32(b[12:], sectors)
}
