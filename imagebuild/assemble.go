package imagebuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/examples"
	"github.com/ballast-os/ballast/imagebuild/bmap"
	"github.com/ballast-os/ballast/imagebuild/debian"
	"github.com/ballast-os/ballast/imagebuild/disk"
	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/initramfs"
	"github.com/ballast-os/ballast/imagebuild/iso"
	"github.com/ballast-os/ballast/imagebuild/squashfs"
)

// Manifest is build.json: what an image holds, for `ballast inspect` and
// for the init. It carries no wall-clock time, so it is reproducible.
type Manifest struct {
	Ballast         string          `json:"ballast"`
	Board           string          `json:"board"`
	Arch            string          `json:"arch"`
	Kernel          string          `json:"kernel"`
	Cmdline         string          `json:"cmdline"`
	SourceDateEpoch int64           `json:"source_date_epoch"`
	Debian          ManifestArchive `json:"debian"`
	Packages        []string        `json:"packages"` // "name version", system and kernel
	InitSHA256      string          `json:"init_sha256"`
	// Runtime is absent when the image carries none.
	Runtime *ManifestRuntime `json:"runtime,omitempty"`
}

// ManifestArchive names the archive the packages came from.
type ManifestArchive struct {
	Mirror string `json:"mirror"`
	Suite  string `json:"suite"`
	// KernelSuite is the board's kernel_suite, when the kernel comes
	// from another suite than the rest.
	KernelSuite string `json:"kernel_suite,omitempty"`
}

// Paths in the system image.
const (
	InitPath      = "usr/lib/ballast/init"
	SystemJSON    = "usr/lib/ballast/build.json"
	osReleasePath = "usr/lib/os-release"
)

func (b *builder) manifest(k *kernelFiles, pk *packages, initPath string) ([]byte, error) {
	m := Manifest{
		Ballast:         Version(),
		Board:           b.board.Name,
		Arch:            b.board.Arch,
		Kernel:          k.version,
		Cmdline:         b.board.CmdlineString(),
		SourceDateEpoch: b.epoch.Unix(),
		Debian:          ManifestArchive{Mirror: b.spec.Debian.Mirror, Suite: b.spec.Debian.Suite, KernelSuite: b.board.KernelSuite},
	}
	if initPath != "" {
		data, err := os.ReadFile(initPath)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(data)
		m.InitSHA256 = hex.EncodeToString(sum[:])
	}
	if b.runtime != nil {
		rm, err := b.runtime.manifest()
		if err != nil {
			return nil, err
		}
		m.Runtime, b.res.Runtime = rm, rm
	}
	for _, set := range [][]debian.Package{pk.system, pk.kernel} {
		for _, p := range set {
			m.Packages = append(m.Packages, p.Name+" "+p.Version)
		}
	}
	return json.MarshalIndent(m, "", "  ")
}

func (b *builder) buildInit(ctx context.Context) (string, error) {
	src, err := b.sourceDir()
	if err != nil {
		return "", err
	}
	return BuildInit(ctx, src, b.board.Arch, Version(), filepath.Join(b.cache, "init"))
}

// sourceDir is the ballast checkout the init and the runtime are built from.
func (b *builder) sourceDir() (string, error) {
	if b.opts.SourceDir != "" {
		return b.opts.SourceDir, nil
	}
	return FindSource()
}

// mountPoints exist in the read-only system image so the init can mount
// over them (docs/architecture.md, "Running system").
var mountPoints = []string{
	"proc", "sys", "dev", "run", "tmp", "var", "persist", "home", "root",
	"etc/rancher", "var/lib/rancher", "var/lib/ballast", "var/log", "usr/local/bin",
}

func (b *builder) addSystemFiles(t *filetree.Tree, initPath string, manifest []byte) error {
	if err := applyAlternatives(t); err != nil {
		return err
	}
	if err := buildCABundle(t); err != nil {
		return err
	}
	for _, d := range mountPoints {
		mode := os.FileMode(0o755)
		switch d {
		case "tmp":
			mode = 0o1777
		case "root":
			mode = 0o700
		}
		if e := t.Get(d); e == nil || e.Kind != filetree.Dir {
			if err := t.AddDir(d, mode); err != nil {
				return err
			}
		}
	}
	src, err := filetree.NewHostFile(initPath)
	if err != nil {
		return err
	}
	if err := t.Add(filetree.Entry{Path: InitPath, Kind: filetree.File, Mode: 0o755, Data: src}); err != nil {
		return err
	}
	// init, and the power commands a person types over SSH: the init
	// run by those names asks PID 1 for a clean shutdown.
	for _, name := range []string{"init", "reboot", "poweroff", "halt"} {
		if err := t.AddSymlink("usr/sbin/"+name, "/"+InitPath); err != nil {
			return err
		}
	}
	if err := t.AddFile(SystemJSON, 0o644, manifest); err != nil {
		return err
	}
	osRelease := fmt.Sprintf(`PRETTY_NAME="ballast (Debian %[1]s)"
NAME="ballast"
ID=ballast
ID_LIKE=debian
VERSION_ID=%[2]q
VERSION_CODENAME=%[1]s
HOME_URL="https://github.com/ballast-os/ballast"
`, b.spec.Debian.Suite, Version())
	return t.AddFile(osReleasePath, 0o644, []byte(osRelease))
}

