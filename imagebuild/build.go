// Package imagebuild turns a build spec into bootable images: it resolves
// and unpacks Debian packages, assembles the system tree with ballast's
// init, writes the system squashfs (cached by content), the initramfs, and
// the raw disk and/or hybrid ISO.
package imagebuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ballast-os/ballast/boards"
	"github.com/ballast-os/ballast/imagebuild/bmap"
	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/spec"
)

// Options are the inputs of one build beyond the spec.
type Options struct {
	Spec *spec.Spec
	// CacheDir holds downloads, unpacked packages, built inits and
	// squashfs images; default <user cache dir>/ballast.
	CacheDir string
	// Offline builds from the cache and lock only.
	Offline bool
	// UpdateLock resolves afresh, ignoring the lock, and rewrites it.
	UpdateLock bool
	// Log receives one line per step; nil is quiet.
	Log io.Writer
	// Progress receives download progress (a bar on a terminal).
	Progress io.Writer
	// SourceDir is the ballast module root the init is compiled from;
	// default FindSource().
	SourceDir string
	// Epoch stamps every file (SOURCE_DATE_EPOCH); zero: $SOURCE_DATE_EPOCH,
	// else DefaultEpoch.
	Epoch time.Time
	// LockOnly stops after resolving packages and writing the lock.
	LockOnly bool
	// BakedConfig, when set, replaces the spec's cloud_config.
	BakedConfig []byte
}

// DefaultEpoch is the timestamp of every file when SOURCE_DATE_EPOCH is unset.
var DefaultEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Image is one written output.
type Image struct {
	Format string `json:"format"`
	Path   string `json:"path"`
	// Size is the file's length; Allocated the bytes it takes on disk
	// (a raw image is sparse: its empty slots and data partition are holes).
	Size      int64 `json:"size"`
	Allocated int64 `json:"allocated"`
	// Bmap is the raw image's block map (bmaptool's format) beside it:
	// what `ballast flash` writes, the holes it skips.
	Bmap string `json:"bmap,omitempty"`
}

// Result describes a finished build.
type Result struct {
	Board          string
	Images         []Image
	Kernel         string
	SquashfsPath   string
	SquashfsSize   int64
	SquashfsSHA256 string
	SquashfsCache  bool // reused from the cache
	InitrdSize     int64
	Packages       int
	LockPath       string
	Steps          []Step
	// Runtime is what build.json records of the runtime; nil without one.
	Runtime *ManifestRuntime
}

// Step is one timed stage of the build.
type Step struct {
	Name     string
	Duration time.Duration
}

// Build runs the pipeline.
func Build(ctx context.Context, opts Options) (*Result, error) {
	b, err := newBuilder(opts)
	if err != nil {
		return nil, err
	}
	return b.run(ctx)
}

type builder struct {
	opts  Options
	spec  *spec.Spec
	board *boards.Board
	epoch time.Time
	cache string
	res   *Result
	log   io.Writer
	// runtime is what the runtime steps produced; nil without a runtime.
	runtime *runtimeFiles
	// system is the assembled system tree, kept for tests.
	system *filetree.Tree
}

func newBuilder(opts Options) (*builder, error) {
	s := opts.Spec
	if s == nil {
		s = spec.Default()
	}
	board, err := s.LoadBoard()
	if err != nil {
		return nil, err
	}
	for _, f := range s.Formats {
		if !board.SupportsFormat(f) {
			return nil, fmt.Errorf("board %s cannot be written as %q (formats: %s)", board.Name, f, strings.Join(board.Formats, ", "))
		}
	}
	epoch := opts.Epoch
	if epoch.IsZero() {
		epoch = DefaultEpoch
		if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q: not a number of seconds", v)
			}
			epoch = time.Unix(n, 0).UTC()
		}
	}
	cache := opts.CacheDir
	if cache == "" {
		uc, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("no cache directory: %w", err)
		}
		cache = filepath.Join(uc, "ballast")
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	return &builder{opts: opts, spec: s, board: board, epoch: epoch, cache: cache,
		res: &Result{Board: board.Name}, log: log}, nil
}

// step runs fn as a named, timed stage.
func (b *builder) step(name string, fn func() error) error {
	start := time.Now()
	fmt.Fprintf(b.log, "==> %s\n", name)
	err := fn()
	d := time.Since(start)
	b.res.Steps = append(b.res.Steps, Step{Name: name, Duration: d})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(b.log, "    %s done in %s\n", name, d.Round(time.Millisecond))
	return nil
}

