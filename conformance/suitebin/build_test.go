package suitebin

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/runtimebin"
)

func TestCacheKey(t *testing.T) {
	gomod := []byte("module " + ModulePath + "\n\nrequire k8s.io/kubernetes v1.37.2\n")
	gosum := []byte("k8s.io/kubernetes v1.37.2 h1:abc=\n")
	tc := "go1.26.8 linux amd64"
	key := CacheKey(gomod, gosum, tc)
	if len(key) != 64 || !isKeyName(key[:32]) {
		t.Fatalf("key %q is not 64 hex digits", key)
	}
	if again := CacheKey(gomod, gosum, tc); again != key {
		t.Errorf("same inputs, different keys: %s, %s", key, again)
	}
	for name, other := range map[string]string{
		"go.mod":    CacheKey(append(gomod, '\n'), gosum, tc),
		"go.sum":    CacheKey(gomod, []byte("k8s.io/kubernetes v1.37.2 h1:abd=\n"), tc),
		"toolchain": CacheKey(gomod, gosum, "go1.26.9 linux amd64"),
		"arch":      CacheKey(gomod, gosum, "go1.26.8 linux arm64"),
	} {
		if other == key {
			t.Errorf("a change of %s keeps the key", name)
		}
	}
}

func TestModuleVersion(t *testing.T) {
	gomod := []byte(`module github.com/ballast-os/ballast/conformance

go 1.26.8

require (
	github.com/onsi/ginkgo/v2 v2.32.0
	k8s.io/kubernetes v1.37.2 // the runtime's
)

require k8s.io/api v0.37.2 // indirect

replace k8s.io/api => k8s.io/api v0.37.2
`)
	for path, want := range map[string]string{
		"k8s.io/kubernetes":         "v1.37.2",
		"github.com/onsi/ginkgo/v2": "v2.32.0",
		"k8s.io/api":                "v0.37.2",
		"k8s.io/missing":            "",
	} {
		if got := ModuleVersion(gomod, path); got != want {
			t.Errorf("ModuleVersion(%s) = %q, want %q", path, got, want)
		}
	}
}

func TestVersionLDFlags(t *testing.T) {
	f := versionLDFlags("v1.37.2")
	for _, want := range []string{
		"-X k8s.io/component-base/version.gitVersion=v1.37.2",
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=37",
		"-X k8s.io/client-go/pkg/version.gitVersion=v1.37.2",
	} {
		if !strings.Contains(f, want) {
			t.Errorf("ldflags %q lack %q", f, want)
		}
	}
}

// fakeModule writes a conformance module's go.mod and go.sum.
func fakeModule(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "go.mod"), "module "+ModulePath+"\n\ngo 1.26\n\nrequire k8s.io/kubernetes v1.37.2\n")
	write(t, filepath.Join(dir, "go.sum"), "")
	return dir
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
}

