package imagebuild

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/ballast-os/ballast/boards"
	"github.com/ballast-os/ballast/imagebuild/disk"
	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// Raspberry Pi boot partition files beside the shared ones (disk.KernelPath...).
const (
	ConfigTxtPath  = "config.txt"
	CmdlineTxtPath = "cmdline.txt"
)

// RPiCmdline is cmdline.txt's one line: the board's command line, the disk
// signature the init finds the slots by (MBR has no partition names) and
// the slot.
func RPiCmdline(b *boards.Board, signature uint32) string {
	return fmt.Sprintf("%s ballast.disk=%08x ballast.slot=A", b.CmdlineString(), signature)
}

// RPiConfigTxt is config.txt: the board's settings, then the kernel and the
// initramfs the firmware loads from the boot partition.
func RPiConfigTxt(b *boards.Board) string {
	cfg := strings.TrimRight(b.ConfigTxt, "\n")
	return cfg + "\n\n# The kernel and initramfs are Debian's and ballast's, on this partition.\n" +
		"kernel=" + disk.KernelPath + "\n" +
		"initramfs " + disk.InitrdPath + " followkernel\n"
}

// addRPiBootFiles copies the board's firmware files (from firmware, the
// firmware package's files relative to its Dir) and device trees (from the
// kernel packages' tree) to the root of the boot tree, and writes
// config.txt and cmdline.txt. Every pattern must match at least one file:
// a board whose firmware or DTB vanished from Debian fails the build, not
// the boot.
func addRPiBootFiles(b *boards.Board, bt, firmware, kernel *filetree.Tree, kver string, signature uint32) error {
	if f := b.Firmware; f != nil {
		for _, pat := range f.Files {
			matched, err := copyMatches(bt, firmware, "", pat, "")
			if err != nil {
				return err
			}
			if matched == 0 {
				return fmt.Errorf("board %s: firmware package %s has no %s/%s", b.Name, f.Package, f.Dir, pat)
			}
		}
	}
	dtbDir := kernelDTBDir(kernel, kver)
	for _, pat := range b.DeviceTrees {
		// The firmware looks for the DTB by its plain name at the root.
		matched, err := copyMatches(bt, kernel, dtbDir, pat, "flat")
		if err != nil {
			return err
		}
		if matched == 0 {
			return fmt.Errorf("board %s: kernel %s has no device tree %s/%s", b.Name, kver, dtbDir, pat)
		}
	}
	if err := bt.AddFile(ConfigTxtPath, 0o644, []byte(RPiConfigTxt(b))); err != nil {
		return err
	}
	return bt.AddFile(CmdlineTxtPath, 0o644, []byte(RPiCmdline(b, signature)+"\n"))
}

// kernelDTBDir is the kernel packages' device tree directory:
// usr/lib/linux-image-<kver>, which Debian's kernels after 6.12 make a
// symlink to modules/<kver>/dtb (followed here, inside the tree).
func kernelDTBDir(kernel *filetree.Tree, kver string) string {
	dir := "usr/lib/linux-image-" + kver
	// Resolve follows the symlinks above a path's last element.
	if p, err := kernel.Resolve(dir + "/x"); err == nil {
		dir = path.Dir(p)
	}
	return dir
}

// copyMatches copies the files of src under dir matching pattern (relative
// to dir) into dst: at the same relative path, or at the root when flat is
// set. It returns how many it copied.
func copyMatches(dst, src *filetree.Tree, dir, pattern, flat string) (int, error) {
	var names []string
	for _, e := range src.Entries() {
		if e.Kind != filetree.File {
			continue
		}
		rel := e.Path
		if dir != "" {
			if !strings.HasPrefix(e.Path, dir+"/") {
				continue
			}
			rel = strings.TrimPrefix(e.Path, dir+"/")
		}
		if ok, err := path.Match(pattern, rel); err != nil {
			return 0, fmt.Errorf("pattern %q: %w", pattern, err)
		} else if ok {
			names = append(names, e.Path)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		e := *src.Get(n)
		rel := strings.TrimPrefix(n, dir+"/")
		if dir == "" {
			rel = n
		}
		if flat != "" {
			rel = path.Base(rel)
		}
		e.Path, e.Mode, e.UID, e.GID = rel, 0o644, 0, 0
		if err := dst.Add(e); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}