func (b *builder) run(ctx context.Context) (*Result, error) {
	var (
		pk       *packages
		system   = filetree.New(b.epoch)
		kernel   *kernelFiles
		boot     *bootFiles
		initPath string
		runtime  *runtimeFiles
		baked    []byte
		userData []byte
		manifest []byte
		initrd   []byte
	)
	steps := []struct {
		name string
		fn   func() error
	}{
		{"read cloud-config", func() (err error) { baked, userData, err = b.cloudConfigs(); return }},
		{"resolve packages", func() (err error) { pk, err = b.resolve(ctx); return }},
		{"unpack system packages", func() error { return b.installSystem(ctx, pk, system) }},
		{"unpack kernel", func() (err error) {
			if kernel, err = b.installKernel(ctx, pk, system); err != nil || !b.hasRuntime() {
				return err
			}
			// Before the runtime build: a board without the modules fails fast.
			return checkRuntimeModules(system, kernel, b.board.Name)
		}},
		{"index kernel modules", func() error { return b.addModuleIndexes(ctx, pk, kernel, system) }},
		{"unpack boot loaders", func() (err error) {
			if !b.writesDisk() {
				return nil
			}
			boot, err = b.installBootLoaders(ctx, pk)
			return
		}},
		{"build init", func() (err error) { initPath, err = b.buildInit(ctx); return }},
		{"build runtime", func() (err error) {
			if !b.hasRuntime() {
				fmt.Fprintf(b.log, "    runtime kind none: no Kubernetes in this image\n")
				return nil
			}
			runtime, err = b.buildRuntime(ctx)
			return err
		}},
		{"build runtime images", func() error {
			if runtime == nil {
				return nil
			}
			return b.buildRuntimeImages(ctx, pk, runtime)
		}},
		{"assemble system tree", func() (err error) {
			b.runtime = runtime
			manifest, err = b.manifest(kernel, pk, initPath)
			if err != nil {
				return err
			}
			if err := b.addSystemFiles(system, initPath, manifest); err != nil {
				return err
			}
			if runtime != nil {
				return b.addRuntimeFiles(system, runtime)
			}
			return nil
		}},
		{"write squashfs", func() error {
			if !b.writesDisk() {
				fmt.Fprintf(b.log, "    no disk format: the container image is written from the tree\n")
				return nil
			}
			return b.writeSquashfs(ctx, system)
		}},
		{"write initramfs", func() (err error) {
			if !b.writesDisk() {
				return nil
			}
			initrd, err = b.writeInitramfs(ctx, kernel, initPath, baked, manifest)
			return
		}},
	}
	b.system = system
	for _, s := range steps {
		if err := b.step(s.name, s.fn); err != nil {
			return nil, err
		}
		if s.name == "resolve packages" && b.opts.LockOnly {
			return b.res, b.step("write lock", func() error { return b.writeLock(pk) })
		}
	}
	if err := os.MkdirAll(b.spec.Output, 0o755); err != nil {
		return nil, err
	}
	for _, format := range b.spec.Formats {
		out := filepath.Join(b.spec.Output, fmt.Sprintf("%s-%s.%s", b.spec.Name, b.board.Name, extension(format)))
		err := b.step("write "+format+" image "+out, func() error {
			if format == "oci" {
				return b.writeContainer(out, system)
			}
			bt, err := b.bootTree(kernel, initrd, manifest, userData)
			if err != nil {
				return err
			}
			switch format {
			case "raw":
				return b.writeRaw(ctx, out, bt, boot, kernel)
			case "iso":
				return b.writeISO(ctx, out, bt, boot)
			}
			return fmt.Errorf("unknown format %q", format)
		})
		if err != nil {
			return nil, err
		}
		img, err := describe(format, out)
		if err != nil {
			return nil, err
		}
		b.res.Images = append(b.res.Images, img)
	}
	if err := b.step("write lock", func() error { return b.writeLock(pk) }); err != nil {
		return nil, err
	}
	return b.res, nil
}

func extension(format string) string {
	switch format {
	case "raw":
		return "img"
	case "oci":
		return "oci.tar"
	}
	return format
}

// writesDisk: a format that boots (raw, iso) is asked for; the container
// image (oci) needs no squashfs, initramfs or boot loaders.
func (b *builder) writesDisk() bool {
	for _, f := range b.spec.Formats {
		if f != "oci" {
			return true
		}
	}
	return false
}

func describe(format, path string) (Image, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Image{}, err
	}
	img := Image{Format: format, Path: path, Size: st.Size()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		img.Allocated = sys.Blocks * 512
	}
	if _, err := os.Stat(bmap.PathFor(path)); err == nil && format == "raw" {
		img.Bmap = bmap.PathFor(path)
	}
	return img, nil
}

// SHA256 hashes the image file. Build does not: a raw image is a
// gigabyte of mostly holes, and hashing it would double a warm rebuild.
func (img Image) SHA256() (string, error) {
	f, err := os.Open(img.Path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", img.Path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// cloudConfigs returns the config baked into the initramfs and the
// editable /user-data for the boot partition.
func (b *builder) cloudConfigs() (baked, userData []byte, err error) {
	switch {
	case b.opts.BakedConfig != nil:
		baked = b.opts.BakedConfig
	case b.spec.CloudConfig != "":
		baked, err = os.ReadFile(b.spec.Path(b.spec.CloudConfig))
		if err != nil {
			return nil, nil, fmt.Errorf("cloud_config: %w", err)
		}
	default:
		baked = defaultCloudConfig()
	}
	if err := validateCloudConfig(b.cloudConfigName(), baked); err != nil {
		return nil, nil, err
	}
	if b.spec.UserData != "" {
		userData, err = os.ReadFile(b.spec.Path(b.spec.UserData))
		if err != nil {
			return nil, nil, fmt.Errorf("user_data: %w", err)
		}
		if err := validateCloudConfig(b.spec.Path(b.spec.UserData), userData); err != nil {
			return nil, nil, err
		}
	} else {
		userData = []byte(userDataTemplate)
	}
	return baked, userData, nil
}

func (b *builder) cloudConfigName() string {
	if b.spec.CloudConfig != "" && b.opts.BakedConfig == nil {
		return b.spec.Path(b.spec.CloudConfig)
	}
	return "default cloud-config"
}

const userDataTemplate = `#cloud-config
# This file is read at every boot. Edit it on any computer after flashing:
# it merges over the configuration baked into the image (later wins).
# Examples:
#
# hostname: edge-1
# ssh_authorized_keys:
#   - ssh-ed25519 AAAA... you@laptop
`
