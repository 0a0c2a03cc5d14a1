package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GRUB for legacy BIOS. The images themselves come from grub-mkimage (the
// Debian package grub-common) and a module directory (grub-pc-bin's
// /usr/lib/grub/i386-pc); this file only places and patches them. The
// offsets below come from GRUB's grub-core/boot/i386/pc/boot.S and
// diskboot.S (include/grub/i386/pc/boot.h), the same ones grub-install's
// util/setup.c and xorriso's grub2_mbr/grub2_boot_info options patch.
const (
	// boot.img: the 64-bit LBA of the first sector of core.img.
	bootKernelSector = 0x5c
	// boot.img: a "jmp 3f" that skips the check forcing %dl to 0x80;
	// grub-setup replaces it with two NOPs for hard disks so that a BIOS
	// passing a bogus drive number still boots.
	bootDriveCheck = 0x66
	// boot_hybrid.img keeps its kernel sector at 0x1b0 instead, because
	// the start of the sector may hold an ISO/FAT boot block.
	hybridKernelSector = 0x1b0
	// diskboot.img (the first sector of core.img): the first blocklist
	// entry {start uint64, len uint16, segment uint16} sits at its end.
	diskbootListStart = 0x200 - 12
	// mbrCodeSize is what boot code may use of the MBR: 440 bytes, then
	// the disk signature and the partition table.
	mbrCodeSize = 440
)

// ErrNoGrubMkimage says the host lacks grub-mkimage.
var ErrNoGrubMkimage = errors.New("grub-mkimage not found on the host: apt-get install grub-common grub-pc-bin")

// HostGrubModules is where Debian's grub-pc-bin installs the i386-pc modules.
const HostGrubModules = "/usr/lib/grub/i386-pc"

// GrubImage is a GRUB core image built for one module directory, with the
// boot sector images from that same directory.
type GrubImage struct {
	Core []byte
	// Boot is boot.img (for a disk) or boot_hybrid.img (for an ISO's MBR).
	Boot []byte
	// ModulesDir is the directory actually used (the fallback to the
	// host's modules is recorded here).
	ModulesDir string
}

// GrubCoreConfig is what MakeGrubImage needs.
type GrubCoreConfig struct {
	// Format is "i386-pc" (disk) or "i386-pc-eltorito" (ISO).
	Format string
	// ModulesDir is the i386-pc module directory; when the host's
	// grub-mkimage cannot use it (a different GRUB version), the host's
	// own modules are tried.
	ModulesDir string
	// Prefix is GRUB's $prefix, e.g. "(hd0,gpt1)/boot/grub".
	Prefix string
	// EarlyConfig is embedded in the core image.
	EarlyConfig string
	Modules     []string
	// BootImage is the boot sector image to read: "boot.img" or
	// "boot_hybrid.img".
	BootImage string
}

// MakeGrubImage runs grub-mkimage.
func MakeGrubImage(ctx context.Context, c GrubCoreConfig) (*GrubImage, error) {
	mkimage, err := exec.LookPath("grub-mkimage")
	if err != nil {
		return nil, ErrNoGrubMkimage
	}
	dirs := []string{c.ModulesDir}
	if filepath.Clean(c.ModulesDir) != HostGrubModules {
		dirs = append(dirs, HostGrubModules)
	}
	var errs []error
	for _, dir := range dirs {
		img, err := makeGrubImage(ctx, mkimage, dir, c)
		if err == nil {
			return img, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func makeGrubImage(ctx context.Context, mkimage, dir string, c GrubCoreConfig) (*GrubImage, error) {
	boot, err := os.ReadFile(filepath.Join(dir, c.BootImage))
	if err != nil {
		return nil, fmt.Errorf("GRUB modules %s: %w", dir, err)
	}
	if len(boot) != 512 {
		return nil, fmt.Errorf("GRUB modules %s: %s is %d bytes, want 512", dir, c.BootImage, len(boot))
	}
	tmp, err := os.MkdirTemp("", "ballast-grub-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cfg := filepath.Join(tmp, "early.cfg")
	if err := os.WriteFile(cfg, []byte(c.EarlyConfig), 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(tmp, "core.img")
	args := []string{"-O", c.Format, "-d", dir, "-p", c.Prefix, "-c", cfg, "-o", out}
	args = append(args, c.Modules...)
	cmd := exec.CommandContext(ctx, mkimage, args...)
	// grub-mkimage reads no locale-dependent input, but keep its
	// messages stable for the error below.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("grub-mkimage -O %s -d %s: %w: %s", c.Format, dir, err, strings.TrimSpace(string(msg)))
	}
	core, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	return &GrubImage{Core: core, Boot: boot, ModulesDir: dir}, nil
}

// patchDiskboot points the first blocklist of a core image's diskboot
// sector (at diskbootOff in core) at the sectors following it, which start
// at LBA restLBA, and checks the length grub-mkimage filled in.
func patchDiskboot(core []byte, diskbootOff int, restLBA uint64) error {
	if len(core) < diskbootOff+512 {
		return fmt.Errorf("GRUB core image too short (%d bytes)", len(core))
	}
	list := core[diskbootOff+diskbootListStart:]
	n := binary.LittleEndian.Uint16(list[8:10])
	rest := (len(core) - diskbootOff - 512 + 511) / 512
	if int(n) != rest {
		return fmt.Errorf("GRUB core image: diskboot blocklist length %d, want %d sectors (not a GRUB %s image?)", n, rest, "i386-pc")
	}
	binary.LittleEndian.PutUint64(list[0:8], restLBA)
	return nil
}

// installBootSector writes boot (boot.img) into the code area of mbr,
// keeping mbr's disk signature and partition table, and points it at the
// core image's first sector.
func installBootSector(mbr, boot []byte, kernelSectorOff int, coreLBA uint64, hardDisk bool) {
	code := bytes.Clone(boot[:mbrCodeSize])
	binary.LittleEndian.PutUint64(code[kernelSectorOff:], coreLBA)
	if hardDisk {
		code[bootDriveCheck], code[bootDriveCheck+1] = 0x90, 0x90
	}
	copy(mbr[:mbrCodeSize], code)
}

// PatchHybridMBR turns mbr (512 bytes) into GRUB's hybrid MBR for an ISO
// whose El Torito BIOS image (made with -O i386-pc-eltorito) starts at
// 2048-byte block bootBlock, and patches that image (eltorito, its bytes
// as stored in the ISO) so its diskboot sector loads the rest: what
// xorriso's grub2_mbr and grub2_boot_info options do. The El Torito image
// is cdboot.img (2048 bytes, 4 sectors), then diskboot.img, then the rest.
func PatchHybridMBR(mbr, hybrid, eltorito []byte, bootBlock uint32) error {
	lba := uint64(bootBlock) * 4
	if err := patchDiskboot(eltorito, 2048, lba+5); err != nil {
		return err
	}
	installBootSector(mbr, hybrid, hybridKernelSector, lba+4, false)
	return nil
}
