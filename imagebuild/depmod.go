package imagebuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/debian"
	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// The kernel package's postinst runs depmod, which never runs in an image:
// without modules.dep and its binary indexes, neither modprobe (which the
// kernel calls to autoload crc32c for ext4, netfilter modules, file
// systems) nor the init's device coldplug can find a module. So the build
// runs the host's depmod once per kernel package and caches the result.

// depmodFiles are depmod's outputs that go into the image.
var depmodFiles = []string{
	"modules.alias", "modules.alias.bin", "modules.builtin.alias.bin", "modules.builtin.bin",
	"modules.dep", "modules.dep.bin", "modules.devname", "modules.softdep",
	"modules.symbols", "modules.symbols.bin",
}

// ErrNoDepmod means the host lacks depmod (Debian package kmod).
var ErrNoDepmod = errors.New("depmod not found: install Debian's kmod package (apt-get install kmod)")

func depmodTool() (string, error) {
	for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("depmod"); err == nil {
		return p, nil
	}
	return "", ErrNoDepmod
}

// addModuleIndexes puts depmod's indexes for the kernel into the system tree.
func (b *builder) addModuleIndexes(ctx context.Context, pk *packages, k *kernelFiles, system *filetree.Tree) error {
	// The packages named for the version: linux-image-<version> alone for
	// Debian's 6.12, linux-base-, linux-binary- and linux-modules-<version>
	// for its later kernels, which split the module directory among them.
	var imgs []debian.Package
	var sums []string
	for _, p := range pk.kernel {
		if strings.HasSuffix(p.Name, k.version) {
			imgs = append(imgs, p)
			sums = append(sums, p.SHA256)
		}
	}
	if len(imgs) == 0 {
		return fmt.Errorf("no kernel package named for %s among %s", k.version, packageNames(pk.kernel))
	}
	// The indexes must describe exactly the modules the image keeps, or
	// modprobe would match a device to a module that is not there. (With
	// one package the key is as it always was, so caches stay valid.)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", strings.Join(sums, " "), b.moduleFilter().key())
	out := filepath.Join(b.cache, "depmod", hex.EncodeToString(h.Sum(nil)))
	if _, err := os.Stat(filepath.Join(out, "modules.dep")); err != nil {
		if err := b.runDepmod(ctx, pk, imgs, k.version, out); err != nil {
			return err
		}
	}
	modRoot := "usr/lib/modules/" + k.version + "/"
	for _, name := range depmodFiles {
		p := filepath.Join(out, name)
		src, err := filetree.NewHostFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue // depmod writes some indexes only when non-empty
		}
		if err != nil {
			return err
		}
		if err := system.Add(filetree.Entry{Path: modRoot + name, Kind: filetree.File, Mode: 0o644, Data: src}); err != nil {
			return err
		}
	}
	return nil
}

// runDepmod hard-links the unpacked module trees of imgs into one scratch
// base directory (depmod writes beside the modules, and the unpacked cache
// must stay as unpacked), runs depmod there and keeps its outputs in out.
func (b *builder) runDepmod(ctx context.Context, pk *packages, imgs []debian.Package, kver, out string) error {
	tool, err := depmodTool()
	if err != nil {
		return err
	}
	var srcs []string
	for _, img := range imgs {
		u, err := pk.archive.Unpack(ctx, img)
		if err != nil {
			return err
		}
		for _, p := range []string{"usr/lib/modules/" + kver, "lib/modules/" + kver} {
			if st, err := os.Stat(u.HostPath(p)); err == nil && st.IsDir() {
				srcs = append(srcs, u.HostPath(p))
				break
			}
		}
	}
	if len(srcs) == 0 {
		return fmt.Errorf("%s: no module directory for %s", packageNames(imgs), kver)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp(filepath.Dir(out), ".depmod-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	base := filepath.Join(scratch, "base")
	dst := filepath.Join(base, "lib", "modules", kver)
	mf := b.moduleFilter()
	for _, src := range srcs {
		kernelDir := filepath.Join(src, "kernel")
		skip := func(p string) bool {
			rel, err := filepath.Rel(kernelDir, p)
			if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
				return false
			}
			return mf.excluded(filepath.ToSlash(rel))
		}
		if err := linkTree(src, dst, skip); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, tool, "-b", base, kver)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("depmod for %s: %w: %s", kver, err, stderr.String())
	}
	result := filepath.Join(scratch, "out")
	if err := os.Mkdir(result, 0o755); err != nil {
		return err
	}
	for _, name := range depmodFiles {
		if err := os.Rename(filepath.Join(dst, name), filepath.Join(result, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	// Publish atomically: a crash leaves either nothing or a whole set.
	return os.Rename(result, out)
}

// linkTree mirrors src at dst with hard links (copies where the file
// system refuses links), leaving out what skip says.
func linkTree(src, dst string, skip func(string) bool) error {
	var paths []string
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if skip(p) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for _, p := range paths {
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case st.IsDir():
			err = os.MkdirAll(target, 0o755)
		case st.Mode()&os.ModeSymlink != 0:
			var l string
			if l, err = os.Readlink(p); err == nil {
				err = os.Symlink(l, target)
			}
		default:
			if err = os.Link(p, target); err != nil {
				var data []byte
				if data, err = os.ReadFile(p); err == nil {
					err = os.WriteFile(target, data, 0o644)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("staging modules for depmod: %w", err)
		}
	}
	return nil
}
