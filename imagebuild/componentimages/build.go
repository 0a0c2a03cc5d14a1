package componentimages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ballast-os/ballast/imagebuild/ociimage"
	"github.com/ballast-os/ballast/imagebuild/runtimebin"
	"github.com/ballast-os/ballast/images"
	"github.com/dustin/go-humanize"
)

// elfMachines are the supported architectures and the ELF machine their
// binaries must have.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// ldflags strip symbols and the build ID so the same source gives the same
// binary.
const ldflags = "-s -w -buildid="

// archiveFormat is part of every archive's cache key: change it when the
// layout code changes what it writes for the same inputs. It names the
// klauspost/compress version whose zstd encoder writes the layers (a new
// encoder may write other bytes); a test holds it to go.mod.
const archiveFormat = "ballast-componentimages-2 zstd github.com/klauspost/compress v1.20.4"

type builder struct {
	opts      Options
	dir       string
	log       io.Writer
	goVersion string // of the go command, "" until asked
}

func (b *builder) image(ctx context.Context, c component) (Image, error) {
	start := time.Now()
	bins, built, err := b.binaries(ctx, c)
	if err != nil {
		return Image{}, err
	}
	img, err := b.layout(c, bins)
	if err != nil {
		return Image{}, err
	}
	name := fmt.Sprintf("%s-%s-%s.tar", c.name, b.opts.Arch, ImageKey(img))
	p := filepath.Join(b.dir, name)
	if _, err := os.Stat(p); err != nil {
		if err := ociimage.WriteFile(p, img); err != nil {
			return Image{}, err
		}
		built = true
		Prune(b.dir, c.name+"-"+b.opts.Arch+"-", ".tar", name)
	}
	what := "reused"
	if built {
		what = "built in " + time.Since(start).Round(100*time.Millisecond).String()
	}
	if st, err := os.Stat(p); err == nil {
		fmt.Fprintf(b.log, "image %s (%s): %s, %s\n", c.ref, b.opts.Arch, what, humanize.IBytes(uint64(st.Size())))
	}
	return Image{Name: c.name, Ref: c.ref, Path: p}, nil
}

// binaries returns the image's programs, its own first then its tools,
// and whether any had to be compiled.
func (b *builder) binaries(ctx context.Context, c component) ([][]byte, bool, error) {
	var bins [][]byte
	built := false
	for _, p := range append([]component{c}, c.tools...) {
		bin, compiled, err := b.binary(ctx, p)
		if err != nil {
			return nil, false, err
		}
		bins = append(bins, bin)
		built = built || compiled
	}
	return bins, built, nil
}

