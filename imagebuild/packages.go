package imagebuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/debian"
	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/spec"
)

// packages is the resolved package set of a build, split by where each
// part goes.
type packages struct {
	archive *debian.Archive
	lock    *debian.Lock // as read; nil when absent or ignored
	// system goes into the squashfs; kernel gives vmlinuz and modules;
	// boot are the boot loaders' packages (only their files are used).
	system, kernel, boot []debian.Package
	// all is the union, recorded in the lock.
	all []debian.Package
	// busybox is Debian's busybox-static, for the runtime's helper image;
	// nil when the build makes no images.
	busybox *debian.Package
}

const (
	systemdBootPackage = "systemd-boot-efi"
	grubBIOSPackage    = "grub-pc-bin"
)

func (b *builder) lockPath() string { return b.spec.Path(b.spec.Lock) }

func (b *builder) resolve(ctx context.Context) (*packages, error) {
	a, err := debian.Open(ctx, debian.Config{
		Mirror:     b.spec.Debian.Mirror,
		Suite:      b.spec.Debian.Suite,
		Components: b.spec.Debian.Components,
		Arch:       b.board.Arch,
		CacheDir:   b.cache,
		Offline:    b.opts.Offline,
		Progress:   b.opts.Progress,
	})
	if err != nil {
		return nil, err
	}
	pk := &packages{archive: a}
	if !b.opts.UpdateLock {
		l, err := debian.ReadLock(b.lockPath())
		switch {
		case err == nil:
			pk.lock = l
			fmt.Fprintf(b.log, "    using lock %s (%d packages)\n", b.lockPath(), len(l.Packages))
		case errors.Is(err, fs.ErrNotExist):
			if b.opts.Offline {
				return nil, fmt.Errorf("--offline needs a lock file, and %s does not exist: build once online first", b.lockPath())
			}
		default:
			return nil, err
		}
	}

	systemNames := append(append(append([]string(nil), spec.BasePackages...), b.board.Packages...), b.spec.Packages...)
	for _, n := range b.runtimePackageNames() {
		if !slices.Contains(systemNames, n) {
			systemNames = append(systemNames, n)
		}
	}
	sys, err := a.Resolve(ctx, systemNames, pk.lock)
	if err != nil {
		return nil, err
	}
	excluded := map[string]bool{}
	for _, n := range b.spec.ExcludePackages {
		excluded[n] = true
	}
	for _, n := range systemNames {
		if excluded[n] {
			return nil, fmt.Errorf("package %s is both requested and excluded (exclude_packages)", n)
		}
	}
	for _, p := range sys {
		if !excluded[p.Name] {
			pk.system = append(pk.system, p)
		}
	}

	// The kernel metapackage's closure drags in initramfs-tools and the
	// like, which ballast replaces: keep only the kernel's own packages.
	kopts := []debian.ResolveOption{debian.Ignoring("initramfs-tools", "linux-initramfs-tool")}
	if s := b.board.KernelSuite; s != "" {
		kopts = append(kopts, debian.FromSuite(s))
	}
	kern, err := a.Resolve(ctx, []string{b.board.KernelPackage}, pk.lock, kopts...)
	if err != nil {
		return nil, err
	}
	for _, p := range kern {
		if isKernelPackage(p.Name) {
			pk.kernel = append(pk.kernel, p)
		}
	}

	var bootNames []string
	var bootClosure []debian.Package
	if b.board.HasBootChain("uefi") {
		bootNames = append(bootNames, systemdBootPackage)
	}
	if b.board.HasBootChain("bios") {
		bootNames = append(bootNames, grubBIOSPackage)
	}
	if b.board.Firmware != nil {
		bootNames = append(bootNames, b.board.Firmware.Package)
	}
	if len(bootNames) > 0 {
		bl, err := a.Resolve(ctx, bootNames, pk.lock)
		if err != nil {
			return nil, err
		}
		bootClosure = bl
		// Only the named packages' files are used: their dependencies are
		// host tools and maintainer-script helpers.
		for _, p := range bl {
			for _, n := range bootNames {
				if p.Name == n {
					pk.boot = append(pk.boot, p)
				}
			}
		}
	}

	var busybox []debian.Package
	if b.needsBusybox() {
		// Its own closure: the binary goes into an image, not the system.
		if busybox, err = a.Resolve(ctx, []string{busyboxPackage}, pk.lock); err != nil {
			return nil, err
		}
		for i := range busybox {
			if busybox[i].Name == busyboxPackage {
				pk.busybox = &busybox[i]
			}
		}
	}

	seen := map[string]debian.Package{}
	// The lock records every closure whole, so that a locked build
	// resolves without the index.
	for _, set := range [][]debian.Package{sys, kern, bootClosure, busybox} {
		for _, p := range set {
			prev, ok := seen[p.Name]
			if !ok {
				seen[p.Name] = p
				pk.all = append(pk.all, p)
				continue
			}
			// One lock entry per name: the kernel's closure may take a
			// package from another suite that the system also needs.
			if prev.Version != p.Version || prev.Suite != p.Suite {
				return nil, fmt.Errorf("package %s is needed as %s and as %s (kernel_suite %s): the lock holds one version",
					p.Name, describePackage(prev), describePackage(p), b.board.KernelSuite)
			}
		}
	}
	sort.Slice(pk.all, func(i, j int) bool { return pk.all[i].Name < pk.all[j].Name })
	b.res.Packages = len(pk.system) + len(pk.kernel)
	from := ""
	if s := b.board.KernelSuite; s != "" {
		from = " from " + s
	}
	fmt.Fprintf(b.log, "    %d system packages, kernel%s %s\n", len(pk.system), from, packageNames(pk.kernel))
	return pk, nil
}

