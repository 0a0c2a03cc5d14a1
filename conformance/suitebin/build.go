// Package suitebin provides the programs that run the upstream Kubernetes
// conformance suite from this machine: e2e.test (the suite itself,
// go test -c k8s.io/kubernetes/test/e2e), kubectl (which many tests call) and
// ginkgo's CLI (which runs e2e.test on several processes), compiled for the
// host from the conformance module at exactly the versions its go.mod pins.
//
// The build is cached under the user cache dir by a hash of go.mod, go.sum
// and the Go toolchain: an unchanged module costs nothing, a cold e2e.test
// build compiles most of Kubernetes (10+ minutes on two cores).
package suitebin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ballast-os/ballast/imagebuild/runtimebin"
)

// Program is one executable the suite needs, built from a package the
// conformance module pins (tools.go).
type Program struct {
	Name    string // file name in the build directory
	Package string
	// Test: the package's test binary (go test -c), not a command.
	Test bool
	// Note says, when the build starts, what to expect.
	Note string
}

// Programs are built in this order: e2e.test first, it takes the longest
// and most builds that fail, fail there.
var Programs = []Program{
	{Name: "e2e.test", Package: "k8s.io/kubernetes/test/e2e", Test: true,
		Note: "a cold build compiles most of Kubernetes: 10+ minutes on 2 cores"},
	{Name: "kubectl", Package: "k8s.io/kubernetes/cmd/kubectl"},
	{Name: "ginkgo", Package: "github.com/onsi/ginkgo/v2/ginkgo"},
}

// ModulePath is the conformance module's path.
const ModulePath = "github.com/ballast-os/ballast/conformance"

// recipe changes whenever the way a build is made changes (flags,
// programs), so an old cache entry is not taken for a new one.
const recipe = "2"

// Binary is one built executable.
type Binary struct {
	Name string
	Path string
	Size int64
}

// Suite is a complete build: every Program, in one directory.
type Suite struct {
	Dir string
	// Binaries, in Programs order.
	Binaries []Binary
	// KubernetesVersion is the k8s.io/kubernetes version go.mod pins,
	// stamped into e2e.test and kubectl.
	KubernetesVersion string
	// Cached is true when nothing was compiled.
	Cached bool
}

// Path returns the built executable called name ("e2e.test", "kubectl",
// "ginkgo"), or "" when the suite has none.
func (s *Suite) Path(name string) string {
	for _, b := range s.Binaries {
		if b.Name == name {
			return b.Path
		}
	}
	return ""
}

// BuildOptions are the inputs of Build.
type BuildOptions struct {
	// ModuleDir is the conformance module (the directory of its go.mod).
	ModuleDir string
	// CacheDir holds the builds, one directory per key; see DefaultCacheDir.
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

// DefaultCacheDir is $XDG_CACHE_HOME/ballast/conformance (or the platform's
// user cache dir).
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no user cache dir for the conformance build: %w", err)
	}
	return filepath.Join(d, "ballast", "conformance"), nil
}

