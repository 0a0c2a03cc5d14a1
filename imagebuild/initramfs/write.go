// Package initramfs builds ballast's initramfs: the init binary, the few
// kernel modules needed to find and mount the system image, and the
// ballast files under /etc/ballast, as a newc cpio archive compressed with
// zstd (docs/architecture.md, "initramfs").
//
// The archive is deterministic: entries in sorted order, every timestamp
// the spec's ModTime, owners from the tree (root for everything Build
// adds), inode numbers counted in archive order, one zstd stream written on
// one goroutine. Hard links in extra files are stored as copies.
package initramfs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

// Paths inside the initramfs that the init reads.
const (
	InitPath        = "init"
	ModulesLoadPath = "etc/ballast/modules.load"
	ModulesPathPath = "etc/ballast/modules.paths"
	BakedConfigPath = "etc/ballast/baked.yaml"
	BuildInfoPath   = "etc/ballast/build.json"
)

// Spec describes an initramfs.
type Spec struct {
	// ModTime stamps every entry (SOURCE_DATE_EPOCH).
	ModTime time.Time
	// Init is the ballast init binary (filetree.Bytes or a
	// filetree.HostFile); required.
	Init filetree.Source
	// Kernel is the kernel package's tree: usr/lib/modules/<kver>/ with
	// modules.dep and modules.builtin. It may be nil when Modules is
	// empty.
	Kernel *filetree.Tree
	// KernelVersion picks the module directory; empty means the single
	// one in Kernel.
	KernelVersion string
	// Modules are the names of the modules to load at boot ('-' or '_');
	// their dependencies are added, built-in ones skipped.
	Modules []string
	// BakedConfig is the cloud-config baked in by the build spec; nil
	// leaves /etc/ballast/baked.yaml out, an empty slice writes an empty
	// file.
	BakedConfig []byte
	// BuildInfo is the build manifest (JSON); nil leaves
	// /etc/ballast/build.json out.
	BuildInfo []byte
	// Extra holds further files; Build's own entries win over them.
	Extra *filetree.Tree
}

// Build lays out the initramfs as a tree and returns it with the selected
// modules in load order.
func Build(spec Spec) (*filetree.Tree, []Module, error) {
	if spec.Init == nil {
		return nil, nil, fmt.Errorf("initramfs: no init binary")
	}
	t := filetree.New(spec.ModTime)
	if spec.Extra != nil {
		if err := t.Merge(spec.Extra); err != nil {
			return nil, nil, fmt.Errorf("initramfs: extra files: %w", err)
		}
	}
	add := func(e filetree.Entry) error {
		if err := t.Add(e); err != nil {
			return fmt.Errorf("initramfs: %s: %w", e.Path, err)
		}
		return nil
	}
	// Mount points the init uses before devtmpfs is up, and a console
	// node so that the kernel can give /init its stdout even when it has
	// no built-in initramfs providing one.
	for _, d := range []filetree.Entry{
		{Path: "dev", Kind: filetree.Dir, Mode: 0o755},
		{Path: "dev/console", Kind: filetree.CharDevice, Mode: 0o600, Major: 5, Minor: 1},
		{Path: "proc", Kind: filetree.Dir, Mode: 0o555},
		{Path: "sys", Kind: filetree.Dir, Mode: 0o555},
		{Path: "run", Kind: filetree.Dir, Mode: 0o755},
		{Path: "tmp", Kind: filetree.Dir, Mode: 0o777 | fs.ModeSticky},
		{Path: "etc/ballast", Kind: filetree.Dir, Mode: 0o755},
		{Path: InitPath, Kind: filetree.File, Mode: 0o755, Data: spec.Init},
	} {
		if err := add(d); err != nil {
			return nil, nil, err
		}
	}
	if spec.BakedConfig != nil {
		// The cloud-config may hold secrets (passwords, tokens).
		if err := add(filetree.Entry{Path: BakedConfigPath, Kind: filetree.File, Mode: 0o600, Data: filetree.Bytes(spec.BakedConfig)}); err != nil {
			return nil, nil, err
		}
	}
	if spec.BuildInfo != nil {
		if err := add(filetree.Entry{Path: BuildInfoPath, Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(spec.BuildInfo)}); err != nil {
			return nil, nil, err
		}
	}

	var mods []Module
	var load, paths strings.Builder
	if len(spec.Modules) > 0 {
		if spec.Kernel == nil {
			return nil, nil, fmt.Errorf("initramfs: modules %v asked for, but no kernel tree", spec.Modules)
		}
		kver := spec.KernelVersion
		if kver == "" {
			var err error
			if kver, err = KernelVersion(spec.Kernel); err != nil {
				return nil, nil, err
			}
		}
		var err error
		if mods, err = SelectModules(spec.Kernel, kver, spec.Modules); err != nil {
			return nil, nil, err
		}
		dir, _ := ModulesDir(spec.Kernel, kver)
		for _, m := range mods {
			plain := m.plain
			if plain == nil {
				raw, err := readEntry(spec.Kernel, spec.Kernel.Get(dir+"/"+m.Path))
				if err != nil {
					return nil, nil, fmt.Errorf("initramfs: %w", err)
				}
				if plain, err = decompressModule(dir+"/"+m.Path, raw); err != nil {
					return nil, nil, fmt.Errorf("initramfs: %w", err)
				}
			}
			p := path.Join("lib/modules", kver, m.PlainPath())
			if err := add(filetree.Entry{Path: p, Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(plain)}); err != nil {
				return nil, nil, err
			}
			fmt.Fprintln(&load, m.Name)
			fmt.Fprintf(&paths, "%s %s\n", m.Name, m.PlainPath())
		}
	}
	// Written even when empty, so the init can tell "no modules" from a
	// broken build.
	if err := add(filetree.Entry{Path: ModulesLoadPath, Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(load.String())}); err != nil {
		return nil, nil, err
	}
	if err := add(filetree.Entry{Path: ModulesPathPath, Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(paths.String())}); err != nil {
		return nil, nil, err
	}
	return t, mods, nil
}