// isKernelPackage says whether a package of the kernel's closure holds the
// kernel itself: linux-image-* (Debian's 6.12 puts everything there), and
// the split packages of later kernels, linux-binary-<version> (vmlinuz),
// linux-modules-<version> and linux-base-<version> (the DTBs, the config,
// modules.builtin). Not linux-base, the maintainer scripts' helpers.
func isKernelPackage(name string) bool {
	if strings.HasPrefix(name, "linux-image-") || strings.HasPrefix(name, "linux-binary-") || strings.HasPrefix(name, "linux-modules-") {
		return true
	}
	v, ok := strings.CutPrefix(name, "linux-base-")
	return ok && v != "" && v[0] >= '0' && v[0] <= '9'
}

// describePackage is "version" or "version from suite", for messages.
func describePackage(p debian.Package) string {
	if p.Suite != "" {
		return p.Version + " from " + p.Suite
	}
	return p.Version
}

func packageNames(ps []debian.Package) string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name+" "+p.Version)
	}
	return strings.Join(n, ", ")
}

// systemExcludes are paths dropped from every package: documentation and
// translations nobody reads on an appliance, what only dpkg uses, and
// glibc's gconv modules (8 MB of iconv character sets: the image runs in
// the C.UTF-8 locale, and the conversions its programs make between
// UTF-8, ASCII, Latin-1 and UCS/UTF-16/32 are built into libc).
var systemExcludes = []string{
	"usr/lib/x86_64-linux-gnu/gconv", "usr/lib/aarch64-linux-gnu/gconv",
	"usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
	"usr/share/lintian", "usr/share/bug", "usr/share/doc-base", "usr/share/bash-completion",
	"usr/share/zsh", "usr/share/fish", "var/lib/dpkg", "etc/init.d", "etc/rc0.d", "etc/rc1.d",
	"etc/rc2.d", "etc/rc3.d", "etc/rc4.d", "etc/rc5.d", "etc/rc6.d", "etc/rcS.d",
	"usr/lib/systemd", "etc/systemd", "etc/cron.daily", "etc/cron.weekly", "etc/logrotate.d",
}

