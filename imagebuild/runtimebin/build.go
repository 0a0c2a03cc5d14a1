// Package runtimebin provides the Kubernetes runtime binaries an image
// carries: the ballast runtime compiled from the source tree's runtime/
// module (the multi-call k3s and the CNI plugins), or the official k3s
// release binary, downloaded and checked against its SHA-256.
//
// Both are cached: the compiled runtime by a hash of runtime/'s sources,
// the architecture and the Go version; the download by its checksum. An
// unchanged tree costs nothing.
package runtimebin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// Plugin is a CNI plugin compiled from a package pinned in runtime/tools.go.
type Plugin struct {
	Name    string // file name in the CNI bin dir
	Package string
}

// CNIPlugins are the plugins the image carries beside k3s
// (/usr/lib/ballast/cni/<name>): upstream's, and ballast's flannel plugin.
// Each is its own small executable: containerd runs them for every pod.
var CNIPlugins = []Plugin{
	{"flannel", runtimeModule + "/cni/flannel/cmd/flannel"},
	{"bridge", "github.com/containernetworking/plugins/plugins/main/bridge"},
	{"host-local", "github.com/containernetworking/plugins/plugins/ipam/host-local"},
	{"loopback", "github.com/containernetworking/plugins/plugins/main/loopback"},
	{"portmap", "github.com/containernetworking/plugins/plugins/meta/portmap"},
	{"bandwidth", "github.com/containernetworking/plugins/plugins/meta/bandwidth"},
	{"firewall", "github.com/containernetworking/plugins/plugins/meta/firewall"},
}

// Tools are executables the image carries beside k3s: the runc shim
// containerd starts for every pod, small and quick to start, and
// cri-tools' crictl (package main upstream), which k3s's crictl
// personality runs with its defaults.
var Tools = []Plugin{
	{"containerd-shim-runc-v2", "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"},
	{"crictl", "sigs.k8s.io/cri-tools/cmd/crictl"},
}

// Binary is one runtime executable on the build host.
type Binary struct {
	Name   string // "k3s", or the CNI plugin's name
	Path   string
	Size   int64
	SHA256 string
}

// Runtime is a runtime ready to be put into an image.
type Runtime struct {
	// K3s is the k3s binary (ballast's multi-call build or the official one).
	K3s Binary
	// CNI are the plugins (ballast runtime only), in CNIPlugins order.
	CNI []Binary
	// Tools are the executables for /usr/bin (ballast runtime only), in Tools order.
	Tools []Binary
	// Version: the ballast version stamped into a built runtime, or the
	// official release's version.
	Version string
	// Cached is true when nothing was built or downloaded.
	Cached bool
}

// BuildOptions are the inputs of Build.
type BuildOptions struct {
	// SourceDir is the ballast module root; the runtime is its runtime/.
	SourceDir string
	// Arch is Debian's (and Go's) architecture name: amd64, arm64.
	Arch string
	// Version is stamped as github.com/ballast-os/ballast/runtime/k3s.Version.
	Version string
	// CacheDir holds the built runtimes, one directory per key.
	CacheDir string
	// Log receives the progress lines; nil is quiet.
	Log io.Writer
	// Go is the go command; default: $GO, PATH, /usr/local/go/bin/go.
	Go string
	// Tick is how often a running build says it is still building
	// (default a minute).
	Tick time.Duration
	// Offline forbids module downloads (GOPROXY=off): the modules must be
	// in Go's module cache already.
	Offline bool
}

// runtimeModule is the nested module's path.
const runtimeModule = "github.com/ballast-os/ballast/runtime"