func (b *builder) compression() squashfs.Compression {
	if b.spec.Image.Compression == "xz" {
		return squashfs.XZ
	}
	return squashfs.Zstd
}

// writeSquashfs writes the system image into the cache under its digest, so
// an unchanged system (a rebuild after a cloud-config edit) costs nothing.
func (b *builder) writeSquashfs(ctx context.Context, t *filetree.Tree) error {
	// 1 MiB blocks and zstd level 12 (the encoder's best step): the
	// runtime's Go binaries (k3s, crictl, the CNI plugins, the images'
	// programs: 300 MB) take 194 MiB, against 200.1 MiB at level 6 (which
	// the 200 MiB budget no longer fits since crictl and ServiceLB's
	// image) and 207.7 MiB with 128 KiB blocks at level 3; writing takes
	// about 15 s on two cores instead of 5, and only when the system
	// tree changed.
	opts := squashfs.Options{Compression: b.compression(), BlockSize: 1 << 20, Level: 12}
	digest, err := squashfs.Digest(t, opts)
	if err != nil {
		return err
	}
	dir := filepath.Join(b.cache, "squashfs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p := filepath.Join(dir, digest+".squashfs")
	b.res.SquashfsPath = p
	if st, err := os.Stat(p); err == nil {
		b.res.SquashfsSize, b.res.SquashfsCache = st.Size(), true
		fmt.Fprintf(b.log, "    system unchanged: reusing %s (%d MB)\n", p, st.Size()>>20)
	} else {
		n, err := squashfs.WriteFile(ctx, t, p, opts)
		if err != nil {
			return err
		}
		b.res.SquashfsSize = n
		fmt.Fprintf(b.log, "    %d files, %d MB uncompressed -> %d MB squashfs\n", t.Len(), t.TotalSize()>>20, n>>20)
	}
	sum, err := squashfsSHA256(p)
	if err != nil {
		return err
	}
	b.res.SquashfsSHA256 = sum
	return nil
}

// bootTree holds what both the disk's boot partition and the ISO carry.
func (b *builder) bootTree(k *kernelFiles, initrd, manifest, userData []byte) (*filetree.Tree, error) {
	t := filetree.New(b.epoch)
	vm := *k.vmlinuz
	vm.Path, vm.Mode = disk.KernelPath, 0o644
	for _, err := range []error{
		t.Add(vm),
		t.AddFile(disk.InitrdPath, 0o644, initrd),
		t.AddFile(disk.BuildJSONPath, 0o644, manifest),
		t.AddFile(disk.UserDataPath, 0o644, userData),
	} {
		if err != nil {
			return nil, err
		}
	}
	return t, nil
}

// seed derives GUIDs and serials from the content of everything that
// goes into an image, never from paths or times, so the same inputs give
// the same bytes on any machine.
func (b *builder) seed(boot *filetree.Tree) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%s|", b.board.Name, b.board.CmdlineString(), b.res.SquashfsSHA256)
	for _, e := range boot.Entries() {
		fmt.Fprintf(h, "%s %d %o|", e.Path, e.Kind, e.Mode)
		if e.Kind != filetree.File {
			continue
		}
		rc, err := e.Data.Open()
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil {
			return "", fmt.Errorf("hashing %s: %w", e.Path, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// squashfsSHA256 returns the content hash of the squashfs, kept beside it
// in the cache so a warm build does not read 80 MB again.
func squashfsSHA256(p string) (string, error) {
	side := p + ".sha256"
	if b, err := os.ReadFile(side); err == nil && len(b) == 64 {
		return string(b), nil
	}
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.WriteFile(side+".tmp", []byte(sum), 0o644); err == nil {
		os.Rename(side+".tmp", side)
	}
	return sum, nil
}

func (b *builder) writeRaw(ctx context.Context, out string, bt *filetree.Tree, bf *bootFiles, k *kernelFiles) error {
	seed, err := b.seed(bt)
	if err != nil {
		return err
	}
	// A block map left from an earlier build must not outlive its image.
	if err := os.Remove(bmap.PathFor(out)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if b.board.HasBootChain("rpi") {
		err = b.writeRPi(ctx, out, bt, bf, k, seed)
	} else {
		err = b.writeGPT(ctx, out, bt, bf, seed)
	}
	if err != nil {
		return err
	}
	// Beside the image, for `ballast flash` and `bmaptool copy`: the
	// ranges to write, the holes to skip.
	return bmap.WriteFor(out)
}

// dataSize is the size of BALLAST_DATA in the raw image: the board's
// RuntimeDataMiB when the image carries a runtime and the spec sets no
// image.size (an explicit size wins, and the placeholder grows into it),
// else 0, the small placeholder.
func (b *builder) dataSize() int64 {
	if b.spec.Image.Size != 0 || !b.hasRuntime() {
		return 0
	}
	return b.board.RuntimeDataMiB << 20
}

func (b *builder) writeGPT(ctx context.Context, out string, bt *filetree.Tree, bf *bootFiles, seed string) error {
	return disk.Write(ctx, out, disk.Layout{
		Boot:           bt,
		SystemA:        b.res.SquashfsPath,
		SlotSize:       int64(b.spec.Image.SlotSize),
		DataSize:       b.dataSize(),
		ImageSize:      int64(b.spec.Image.Size),
		Arch:           b.board.Arch,
		Cmdline:        b.board.CmdlineString(),
		SystemdBootEFI: bf.systemdBoot,
		GrubModulesDir: bf.grubModules,
		ModTime:        b.epoch,
		Seed:           seed,
	})
}

func (b *builder) writeISO(ctx context.Context, out string, bt *filetree.Tree, bf *bootFiles) error {
	seed, err := b.seed(bt)
	if err != nil {
		return err
	}
	return iso.Write(ctx, out, iso.Layout{
		Files:          bt,
		System:         b.res.SquashfsPath,
		Arch:           b.board.Arch,
		Cmdline:        b.board.CmdlineString(),
		SystemdBootEFI: bf.systemdBoot,
		GrubModulesDir: bf.grubModules,
		ModTime:        b.epoch,
		Seed:           seed,
	})
}

func defaultCloudConfig() []byte { return examples.DefaultCloudConfig }

// validateCloudConfig refuses to bake a config the init would reject:
// better a build error naming the line than a node on its last good config.
func validateCloudConfig(name string, data []byte) error {
	_, err := cloudconfig.Validate(name, data)
	return err
}

// writeInitramfs builds the initramfs in memory: the init, the modules
// that find the root, the baked cloud-config and the manifest.
func (b *builder) writeInitramfs(ctx context.Context, k *kernelFiles, initPath string, baked, manifest []byte) ([]byte, error) {
	src, err := filetree.NewHostFile(initPath)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	mods, err := initramfs.Write(ctx, &buf, initramfs.Spec{
		ModTime:       b.epoch,
		Init:          src,
		Kernel:        k.tree,
		KernelVersion: k.version,
		Modules:       b.board.InitramfsModules,
		BakedConfig:   baked,
		BuildInfo:     manifest,
	})
	if err != nil {
		return nil, err
	}
	b.res.InitrdSize = int64(buf.Len())
	fmt.Fprintf(b.log, "    %d modules, %d KB\n", len(mods), buf.Len()>>10)
	return buf.Bytes(), nil
}

// writeRPi writes the Raspberry Pi SD card image: MBR, the firmware's FAT
// partition first, then the slots and the data partition. The disk
// signature comes from the seed of everything else, and cmdline.txt names
// it for the init.
func (b *builder) writeRPi(ctx context.Context, out string, bt *filetree.Tree, bf *bootFiles, k *kernelFiles, seed string) error {
	sig := disk.Serial(seed, "mbr")
	if sig == 0 {
		sig = 1 // zero means "no signature" to every tool
	}
	fw := bf.firmware
	if fw == nil {
		fw = filetree.New(b.epoch)
	}
	if err := addRPiBootFiles(b.board, bt, fw, k.tree, k.version, sig); err != nil {
		return err
	}
	return disk.WriteMBR(ctx, out, disk.MBRLayout{
		Boot:      bt,
		SystemA:   b.res.SquashfsPath,
		SlotSize:  int64(b.spec.Image.SlotSize),
		DataSize:  b.dataSize(),
		ImageSize: int64(b.spec.Image.Size),
		Signature: sig,
		ModTime:   b.epoch,
		Seed:      seed,
	})
}