// Build compiles the suite's programs for the host, or returns the cached
// build of the same go.mod, go.sum and Go toolchain.
func Build(ctx context.Context, o BuildOptions) (*Suite, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Go == "" {
		o.Go = runtimebin.GoTool()
	}
	if o.Tick <= 0 {
		o.Tick = time.Minute
	}
	gomod, err := os.ReadFile(filepath.Join(o.ModuleDir, "go.mod"))
	if err != nil {
		return nil, fmt.Errorf("the conformance module: %w", err)
	}
	gosum, err := os.ReadFile(filepath.Join(o.ModuleDir, "go.sum"))
	if err != nil {
		return nil, fmt.Errorf("the conformance module: %w", err)
	}
	kubeVersion := ModuleVersion(gomod, "k8s.io/kubernetes")
	if kubeVersion == "" {
		return nil, fmt.Errorf("%s: no k8s.io/kubernetes version", filepath.Join(o.ModuleDir, "go.mod"))
	}
	toolchain, err := goEnv(ctx, o.Go, o.ModuleDir, "GOVERSION", "GOOS", "GOARCH")
	if err != nil {
		return nil, err
	}
	key := CacheKey(gomod, gosum, strings.Join(toolchain, " "))
	out := filepath.Join(o.CacheDir, key[:32])

	if s, err := load(out, kubeVersion); err == nil {
		s.Cached = true
		now := time.Now()
		os.Chtimes(out, now, now) // recently used: kept by pruneBuilds
		for _, b := range s.Binaries {
			fmt.Fprintf(o.Log, "    %s unchanged: reusing %s (%s)\n", b.Name, b.Path, Size(b.Size))
		}
		return s, nil
	}

	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(o.CacheDir, "build-*.tmp")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	ldflags := versionLDFlags(kubeVersion)
	for _, p := range Programs {
		if err := buildProgram(ctx, o, p, ldflags, filepath.Join(tmp, p.Name)); err != nil {
			return nil, err
		}
	}
	s, err := load(tmp, kubeVersion)
	if err != nil {
		return nil, fmt.Errorf("building the conformance suite: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		// Another build of the same key finished first: use it.
		if s2, err2 := load(out, kubeVersion); err2 == nil {
			return s2, nil
		}
		return nil, fmt.Errorf("caching the conformance suite: %w", err)
	}
	if s, err = load(out, kubeVersion); err != nil {
		return nil, err
	}
	pruneBuilds(o.CacheDir, keepBuilds, time.Hour)
	return s, nil
}

// buildProgram compiles one program to dst, saying every Tick that it is
// still at it.
func buildProgram(ctx context.Context, o BuildOptions, p Program, ldflags, dst string) error {
	verb := "build"
	if p.Test {
		verb = "test"
	}
	args := []string{verb}
	if p.Test {
		args = append(args, "-c")
	}
	// -trimpath and no VCS stamp: the binary does not depend on where the
	// checkout is, so two checkouts share the cache key honestly.
	args = append(args, "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", dst, p.Package)
	name, args := runtimebin.Niced(o.Go, args)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = o.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o.Offline {
		cmd.Env = append(cmd.Env, "GOPROXY=off")
	}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log

	start := time.Now()
	note := ""
	if p.Note != "" {
		note = " (" + p.Note + ")"
	}
	fmt.Fprintf(o.Log, "    building %s from %s%s\n", p.Name, p.Package, note)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("building %s: %w", p.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t := time.NewTicker(o.Tick)
	defer t.Stop()
	var err error
	for waiting := true; waiting; {
		select {
		case err = <-done:
			waiting = false
		case <-t.C:
			fmt.Fprintf(o.Log, "    still building… %dm\n", int(time.Since(start).Minutes()+0.5))
		}
	}
	if err != nil {
		return fmt.Errorf("building %s (go %s in %s): %w\n%s", p.Name, strings.Join(args, " "), o.ModuleDir, err, log.String())
	}
	st, err := os.Stat(dst)
	if err != nil {
		return fmt.Errorf("building %s: %w", p.Name, err)
	}
	fmt.Fprintf(o.Log, "    built %s: %s in %s\n", p.Name, Size(st.Size()), time.Since(start).Round(time.Second))
	return nil
}

// load describes a finished build directory; an error means it is absent
// or incomplete.
func load(dir, kubeVersion string) (*Suite, error) {
	s := &Suite{Dir: dir, KubernetesVersion: kubeVersion}
	for _, p := range Programs {
		path := filepath.Join(dir, p.Name)
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() || st.Mode().Perm()&0o100 == 0 {
			return nil, fmt.Errorf("%s is not an executable file", path)
		}
		s.Binaries = append(s.Binaries, Binary{Name: p.Name, Path: path, Size: st.Size()})
	}
	return s, nil
}

// CacheKey names a build: what go.mod and go.sum pin, and the toolchain
// that compiles it (`go env GOVERSION GOOS GOARCH`). The sources of the
// pinned modules are immutable, so these are all the inputs there are.
func CacheKey(gomod, gosum []byte, toolchain string) string {
	h := sha256.New()
	fmt.Fprintf(h, "ballast conformance suite\nrecipe %s\ngo.mod %x\ngo.sum %x\ngo %s\n",
		recipe, sha256.Sum256(gomod), sha256.Sum256(gosum), toolchain)
	for _, p := range Programs {
		fmt.Fprintf(h, "program %s %s %t\n", p.Name, p.Package, p.Test)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ModuleVersion returns the version go.mod requires of module path, or "".
func ModuleVersion(gomod []byte, path string) string {
	for _, l := range strings.Split(string(gomod), "\n") {
		l, _, _ = strings.Cut(l, "//")
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "require "))
		if len(f) == 2 && f[0] == path && strings.HasPrefix(f[1], "v") {
			return f[1]
		}
	}
	return ""
}

// versionLDFlags stamps the Kubernetes version into e2e.test and kubectl,
// which upstream sets from git at release time: without it `kubectl
// version` says v0.0.0-master, and so do the suite's own reports.
func versionLDFlags(kubeVersion string) string {
	flags := []string{"-s", "-w"}
	major, minor, _ := strings.Cut(strings.TrimPrefix(kubeVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X", pkg+".gitVersion="+kubeVersion,
			"-X", pkg+".gitMajor="+major,
			"-X", pkg+".gitMinor="+minor,
			"-X", pkg+".gitTreeState=clean")
	}
	return strings.Join(flags, " ")
}

// goEnv runs `go env NAME...` in dir (whose go line may select another
// toolchain) and returns the values in order.
func goEnv(ctx context.Context, goCmd, dir string, names ...string) ([]string, error) {
	cmd := exec.CommandContext(ctx, goCmd, append([]string{"env"}, names...)...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s env: %w\n%s", goCmd, err, ee.Stderr)
		}
		return nil, fmt.Errorf("the conformance suite is built with Go, and %s does not run: %w", goCmd, err)
	}
	vals := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(vals) != len(names) {
		return nil, fmt.Errorf("%s env %s: unexpected output %q", goCmd, strings.Join(names, " "), out)
	}
	return vals, nil
}

// keepBuilds is how many builds the cache keeps: each is about 250 MB
// (e2e.test alone is most of it), and every change to go.mod makes a new one.
const keepBuilds = 3

// pruneBuilds removes dir's builds beyond the keep most recently used,
// leaving any used within minAge (another run may be reading it).
func pruneBuilds(dir string, keep int, minAge time.Duration) {
	runtimebin.PruneDirs(dir, keep, minAge, isKeyName)
}

// isKeyName reports whether name is a build directory's: 32 hex digits.
func isKeyName(name string) bool {
	if len(name) != 32 {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil && strings.ToLower(name) == name
}

// Size formats a byte count for people: "152.3 MiB".
func Size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGT"[i])
}