// Build compiles the ballast runtime for o.Arch, or returns the cached
// build of the same sources, architecture, version and Go toolchain.
func Build(ctx context.Context, o BuildOptions) (*Runtime, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Go == "" {
		o.Go = GoTool()
	}
	if o.Tick <= 0 {
		o.Tick = time.Minute
	}
	dir := filepath.Join(o.SourceDir, "runtime")
	src, err := SourceKey(dir)
	if err != nil {
		return nil, err
	}
	goVersion, err := toolVersion(ctx, o.Go, dir)
	if err != nil {
		return nil, err
	}
	key := cacheKey(src, o.Arch, o.Version, goVersion)
	out := filepath.Join(o.CacheDir, o.Arch+"-"+key[:32])
	if rt, err := load(out, o.Version); err == nil {
		rt.Cached = true
		now := time.Now()
		os.Chtimes(out, now, now) // recently used: kept by pruneBuilds
		fmt.Fprintf(o.Log, "    runtime unchanged: reusing %s (k3s %s)\n", out, humanize.IBytes(uint64(rt.K3s.Size)))
		return rt, nil
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(o.CacheDir, "build-*.tmp")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	pkgs := []string{"./cmd/k3s"}
	for _, p := range append(CNIPlugins[:len(CNIPlugins):len(CNIPlugins)], Tools...) {
		pkgs = append(pkgs, p.Package)
	}
	ldflags, err := versionLDFlags(dir, o.Version)
	if err != nil {
		return nil, err
	}
	// One go build for all: the packages compile in parallel, and -o into
	// a directory names each executable after its package's last element.
	args := []string{"build", "-trimpath", "-buildvcs=false",
		"-ldflags", ldflags,
		"-o", tmp + string(filepath.Separator)}
	args = append(args, pkgs...)
	name, args := Niced(o.Go, args)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	if o.Offline {
		cmd.Env = append(cmd.Env, "GOPROXY=off")
	}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log

	start := time.Now()
	fmt.Fprintf(o.Log, "    building the ballast runtime for %s in %s (a cold build compiles Kubernetes: about 10 minutes)\n", o.Arch, dir)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("building the runtime: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t := time.NewTicker(o.Tick)
	defer t.Stop()
	for err = nil; ; {
		select {
		case err = <-done:
		case <-t.C:
			fmt.Fprintf(o.Log, "    still building… %dm\n", int(time.Since(start).Minutes()+0.5))
			continue
		}
		break
	}
	if err != nil {
		return nil, fmt.Errorf("building the runtime for %s (go build %s in %s): %w\n%s", o.Arch, strings.Join(pkgs, " "), dir, err, log.String())
	}
	rt, err := load(tmp, o.Version)
	if err != nil {
		return nil, fmt.Errorf("building the runtime: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		// Another build of the same key finished first: use it.
		if rt2, err2 := load(out, o.Version); err2 == nil {
			rt = rt2
		} else {
			return nil, fmt.Errorf("caching the runtime: %w", err)
		}
	} else if rt, err = load(out, o.Version); err != nil {
		return nil, err
	}
	pruneBuilds(o.CacheDir, o.Arch, keepBuilds, time.Hour)
	fmt.Fprintf(o.Log, "    built the runtime in %s: k3s %s, %d CNI plugins %s\n",
		time.Since(start).Round(time.Second), humanize.IBytes(uint64(rt.K3s.Size)), len(rt.CNI), humanize.IBytes(uint64(cniSize(rt))))
	return rt, nil
}

func cniSize(rt *Runtime) int64 {
	var n int64
	for _, b := range rt.CNI {
		n += b.Size
	}
	return n
}

// load describes a finished build directory; an error means it is absent
// or incomplete.
func load(dir, version string) (*Runtime, error) {
	k, err := describe(filepath.Join(dir, "k3s"), "k3s")
	if err != nil {
		return nil, err
	}
	rt := &Runtime{K3s: k, Version: version}
	for _, p := range CNIPlugins {
		b, err := describe(filepath.Join(dir, p.Name), p.Name)
		if err != nil {
			return nil, err
		}
		rt.CNI = append(rt.CNI, b)
	}
	for _, p := range Tools {
		b, err := describe(filepath.Join(dir, p.Name), p.Name)
		if err != nil {
			return nil, err
		}
		rt.Tools = append(rt.Tools, b)
	}
	return rt, nil
}

// versionLDFlags stamps the versions into the binaries: ballast's own,
// and Kubernetes' and containerd's from runtime/go.mod, which upstream
// sets from git at release time (without them the kubelet registers as
// v0.0.0-master and the API server reports that too).
func versionLDFlags(dir, version string) (string, error) {
	gomod := filepath.Join(dir, "go.mod")
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("runtime versions: %w", err)
	}
	mods := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "require "))
		if len(f) >= 2 && strings.HasPrefix(f[1], "v") {
			mods[f[0]] = f[1]
		}
	}
	flags := []string{"-s", "-w", "-buildid=", "-X", runtimeModule + "/k3s.Version=" + version}
	kv := mods["k8s.io/kubernetes"]
	maj, min, ok := strings.Cut(strings.TrimPrefix(kv, "v"), ".")
	if !ok {
		return "", fmt.Errorf("%s: no k8s.io/kubernetes version", gomod)
	}
	min, _, _ = strings.Cut(min, ".")
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X", pkg+".gitVersion="+kv,
			"-X", pkg+".gitMajor="+maj,
			"-X", pkg+".gitMinor="+min,
			"-X", pkg+".gitTreeState=clean")
	}
	if cv, ok := mods["sigs.k8s.io/cri-tools"]; ok {
		flags = append(flags, "-X", "sigs.k8s.io/cri-tools/pkg/version.Version="+cv)
	}
	if cv, ok := mods["github.com/containerd/containerd/v2"]; ok {
		flags = append(flags, "-X", "github.com/containerd/containerd/v2/version.Version="+strings.TrimPrefix(cv, "v"))
	}
	return strings.Join(flags, " "), nil
}

