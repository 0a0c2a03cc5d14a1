package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/componentimages"
	"github.com/ballast-os/ballast/imagebuild/debian"
	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// supply gives the builder the parts images are made of. Tests replace it
// with one that needs neither the network nor a compiler.
type supply interface {
	// program returns a Go program compiled for the architecture, and
	// what it was compiled from ("k8s.io/kubernetes v1.37.2").
	program(ctx context.Context, p program) ([]byte, string, error)
	// packages installs Debian packages, with what they depend on less
	// ignore, into a new tree with Debian's merged /usr.
	packages(ctx context.Context, names, ignore []string) (*installed, error)
	// upstream reads a file of the pinned k8s.io/kubernetes module
	// ("test/images/kitten/html/kitten.jpg").
	upstream(ctx context.Context, path string) ([]byte, error)
	// pause returns ballast's own pause image (package componentimages).
	pause(ctx context.Context) (ociimage.Image, error)
	// busybox returns a static busybox for the architecture, compiled
	// from upstream's source (busyboxbuild.go), and what it was built from.
	busybox(ctx context.Context) ([]byte, string, error)
}

// program is a Go main package compiled into an image.
type program struct {
	name string // its name in the cache
	// module is the folder of the ballast checkout whose go.mod pins it:
	// "conformance" or "runtime".
	module string
	pkg    string // the main package
	// provider is the module that holds pkg, named in Image.From.
	provider string
	// xflags are -X flags added to the ldflags.
	xflags string
}

// installed is a tree of Debian packages.
type installed struct {
	tree *filetree.Tree
	pkgs []debian.Package // the whole closure, by name
}

// versions says "name version" for each of names that is installed.
func (in *installed) versions(names ...string) string {
	var out []string
	for _, n := range names {
		for _, p := range in.pkgs {
			if p.Name == n {
				out = append(out, p.Name+" "+p.Version)
			}
		}
	}
	return strings.Join(out, ", ")
}

// excluded are paths no container image needs from a package: documents,
// translations, init systems' files, what only dpkg and other package
// managers read, and glibc's iconv modules (the tests' programs convert
// nothing).
var excluded = []string{
	"usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
	"usr/share/lintian", "usr/share/bug", "usr/share/doc-base", "usr/share/menu",
	"usr/share/bash-completion", "usr/share/zsh", "usr/share/fish", "usr/share/vim",
	"usr/share/apport", "usr/share/common-licenses",
	"usr/lib/x86_64-linux-gnu/gconv", "usr/lib/aarch64-linux-gnu/gconv",
	"usr/lib/systemd", "etc/systemd", "etc/init.d", "etc/rc0.d", "etc/rc1.d",
	"etc/rc2.d", "etc/rc3.d", "etc/rc4.d", "etc/rc5.d", "etc/rc6.d", "etc/rcS.d",
	"etc/cron.daily", "etc/cron.weekly", "etc/logrotate.d", "etc/ufw", "etc/update-motd.d",
	"etc/dpkg", "var/lib/dpkg",
}

func isExcluded(p string) bool {
	for _, pre := range excluded {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

// realSupply compiles programs in the ballast checkout's modules and takes
// packages from a Debian archive, caching both.
type realSupply struct {
	o       Options
	binDir  string
	archive *debian.Archive
	// programs already read in this build, by cache name: agnhost goes
	// into four images.
	programs  map[string][]byte
	modules   map[string]string // moduleVersion's answers, by folder and module
	goVersion string
	kubeDir   string // the pinned k8s.io/kubernetes module, once found
	// busyboxBin and busyboxFrom are busybox's answer, once given:
	// five images have it.
	busyboxBin  []byte
	busyboxFrom string
}

func newSupply(o Options) (*realSupply, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	s := &realSupply{o: o, binDir: filepath.Join(o.CacheDir, "conformanceimages", "bin"), archive: o.Debian,
		programs: map[string][]byte{}, modules: map[string]string{}}
	if err := os.MkdirAll(s.binDir, 0o755); err != nil {
		return nil, fmt.Errorf("conformance images: %w", err)
	}
	return s, nil
}

// goEnv is the environment of every go command: offline means the module
// cache alone.
func (s *realSupply) goEnv() []string {
	if s.o.Offline {
		return []string{"GOPROXY=off"}
	}
	return nil
}

func (s *realSupply) program(ctx context.Context, p program) ([]byte, string, error) {
	dir := filepath.Join(s.o.SourceDir, p.module)
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w (is Options.SourceDir the ballast checkout?)", p.pkg, err)
	}
	gosum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", p.pkg, err)
	}
	if s.goVersion == "" {
		if s.goVersion, err = componentimages.GoEnv(ctx, "GOVERSION"); err != nil {
			return nil, "", err
		}
	}
	from, err := s.moduleVersion(ctx, dir, p.provider)
	if err != nil {
		return nil, "", err
	}
	ldflags := strings.TrimSpace("-s -w -buildid= " + p.xflags)
	// The module's go.mod and go.sum pin every package that goes in; the
	// module cache holds them read-only by version.
	h := sha256.New()
	fmt.Fprintf(h, "ballast-conformanceimages-1\n%s\n%s\n%s\n%s\n-trimpath -ldflags=%q\n", p.name, p.pkg, s.o.Arch, s.goVersion, ldflags)
	fmt.Fprintf(h, "go.mod %d\n%s\ngo.sum %d\n%s\n", len(gomod), gomod, len(gosum), gosum)
	name := fmt.Sprintf("%s-%s-%s", p.name, s.o.Arch, hex.EncodeToString(h.Sum(nil))[:16])
	if data, ok := s.programs[name]; ok {
		return data, from, nil
	}
	path := filepath.Join(s.binDir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		tmp, err := os.MkdirTemp(s.binDir, "build-"+p.name+"-")
		if err != nil {
			return nil, "", err
		}
		defer os.RemoveAll(tmp)
		out := filepath.Join(tmp, p.name)
		if _, err := componentimages.GoCommand(ctx, s.o.Arch, dir, s.goEnv(), "build", "-mod=readonly", "-trimpath", "-buildvcs=false",
			"-ldflags", ldflags, "-o", out, p.pkg); err != nil {
			return nil, "", err
		}
		if data, err = os.ReadFile(out); err != nil {
			return nil, "", err
		}
		if err := componentimages.CheckELF(data, s.o.Arch); err != nil {
			return nil, "", fmt.Errorf("%s: %w", p.pkg, err)
		}
		if err := os.Rename(out, path); err != nil {
			return nil, "", err
		}
		componentimages.Prune(s.binDir, p.name+"-"+s.o.Arch+"-", "", name)
	} else if err := componentimages.CheckELF(data, s.o.Arch); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	s.programs[name] = data
	return data, from, nil
}