// Write builds the initramfs and writes it, zstd-compressed, to w. It
// returns the modules it selected, in load order.
func Write(ctx context.Context, w io.Writer, spec Spec) ([]Module, error) {
	t, mods, err := Build(spec)
	if err != nil {
		return nil, err
	}
	// One encoder goroutine: the output must not depend on scheduling.
	// The kernel's unzstd reads any window up to 128 MiB; the default is
	// far below.
	zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return nil, fmt.Errorf("initramfs: zstd: %w", err)
	}
	if err := WriteCPIO(ctx, zw, t); err != nil {
		zw.Close()
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("initramfs: zstd: %w", err)
	}
	return mods, nil
}

// WriteFile writes the initramfs to p atomically: to a temporary file next
// to it, renamed into place; on error nothing is left behind.
func WriteFile(ctx context.Context, p string, spec Spec) (mods []Module, err error) {
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if mods, err = Write(ctx, f, spec); err != nil {
		return nil, err
	}
	if err = f.Sync(); err != nil {
		return nil, fmt.Errorf("initramfs: %s: %w", p, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return nil, fmt.Errorf("initramfs: %s: %w", p, err)
	}
	if err = f.Close(); err != nil {
		return nil, fmt.Errorf("initramfs: %s: %w", p, err)
	}
	if err = os.Rename(f.Name(), p); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	return mods, nil
}

// WriteCPIO writes t as an uncompressed newc cpio archive, trailer
// included: entries in tree order (parents first), mtime t.ModTime, the
// entries' own modes and owners, inode numbers 1, 2, 3... in archive
// order. The root directory itself is not written: the kernel unpacks
// into its own root.
func WriteCPIO(ctx context.Context, w io.Writer, t *filetree.Tree) error {
	mtime := t.ModTime.Unix()
	if mtime < 0 || mtime > 1<<32-1 {
		return fmt.Errorf("initramfs: tree time %v does not fit a cpio timestamp", t.ModTime)
	}
	subdirs := map[string]uint64{}
	for _, e := range t.Entries() {
		if e.Kind == filetree.Dir && e.Path != "" {
			subdirs[parentDir(e.Path)]++
		}
	}
	rw := cpio.Newc.Writer(w)
	var ino uint64
	for _, e := range t.Entries() {
		if e.Path == "" {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ino++
		// A hard link is stored as a copy with its target's metadata.
		src := e
		if e.Kind == filetree.Hardlink {
			var err error
			if src, err = t.LinkTarget(e); err != nil {
				return err
			}
		}
		rec := cpio.Record{Info: cpio.Info{
			Ino:   ino,
			Mode:  uint64(src.UnixPerm()),
			UID:   uint64(src.UID),
			GID:   uint64(src.GID),
			NLink: 1,
			MTime: uint64(mtime),
			Name:  e.Path,
		}}
		switch e.Kind {
		case filetree.Dir:
			rec.Mode |= cpio.S_IFDIR
			rec.NLink = 2 + subdirs[e.Path]
		case filetree.File, filetree.Hardlink:
			r, err := openAt(src.Data)
			if err != nil {
				return fmt.Errorf("initramfs: %s: %w", e.Path, err)
			}
			rec.Mode |= cpio.S_IFREG
			rec.ReaderAt = r
			rec.FileSize = uint64(src.Data.Size())
		case filetree.Symlink:
			rec.Mode |= cpio.S_IFLNK
			rec.ReaderAt = strings.NewReader(e.Target)
			rec.FileSize = uint64(len(e.Target))
		case filetree.CharDevice, filetree.BlockDevice:
			rec.Mode |= cpio.S_IFCHR
			if e.Kind == filetree.BlockDevice {
				rec.Mode = rec.Mode&^cpio.S_IFMT | cpio.S_IFBLK
			}
			rec.Rmajor, rec.Rminor = uint64(e.Major), uint64(e.Minor)
		case filetree.FIFO:
			rec.Mode |= cpio.S_IFIFO
		default:
			return fmt.Errorf("initramfs: %s: cannot store a %v in cpio", e.Path, e.Kind)
		}
		if err := rw.WriteRecord(rec); err != nil {
			return fmt.Errorf("initramfs: writing %s: %w", e.Path, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("initramfs: writing trailer: %w", err)
	}
	return nil
}

func parentDir(p string) string {
	d := path.Dir(p)
	if d == "." {
		return ""
	}
	return d
}

// openAt gives the cpio writer a ReaderAt for a source; the writer closes
// it after copying when it is an io.Closer (an *os.File is).
func openAt(s filetree.Source) (io.ReaderAt, error) {
	switch v := s.(type) {
	case filetree.Bytes:
		return bytes.NewReader(v), nil
	case filetree.HostFile:
		return os.Open(v.Path)
	case *filetree.HostFile:
		return os.Open(v.Path)
	}
	rc, err := s.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}