// describe hashes a binary, once: the sum is kept beside it (<path>.sha256)
// so a warm build does not read 150 MB again.
func describe(path, name string) (Binary, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Binary{}, err
	}
	if !st.Mode().IsRegular() {
		return Binary{}, fmt.Errorf("%s is not a regular file", path)
	}
	b := Binary{Name: name, Path: path, Size: st.Size()}
	if s, err := os.ReadFile(path + ".sha256"); err == nil && sha256RE(string(s)) {
		b.SHA256 = string(s)
		return b, nil
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return Binary{}, err
	}
	b.SHA256 = sum
	if err := os.WriteFile(path+".sha256", []byte(sum), 0o644); err != nil {
		return Binary{}, err
	}
	return b, nil
}

func sha256RE(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func cacheKey(src, arch, version, goVersion string) string {
	h := sha256.New()
	fmt.Fprintf(h, "ballast runtime\nsources %s\narch %s\nversion %s\ngo %s\n", src, arch, version, goVersion)
	for _, p := range CNIPlugins {
		fmt.Fprintf(h, "cni %s %s\n", p.Name, p.Package)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SourceKey hashes what the runtime binary is built from: every file of
// the runtime module (go.mod, go.sum, Go sources, files they embed) except
// tests (*_test.go, testdata/), documentation (*.md) and dot files. A
// change elsewhere, or to a test, keeps the cached build.
func SourceKey(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("runtime sources: %w", err)
	}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != dir && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if name == "testdata" {
				return filepath.SkipDir
			}
			if p != dir {
				// A nested module is not part of this one.
				if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasSuffix(name, "_test.go") || strings.HasSuffix(name, ".md") {
			return nil
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("runtime sources: %w", err)
	}
	sort.Strings(files)
	h := sha256.New()
	for _, p := range files {
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("runtime sources: %w", err)
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(h, "%s %x\n", filepath.ToSlash(rel), sum)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// toolVersion is `go env GOVERSION`: a toolchain change invalidates the cache.
// It runs in the runtime module, whose go line may select another toolchain.
func toolVersion(ctx context.Context, goCmd, dir string) (string, error) {
	cmd := exec.CommandContext(ctx, goCmd, "env", "GOVERSION")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s env GOVERSION: %w\n%s", goCmd, err, ee.Stderr)
		}
		return "", fmt.Errorf("the runtime is built with Go, and %s does not run: %w", goCmd, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Niced runs a build at a lower priority: compiling Kubernetes takes
// every core for minutes.
func Niced(name string, args []string) (string, []string) {
	if n, err := exec.LookPath("nice"); err == nil {
		return n, append([]string{"-n", "10", name}, args...)
	}
	return name, args
}

// GoTool finds the go command: $GO, PATH, or the usual install location.
func GoTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// keepBuilds is how many runtime builds per architecture the cache keeps:
// each is about 225 MB, and every change to runtime/ makes a new one.
const keepBuilds = 3

// pruneBuilds removes dir's <arch>-<key> builds beyond the keep most
// recently used, leaving any used within minAge (another build may be
// reading it).
func pruneBuilds(dir, arch string, keep int, minAge time.Duration) {
	PruneDirs(dir, keep, minAge, func(name string) bool {
		key, ok := strings.CutPrefix(name, arch+"-")
		return ok && !strings.Contains(key, "-") && !strings.HasSuffix(key, ".tmp")
	})
}

// PruneDirs removes the directories of dir whose names match beyond the
// keep most recently used (by mtime: a cache touches what it reuses),
// leaving any used within minAge (another build may be reading it).
func PruneDirs(dir string, keep int, minAge time.Duration, match func(name string) bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type build struct {
		path string
		used time.Time
	}
	var builds []build
	for _, e := range ents {
		if !e.IsDir() || !match(e.Name()) {
			continue
		}
		if fi, err := e.Info(); err == nil {
			builds = append(builds, build{filepath.Join(dir, e.Name()), fi.ModTime()})
		}
	}
	sort.Slice(builds, func(i, j int) bool { return builds[i].used.After(builds[j].used) })
	for i, b := range builds {
		if i >= keep && time.Since(b.used) > minAge {
			os.RemoveAll(b.path)
		}
	}
}