// goModule is what `go list -m -json` and `go mod download -json` say.
type goModule struct {
	Path, Version, Dir string
	Replace            *goModule
}

// moduleVersion says which version of modpath the module in dir builds
// with, replacements followed: "k8s.io/kubernetes v1.37.2".
func (s *realSupply) moduleVersion(ctx context.Context, dir, modpath string) (string, error) {
	key := dir + " " + modpath
	if v, ok := s.modules[key]; ok {
		return v, nil
	}
	out, err := componentimages.GoCommand(ctx, s.o.Arch, dir, s.goEnv(), "list", "-mod=readonly", "-m", "-json", modpath)
	if err != nil {
		return "", err
	}
	var m goModule
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go list -m %s: %w", modpath, err)
	}
	if m.Replace != nil {
		m = *m.Replace
	}
	s.modules[key] = m.Path + " " + m.Version
	return s.modules[key], nil
}

func (s *realSupply) upstream(ctx context.Context, p string) ([]byte, error) {
	if s.kubeDir == "" {
		out, err := componentimages.GoCommand(ctx, s.o.Arch, filepath.Join(s.o.SourceDir, "conformance"), s.goEnv(),
			"mod", "download", "-json", "k8s.io/kubernetes")
		if err != nil {
			return nil, err
		}
		var m goModule
		if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
			return nil, fmt.Errorf("go mod download k8s.io/kubernetes: no module directory in %q", out)
		}
		s.kubeDir = m.Dir
	}
	return os.ReadFile(filepath.Join(s.kubeDir, filepath.FromSlash(p)))
}

// debian returns the archive packages and sources come from, opening
// Debian's default on first use.
func (s *realSupply) debian(ctx context.Context) (*debian.Archive, error) {
	if s.archive == nil {
		a, err := debian.Open(ctx, debian.Config{Arch: s.o.Arch, CacheDir: s.o.CacheDir, Offline: s.o.Offline, Progress: s.o.Log})
		if err != nil {
			return nil, err
		}
		s.archive = a
	}
	if arch := s.archive.Config().Arch; arch != s.o.Arch {
		return nil, fmt.Errorf("Options.Debian is for %s, the images for %s", arch, s.o.Arch)
	}
	return s.archive, nil
}

func (s *realSupply) packages(ctx context.Context, names, ignore []string) (*installed, error) {
	if _, err := s.debian(ctx); err != nil {
		return nil, err
	}
	pkgs, err := s.archive.Resolve(ctx, names, s.o.Lock, debian.Ignoring(ignore...))
	if err != nil {
		return nil, err
	}
	t := filetree.New(created)
	if err := debian.MergedUsr(t, s.o.Arch); err != nil {
		return nil, err
	}
	if err := s.archive.Install(ctx, t, pkgs, debian.InstallOptions{Exclude: isExcluded}); err != nil {
		return nil, err
	}
	return &installed{tree: t, pkgs: pkgs}, nil
}

func (s *realSupply) pause(ctx context.Context) (ociimage.Image, error) {
	return componentimages.Describe(ctx, componentimages.Options{Arch: s.o.Arch, CacheDir: s.o.CacheDir}, "pause")
}