// A build whose key is in the cache is reused without compiling: the
// programs here are shell scripts, which no go build would make.
func TestBuildReusesCache(t *testing.T) {
	mod := fakeModule(t)
	cache := t.TempDir()
	ctx := context.Background()
	tc, err := goEnv(ctx, runtimebin.GoTool(), mod, "GOVERSION", "GOOS", "GOARCH")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	gomod, _ := os.ReadFile(filepath.Join(mod, "go.mod"))
	key := CacheKey(gomod, nil, strings.Join(tc, " "))
	dir := filepath.Join(cache, key[:32])
	for _, p := range Programs {
		write(t, filepath.Join(dir, p.Name), "#!/bin/sh\n# "+p.Name+"\n")
	}
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(dir, old, old)

	// A go that answers `go env` and records any other use.
	marker := filepath.Join(t.TempDir(), "built")
	goCmd := filepath.Join(t.TempDir(), "go")
	write(t, goCmd, fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = env ]; then exec %q \"$@\"; fi\necho \"$@\" >> %q\nexit 1\n", runtimebin.GoTool(), marker))

	var log bytes.Buffer
	s, err := Build(ctx, BuildOptions{ModuleDir: mod, CacheDir: cache, Log: &log, Go: goCmd})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Errorf("a cached build ran go: %s", b)
	}
	if !s.Cached || s.Dir != dir || s.KubernetesVersion != "v1.37.2" {
		t.Errorf("got %+v, want the cached build in %s", s, dir)
	}
	if got := s.Path("kubectl"); got != filepath.Join(dir, "kubectl") {
		t.Errorf("Path(kubectl) = %q", got)
	}
	for _, p := range Programs {
		line := fmt.Sprintf("    %s unchanged: reusing %s (", p.Name, filepath.Join(dir, p.Name))
		if !strings.Contains(log.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, log.String())
		}
	}
	if st, _ := os.Stat(dir); time.Since(st.ModTime()) > time.Hour {
		t.Error("reuse did not mark the build recently used")
	}

	// Another go.sum is another key: it builds, e2e.test first.
	write(t, filepath.Join(mod, "go.sum"), "k8s.io/kubernetes v1.37.2 h1:abc=\n")
	log.Reset()
	if _, err := Build(ctx, BuildOptions{ModuleDir: mod, CacheDir: cache, Log: &log, Go: goCmd}); err == nil || !strings.Contains(err.Error(), "building e2e.test") {
		t.Errorf("err = %v, want the failed e2e.test build", err)
	}
	b, _ := os.ReadFile(marker)
	if got := string(b); !strings.HasPrefix(got, "test -c -trimpath -buildvcs=false -ldflags -s -w ") || !strings.HasSuffix(got, " k8s.io/kubernetes/test/e2e\n") {
		t.Errorf("go was run as %q", got)
	}
	if ents, _ := filepath.Glob(filepath.Join(cache, "*.tmp")); len(ents) > 0 {
		t.Errorf("a failed build left %v", ents)
	}
}

func TestPruneBuilds(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ages := map[string]time.Duration{
		"00000000000000000000000000000001": 1 * time.Minute, // newest
		"00000000000000000000000000000002": 2 * time.Hour,
		"00000000000000000000000000000003": 3 * time.Hour,
		"00000000000000000000000000000004": 4 * time.Hour, // pruned
		"00000000000000000000000000000005": 5 * time.Hour, // pruned
		"build-123.tmp":                    9 * time.Hour, // a build in progress
		"notes":                            9 * time.Hour,
	}
	for name, age := range ages {
		p := filepath.Join(dir, name)
		os.Mkdir(p, 0o755)
		os.Chtimes(p, now.Add(-age), now.Add(-age))
	}
	pruneBuilds(dir, 3, time.Hour)
	for name := range ages {
		_, err := os.Stat(filepath.Join(dir, name))
		gone := name == "00000000000000000000000000000004" || name == "00000000000000000000000000000005"
		if gone != os.IsNotExist(err) {
			t.Errorf("%s: gone = %v, want %v", name, !gone, gone)
		}
	}

	// A build used within minAge stays even beyond keep.
	recent := t.TempDir()
	for i := range 5 {
		os.Mkdir(filepath.Join(recent, fmt.Sprintf("%032d", i)), 0o755)
	}
	pruneBuilds(recent, 3, time.Hour)
	if ents, _ := os.ReadDir(recent); len(ents) != 5 {
		t.Errorf("%d builds left, want all 5 (all in use)", len(ents))
	}
}

func TestFindModule(t *testing.T) {
	root := t.TempDir()
	mod := filepath.Join(root, "conformance")
	write(t, filepath.Join(mod, "go.mod"), "module "+ModulePath+"\n")
	write(t, filepath.Join(root, "go.mod"), "module github.com/ballast-os/ballast\n")
	write(t, filepath.Join(root, "cmd", "ballast", "main.go"), "package main\n")
	write(t, filepath.Join(mod, "suiterun", "run.go"), "package suiterun\n")
	for _, start := range []string{root, filepath.Join(root, "cmd", "ballast"), mod, filepath.Join(mod, "suiterun")} {
		got, err := FindModule(start)
		if err != nil || got != mod {
			t.Errorf("FindModule(%s) = %q, %v; want %s", start, got, err, mod)
		}
	}
	if _, err := FindModule(t.TempDir()); err == nil {
		t.Error("found a module where there is none")
	}
}

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{
		512:                    "512 B",
		2048:                   "2.0 KiB",
		159_700_000:            "152.3 MiB",
		3 * 1024 * 1024 * 1024: "3.0 GiB",
	} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}