func underAny(p string, prefixes []string) bool {
	for _, pre := range prefixes {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

func (b *builder) installSystem(ctx context.Context, pk *packages, t *filetree.Tree) error {
	if err := debian.MergedUsr(t, b.board.Arch); err != nil {
		return err
	}
	return pk.archive.Install(ctx, t, pk.system, debian.InstallOptions{
		Exclude: func(p string) bool { return underAny(p, systemExcludes) },
	})
}

// kernelFiles is the kernel image and its full module tree.
type kernelFiles struct {
	version string
	vmlinuz *filetree.Entry
	tree    *filetree.Tree // the kernel packages alone, for module selection
}

// installKernel unpacks the kernel packages into their own tree, and copies
// the modules the board keeps into the system tree.
func (b *builder) installKernel(ctx context.Context, pk *packages, system *filetree.Tree) (*kernelFiles, error) {
	kt := filetree.New(b.epoch)
	if err := debian.MergedUsr(kt, b.board.Arch); err != nil {
		return nil, err
	}
	if err := pk.archive.Install(ctx, kt, pk.kernel, debian.InstallOptions{}); err != nil {
		return nil, err
	}
	var versions []string
	for _, e := range kt.Children("usr/lib/modules") {
		if e.Kind == filetree.Dir {
			versions = append(versions, path.Base(e.Path))
		}
	}
	if len(versions) != 1 {
		return nil, fmt.Errorf("kernel packages %s hold %d module trees (%v), want exactly one", packageNames(pk.kernel), len(versions), versions)
	}
	kf := &kernelFiles{version: versions[0], tree: kt}
	modRoot := "usr/lib/modules/" + kf.version
	// Debian's 6.12 installs boot/vmlinuz-<version>; its later kernels
	// (linux-binary-<version>) the module directory's vmlinuz.
	for _, p := range []string{"boot/vmlinuz-" + kf.version, modRoot + "/vmlinuz"} {
		if e := kt.Get(p); e != nil && e.Kind == filetree.File {
			kf.vmlinuz = e
			break
		}
	}
	if kf.vmlinuz == nil {
		return nil, fmt.Errorf("kernel packages %s have neither boot/vmlinuz-%s nor %s/vmlinuz", packageNames(pk.kernel), kf.version, modRoot)
	}
	mf := b.moduleFilter()
	kept := 0
	for _, e := range kt.Entries() {
		if !strings.HasPrefix(e.Path, modRoot+"/") && e.Path != modRoot {
			continue
		}
		if rel, ok := strings.CutPrefix(e.Path, modRoot+"/kernel/"); ok && mf.excluded(rel) {
			continue
		}
		// The kernel image and the device trees (later kernels keep them
		// beside the modules) are the boot partition's, not the system's.
		if e.Path == modRoot+"/vmlinuz" || underAny(e.Path, []string{modRoot + "/dtb"}) {
			continue
		}
		if err := system.Add(*e); err != nil {
			return nil, err
		}
		if e.Kind == filetree.File {
			kept++
		}
	}
	// The kernel's build configuration, where Debian's later kernels keep
	// it (usr/lib/modules/<version>/config): `k3s check-config` reads it on
	// the node. Debian's 6.12 has it in boot/, which the system image
	// does not carry.
	if system.Get(modRoot+"/config") == nil {
		if e := kt.Get("boot/config-" + kf.version); e != nil && e.Kind == filetree.File {
			c := *e
			c.Path = modRoot + "/config"
			if err := system.Add(c); err != nil {
				return nil, err
			}
		}
	}
	b.res.Kernel = kf.version
	fmt.Fprintf(b.log, "    kernel %s, %d module files kept in the system image\n", kf.version, kept)
	return kf, nil
}

// moduleFilter says which module directories stay out of the system
// image: the board's module_excludes, less the spec's kernel.keep_modules.
type moduleFilter struct {
	excludes, keeps []string // relative to the module tree's kernel/
}

func (b *builder) moduleFilter() moduleFilter {
	return moduleFilter{excludes: b.board.ModuleExcludes, keeps: b.spec.Kernel.KeepModules}
}

// excluded reports whether rel, a path under kernel/, is left out. A kept
// directory keeps everything below it and the directories above it (but
// not their other children).
func (f moduleFilter) excluded(rel string) bool {
	if !underAny(rel, f.excludes) || underAny(rel, f.keeps) {
		return false
	}
	for _, k := range f.keeps {
		if strings.HasPrefix(k, rel+"/") {
			return false
		}
	}
	return true
}

// key identifies the filter in cache keys; without keeps it is the
// excludes alone, as before keep_modules existed, so caches stay valid.
func (f moduleFilter) key() string {
	k := strings.Join(f.excludes, "\n")
	if len(f.keeps) > 0 {
		k += "\nkeep:\n" + strings.Join(f.keeps, "\n")
	}
	return k
}

// bootFiles are the boot loaders' files taken from their packages.
type bootFiles struct {
	systemdBoot []byte
	grubModules string // host directory of GRUB's i386-pc modules
	// firmware holds the board's firmware package's files under
	// Firmware.Dir, at paths relative to it (Raspberry Pi: start.elf...).
	firmware *filetree.Tree
}

func (b *builder) installBootLoaders(ctx context.Context, pk *packages) (*bootFiles, error) {
	bf := &bootFiles{}
	for _, p := range pk.boot {
		if fw := b.board.Firmware; fw != nil && p.Name == fw.Package {
			t := filetree.New(b.epoch)
			if err := pk.archive.Install(ctx, t, []debian.Package{p}, debian.InstallOptions{}); err != nil {
				return nil, err
			}
			bf.firmware = filetree.New(b.epoch)
			if _, err := copyMatches(bf.firmware, t, fw.Dir, "*", ""); err != nil {
				return nil, err
			}
			// Subdirectories (overlays/) one level down.
			if _, err := copyMatches(bf.firmware, t, fw.Dir, "*/*", ""); err != nil {
				return nil, err
			}
			continue
		}
		u, err := pk.archive.Unpack(ctx, p)
		if err != nil {
			return nil, err
		}
		switch p.Name {
		case systemdBootPackage:
			name := map[string]string{"amd64": "systemd-bootx64.efi", "arm64": "systemd-bootaa64.efi"}[b.board.Arch]
			data, err := os.ReadFile(u.HostPath("usr/lib/systemd/boot/efi/" + name))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.Name, err)
			}
			bf.systemdBoot = data
		case grubBIOSPackage:
			dir := u.HostPath("usr/lib/grub/i386-pc")
			if _, err := os.Stat(dir + "/boot.img"); err != nil {
				return nil, fmt.Errorf("%s: no i386-pc boot.img: %w", p.Name, err)
			}
			bf.grubModules = dir
		}
	}
	if b.board.Firmware != nil && bf.firmware == nil {
		return nil, fmt.Errorf("board %s needs firmware package %s, which was not resolved", b.board.Name, b.board.Firmware.Package)
	}
	if b.board.HasBootChain("uefi") && bf.systemdBoot == nil {
		return nil, fmt.Errorf("board %s boots with UEFI but %s was not resolved", b.board.Name, systemdBootPackage)
	}
	return bf, nil
}

func (b *builder) writeLock(pk *packages) error {
	l := debian.NewLock(pk.archive.Config(), pk.all)
	data, err := l.Marshal()
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(b.lockPath()); err == nil && bytes.Equal(old, data) {
		b.res.LockPath = b.lockPath()
		return nil
	}
	if b.opts.Offline {
		return fmt.Errorf("--offline: the lock %s would change; build online to update it", b.lockPath())
	}
	if err := os.MkdirAll(filepath.Dir(b.lockPath()), 0o755); err != nil {
		return err
	}
	if err := l.Write(b.lockPath()); err != nil {
		return err
	}
	b.res.LockPath = b.lockPath()
	fmt.Fprintf(b.log, "    wrote %s (%d packages)\n", b.lockPath(), len(pk.all))
	return nil
}