// binary returns the program's bytes for the image and whether it had to
// be compiled.
func (b *builder) binary(ctx context.Context, c component) ([]byte, bool, error) {
	if c.name == "busybox" {
		if err := CheckELF(b.opts.Busybox, b.opts.Arch); err != nil {
			return nil, false, fmt.Errorf("Options.Busybox: %w", err)
		}
		return b.opts.Busybox, false, nil
	}
	gover, err := b.goVer(ctx)
	if err != nil {
		return nil, false, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\nCGO_ENABLED=0 -trimpath -ldflags=%q\n", c.name, b.opts.Arch, gover, ldflags)
	var src map[string][]byte
	if c.source != "" {
		if src, err = sources(c.source); err != nil {
			return nil, false, err
		}
		for _, n := range sortedKeys(src) {
			fmt.Fprintf(h, "%s %d\n", n, len(src[n]))
			h.Write(src[n])
		}
	} else {
		fmt.Fprintf(h, "%s@%s\n", c.pkg, c.version)
	}
	if len(c.plugins) > 0 {
		fmt.Fprintf(h, "plugins %q\n", c.plugins)
	}
	if c.module != "" {
		fmt.Fprintf(h, "in module %s\n", c.module)
	}
	name := fmt.Sprintf("%s-%s-%s", c.name, b.opts.Arch, hex.EncodeToString(h.Sum(nil))[:16])
	p := filepath.Join(b.dir, "bin", name)
	if data, err := os.ReadFile(p); err == nil {
		return data, false, CheckELF(data, b.opts.Arch)
	}

	tmp, err := os.MkdirTemp(b.dir, "build-"+c.name+"-")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(tmp)
	var out string
	switch {
	case c.source != "":
		out, err = b.goBuild(ctx, tmp, c, src)
	case len(c.plugins) > 0 || c.module != "":
		out, err = b.goBuildInModule(ctx, tmp, c)
	default:
		out, err = b.goInstall(ctx, tmp, c)
	}
	if err != nil {
		return nil, false, err
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, false, err
	}
	if err := CheckELF(data, b.opts.Arch); err != nil {
		return nil, false, fmt.Errorf("%s: %w", out, err)
	}
	if err := os.Rename(out, p); err != nil {
		return nil, false, err
	}
	Prune(filepath.Join(b.dir, "bin"), c.name+"-"+b.opts.Arch+"-", "", name)
	return data, true, nil
}

// goBuild compiles one of ballast's own programs from its embedded source
// in a throw-away module of its own (they use the standard library only).
func (b *builder) goBuild(ctx context.Context, tmp string, c component, src map[string][]byte) (string, error) {
	srcDir := filepath.Join(tmp, "src")
	if err := os.Mkdir(srcDir, 0o755); err != nil {
		return "", err
	}
	src["go.mod"] = []byte("module github.com/ballast-os/ballast/images/" + c.source + "\n\ngo 1.25\n")
	for n, data := range src {
		if err := os.WriteFile(filepath.Join(srcDir, n), data, 0o644); err != nil {
			return "", err
		}
	}
	out := filepath.Join(tmp, c.name)
	err := b.goCmd(ctx, srcDir, nil, "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, ".")
	return out, err
}

// goInstall compiles an upstream program with `go install pkg@version`
// into a private GOPATH, sharing the module and build caches.
func (b *builder) goInstall(ctx context.Context, tmp string, c component) (string, error) {
	modcache, err := b.goEnv(ctx, "GOMODCACHE")
	if err != nil {
		return "", err
	}
	gopath := filepath.Join(tmp, "gopath")
	env := []string{"GOPATH=" + gopath, "GOMODCACHE=" + modcache}
	if err := b.goCmd(ctx, tmp, env, "install", "-trimpath", "-ldflags", ldflags, c.pkg+"@"+c.version); err != nil {
		return "", err
	}
	// go install refuses GOBIN when cross-compiling and puts the binary
	// in bin/<goos>_<goarch>/ instead.
	base := path.Base(c.pkg)
	for _, p := range []string{
		filepath.Join(gopath, "bin", "linux_"+b.opts.Arch, base),
		filepath.Join(gopath, "bin", base),
	} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("go install %s@%s left no %s under %s/bin", c.pkg, c.version, base, gopath)
}

// goCmd runs the go command for the target, niced: these compiles are big
// and the build machine may be shared.
func (b *builder) goCmd(ctx context.Context, dir string, env []string, args ...string) error {
	_, err := b.goOutput(ctx, dir, env, args...)
	return err
}

// goOutput is goCmd returning the command's standard output.
func (b *builder) goOutput(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	return GoCommand(ctx, b.opts.Arch, dir, env, args...)
}

// GoCommand runs the go command in dir for a static linux/arch program
// (CGO_ENABLED=0, no GOFLAGS, no workspace, the local toolchain), niced:
// these compiles are big and the build machine may be shared. env is added
// to the environment; it returns the command's standard output.
func GoCommand(ctx context.Context, arch, dir string, env []string, args ...string) ([]byte, error) {
	argv := append([]string{runtimebin.GoTool()}, args...)
	if nice, err := exec.LookPath("nice"); err == nil {
		argv = append([]string{nice, "-n", "10"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch,
		"GOBIN=", "GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
	cmd.Env = append(cmd.Env, env...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go %s (GOARCH=%s, in %s): %w\n%s%s", strings.Join(args, " "), arch, dir, err, out.String(), stderr.String())
	}
	return out.Bytes(), nil
}

func (b *builder) goVer(ctx context.Context) (string, error) {
	if b.goVersion == "" {
		v, err := GoEnv(ctx, "GOVERSION")
		if err != nil {
			return "", err
		}
		b.goVersion = v
	}
	return b.goVersion, nil
}

func (b *builder) goEnv(ctx context.Context, key string) (string, error) {
	return GoEnv(ctx, key)
}

// GoEnv returns `go env key` of the go command GoCommand runs; an empty
// value is an error.
func GoEnv(ctx context.Context, key string) (string, error) {
	cmd := exec.CommandContext(ctx, runtimebin.GoTool(), "env", key)
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", key, err)
	}
	v := strings.TrimSpace(string(out))
	if v == "" {
		return "", fmt.Errorf("go env %s is empty", key)
	}
	return v, nil
}

// sources returns the non-test .go files of one program in images.Sources.
func sources(dir string) (map[string][]byte, error) {
	ents, err := fs.ReadDir(images.Sources, dir)
	if err != nil {
		return nil, fmt.Errorf("embedded source %s: %w", dir, err)
	}
	src := map[string][]byte{}
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		data, err := fs.ReadFile(images.Sources, dir+"/"+n)
		if err != nil {
			return nil, err
		}
		src[n] = data
	}
	if len(src) == 0 {
		return nil, fmt.Errorf("embedded source %s: no .go files", dir)
	}
	return src, nil
}

// CheckELF makes sure a binary is a static ELF executable for arch
// ("amd64" or "arm64").
func CheckELF(data []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an ELF binary: %w", err)
	}
	if want := elfMachines[arch]; f.Machine != want {
		return fmt.Errorf("ELF machine %v, want %v for %s", f.Machine, want, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dynamically linked (has an ELF interpreter); the image has no libc")
		}
	}
	return nil
}

// layout lists the image's files and config; bins are the programs, as
// binaries returns them.
func (b *builder) layout(c component, bins [][]byte) (ociimage.Image, error) {
	cfg := c.config
	cfg.Env = append([]string{defaultPath}, cfg.Env...)
	entries := []ociimage.Entry{
		// Programs write temporary files (metrics-server's
		// --cert-dir=/tmp); an emptyDir may be mounted over it.
		{Path: "tmp", Type: ociimage.Dir, Mode: 0o777 | fs.ModeSticky},
		// Numeric users need no passwd entry, but tools that look a
		// user up (id, Go's os/user) find the ones the images run as.
		{Path: "etc/passwd", Type: ociimage.File, Mode: 0o644, Data: []byte(
			"root:x:0:0:root:/root:/bin/sh\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{Path: "etc/group", Type: ociimage.File, Mode: 0o644, Data: []byte(
			"root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n")},
	}
	bf := ociimage.Entry{Path: strings.TrimPrefix(c.binary, "/"), Type: ociimage.File, Mode: 0o755, Data: bins[0]}
	if len(c.caps) > 0 {
		bf.Xattrs = map[string]string{ociimage.XattrCapability: ociimage.FileCapabilities(c.caps...)}
	}
	entries = append(entries, bf)
	for i, t := range c.tools {
		entries = append(entries, ociimage.Entry{Path: strings.TrimPrefix(t.binary, "/"), Type: ociimage.File, Mode: 0o755, Data: bins[i+1]})
	}
	switch c.name {
	case "busybox":
		for _, a := range busyboxApplets {
			entries = append(entries, ociimage.Entry{Path: "bin/" + a, Type: ociimage.Symlink, Target: "busybox"})
		}
		entries = append(entries, ociimage.Entry{Path: "root", Type: ociimage.Dir, Mode: 0o700})
	case "klipper-helm":
		// helm's home; the job mounts emptyDirs over .helm, .cache
		// and .config.
		for _, d := range []string{"home/klipper-helm", "home/klipper-helm/.helm", "home/klipper-helm/.cache", "home/klipper-helm/.config"} {
			entries = append(entries, ociimage.Entry{Path: d, Type: ociimage.Dir, Mode: 0o755, UID: 1000, GID: 1000})
		}
	case "testserver":
		entries = append(entries, ociimage.Entry{Path: "data", Type: ociimage.Dir, Mode: 0o755, UID: 65532, GID: 65532})
	}
	return ociimage.Image{
		Ref:          c.ref,
		Architecture: b.opts.Arch,
		Config:       cfg,
		Created:      created,
		Entries:      entries,
		// The archives sit in the squashfs as they are (compressed
		// layers do not shrink further): zstd makes them about 15%
		// smaller than gzip, and containerd unpacks it faster.
		Compression: ociimage.Zstd,
	}, nil
}

// ImageKey identifies an archive by everything that goes into it: the
// image description with each file's content replaced by its hash, the
// archive format and the version of the zstd encoder that compresses the
// layer. Archives are cached under names that carry it.
func ImageKey(img ociimage.Image) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", archiveFormat)
	ents := slices.Clone(img.Entries)
	for i := range ents {
		sum := sha256.Sum256(ents[i].Data)
		ents[i].Data = sum[:]
	}
	img.Entries = ents
	// json.Marshal cannot fail on these plain types.
	data, _ := json.Marshal(img)
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Prune removes dir/<prefix><key><suffix> other than keep, where key has
// no '-': older builds of the same image and architecture.
func Prune(dir, prefix, suffix, keep string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if n != keep && !e.IsDir() && strings.HasPrefix(n, prefix) && strings.HasSuffix(n, suffix) &&
			!strings.Contains(strings.TrimPrefix(n, prefix), "-") {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
