package runtimebin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeTree writes files (slash paths -> content) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fakeRuntime(t *testing.T) string {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"go.mod":                        "module github.com/ballast-os/ballast/runtime\n",
		"go.sum":                        "",
		"tools.go":                      "package runtime\n",
		"k3s/k3s.go":                    "package k3s\n",
		"k3s/k3s_test.go":               "package k3s\n",
		"k3s/testdata/golden.txt":       "x",
		"manifests/coredns.yaml":        "kind: Deployment\n",
		"README.md":                     "docs",
		"cmd/k3s/main.go":               "package main\n",
		".git-ignored/whatever":         "x",
		"nested/go.mod":                 "module other\n",
		"nested/x.go":                   "package other\n",
		"components/kubelet/kubelet.go": "package kubelet\n",
	})
	return dir
}

func TestSourceKeyFollowsSourcesNotTests(t *testing.T) {
	dir := fakeRuntime(t)
	key := func() string {
		t.Helper()
		k, err := SourceKey(dir)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key()
	if key() != base {
		t.Fatal("SourceKey is not stable")
	}
	unchanged := map[string]string{
		"k3s/k3s_test.go":         "package k3s // changed\n",
		"k3s/testdata/golden.txt": "changed",
		"README.md":               "changed docs",
		"nested/x.go":             "package other // changed\n",
		".git-ignored/whatever":   "changed",
		"e2e/e2e_test.go":         "package e2e\n", // a new test file
	}
	for p, c := range unchanged {
		writeTree(t, dir, map[string]string{p: c})
		if k := key(); k != base {
			t.Errorf("changing %s changed the key: tests and docs must not rebuild the runtime", p)
		}
	}
	changed := []string{"k3s/k3s.go", "go.sum", "go.mod", "manifests/coredns.yaml", "components/kubelet/kubelet.go", "tools.go", "k3s/new.go"}
	prev := base
	for _, p := range changed {
		writeTree(t, dir, map[string]string{p: "// changed " + p + "\n"})
		k := key()
		if k == prev {
			t.Errorf("changing %s kept the key: the cached runtime would be stale", p)
		}
		prev = k
	}
	// Renaming a file changes the key even with the same content.
	if err := os.Rename(filepath.Join(dir, "k3s", "new.go"), filepath.Join(dir, "k3s", "renamed.go")); err != nil {
		t.Fatal(err)
	}
	if key() == prev {
		t.Error("renaming a source file kept the key")
	}
}

func TestSourceKeyNeedsGoMod(t *testing.T) {
	if _, err := SourceKey(t.TempDir()); err == nil || !strings.Contains(err.Error(), "go.mod") {
		t.Fatalf("err = %v; want one naming go.mod", err)
	}
}

// fakeGo writes a shell script standing in for the go command: `env
// GOVERSION` answers, `build` records its arguments and environment,
// sleeps, and writes one file per package into the -o directory.
func fakeGo(t *testing.T, sleep string) (goCmd, record string) {
	dir := t.TempDir()
	record = filepath.Join(dir, "calls")
	goCmd = filepath.Join(dir, "go")
	script := `#!/bin/sh
if [ "$1" = env ]; then echo go1.99-fake; exit 0; fi
echo "$PWD|$GOARCH|$CGO_ENABLED|$*|proxy=$GOPROXY" >> ` + record + `
sleep ` + sleep + `
out=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2; continue;;
    ./cmd/k3s) echo "k3s-$GOARCH" > "${out}k3s";;
    github.com/*|sigs.k8s.io/*) n=${1##*/}; echo "$n-$GOARCH" > "$out$n";;
  esac
  shift
done
`
	if err := os.WriteFile(goCmd, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return goCmd, record
}

func calls(t *testing.T, record string) []string {
	data, err := os.ReadFile(record)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func TestBuildCachesAndReportsProgress(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"runtime/go.mod": testGoMod, "runtime/k3s/k3s.go": "package k3s\n"})
	goCmd, record := fakeGo(t, "0.35")
	cache := t.TempDir()
	var log bytes.Buffer
	o := BuildOptions{SourceDir: src, Arch: "arm64", Version: "v-test", CacheDir: cache, Log: &log, Go: goCmd, Tick: 100 * time.Millisecond}
	rt, err := Build(context.Background(), o)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	c := calls(t, record)
	if len(c) != 1 {
		t.Fatalf("go build ran %d times: %q", len(c), c)
	}
	for _, want := range []string{filepath.Join(src, "runtime") + "|arm64|0|", "-trimpath", "-buildvcs=false",
		"-X github.com/ballast-os/ballast/runtime/k3s.Version=v-test", "./cmd/k3s", CNIPlugins[0].Package, Tools[0].Package,
		"-X k8s.io/component-base/version.gitVersion=v1.37.2", "-X k8s.io/component-base/version.gitMinor=37",
		"-X github.com/containerd/containerd/v2/version.Version=2.4.2", "-X sigs.k8s.io/cri-tools/pkg/version.Version=v1.37.0"} {
		if !strings.Contains(c[0], want) {
			t.Errorf("go build call %q lacks %q", c[0], want)
		}
	}
	for _, want := range []string{"building the ballast runtime for arm64", "still building… 0m", "built the runtime in"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
	if rt.Cached || len(rt.CNI) != len(CNIPlugins) || rt.Version != "v-test" {
		t.Fatalf("runtime %+v", rt)
	}
	k3s, _ := os.ReadFile(rt.K3s.Path)
	if string(k3s) != "k3s-arm64\n" {
		t.Errorf("k3s = %q", k3s)
	}
	sum := sha256.Sum256(k3s)
	if rt.K3s.SHA256 != hex.EncodeToString(sum[:]) || rt.K3s.Size != int64(len(k3s)) {
		t.Errorf("k3s described as %+v", rt.K3s)
	}
	for i, p := range CNIPlugins {
		if rt.CNI[i].Name != p.Name || filepath.Base(rt.CNI[i].Path) != p.Name {
			t.Errorf("CNI[%d] = %+v, want %s", i, rt.CNI[i], p.Name)
		}
	}
	st1, _ := os.Stat(rt.K3s.Path)

	// Unchanged: no build, same file (same mtime: the squashfs cache
	// identifies host files by path, size and mtime).
	log.Reset()
	rt2, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(rt2.K3s.Path)
	if n := len(calls(t, record)); n != 1 || !rt2.Cached || rt2.K3s.Path != rt.K3s.Path || !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatalf("warm build: %d go builds, cached %v, %s", n, rt2.Cached, rt2.K3s.Path)
	}
	if !strings.Contains(log.String(), "runtime unchanged") {
		t.Errorf("warm log: %s", log.String())
	}

	// A test file changes nothing; a source file, the arch or the version rebuild.
	writeTree(t, src, map[string]string{"runtime/k3s/k3s_test.go": "package k3s\n"})
	if _, err := Build(context.Background(), o); err != nil || len(calls(t, record)) != 1 {
		t.Fatalf("after a test change: %v, %d builds", err, len(calls(t, record)))
	}
	writeTree(t, src, map[string]string{"runtime/k3s/k3s.go": "package k3s // changed\n"})
	rt3, err := Build(context.Background(), o)
	if err != nil || len(calls(t, record)) != 2 || rt3.K3s.Path == rt.K3s.Path {
		t.Fatalf("after a source change: %v, %d builds", err, len(calls(t, record)))
	}
	o.Arch = "amd64"
	if _, err := Build(context.Background(), o); err != nil || len(calls(t, record)) != 3 {
		t.Fatalf("other arch: %v, %d builds", err, len(calls(t, record)))
	}
	o.Version, o.Offline = "v-other", true
	if _, err := Build(context.Background(), o); err != nil || len(calls(t, record)) != 4 {
		t.Fatalf("other version: %v, %d builds", err, len(calls(t, record)))
	}
	if c := calls(t, record); !strings.HasSuffix(c[3], "|proxy=off") || strings.HasSuffix(c[0], "|proxy=off") {
		t.Errorf("GOPROXY=off only offline: %q", c)
	}
	// No temporary directories left behind.
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestBuildFailureShowsOutput(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"runtime/go.mod": testGoMod})
	goCmd := filepath.Join(t.TempDir(), "go")
	os.WriteFile(goCmd, []byte("#!/bin/sh\nif [ \"$1\" = env ]; then echo go1.99; exit 0; fi\necho 'k3s/k3s.go:3:1: syntax error' >&2\nexit 1\n"), 0o755)
	_, err := Build(context.Background(), BuildOptions{SourceDir: src, Arch: "amd64", CacheDir: t.TempDir(), Go: goCmd})
	if err == nil || !strings.Contains(err.Error(), "k3s/k3s.go:3:1: syntax error") || !strings.Contains(err.Error(), "amd64") {
		t.Fatalf("err = %v; want the compiler's message and the arch", err)
	}
}

// k3sServer serves a fake k3s binary at /k3s, and variants that fail.
func k3sServer(t *testing.T, body []byte) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/k3s", func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	mux.HandleFunc("/truncated", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:len(body)/2])
		// The handler returns early: the server closes the connection
		// with half the promised bytes sent.
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestFetchDownloadsAndCaches(t *testing.T) {
	body := bytes.Repeat([]byte("official k3s "), 10000)
	srv := k3sServer(t, body)
	cache := t.TempDir()
	var log bytes.Buffer
	o := FetchOptions{Version: "v1.34.3+k3s1", URL: srv.URL + "/k3s", SHA256: sum(body), CacheDir: cache, Log: &log}
	rt, err := Fetch(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(rt.K3s.Path)
	if !bytes.Equal(got, body) || rt.K3s.SHA256 != sum(body) || rt.Cached || rt.Version != o.Version {
		t.Fatalf("fetched %+v", rt)
	}
	if st, _ := os.Stat(rt.K3s.Path); st.Mode().Perm()&0o111 == 0 {
		t.Errorf("k3s is not executable: %v", st.Mode())
	}
	if !strings.Contains(log.String(), "downloading k3s v1.34.3+k3s1 from "+o.URL) {
		t.Errorf("log: %s", log.String())
	}
	// Cached by checksum: no request when the server is gone.
	srv.Close()
	rt2, err := Fetch(context.Background(), o)
	if err != nil || !rt2.Cached || rt2.K3s.Path != rt.K3s.Path {
		t.Fatalf("second fetch: %+v, %v", rt2, err)
	}
	o.Offline = true
	if _, err := Fetch(context.Background(), o); err != nil {
		t.Fatalf("offline fetch from the cache: %v", err)
	}
}

func TestFetchRefusesWrongChecksum(t *testing.T) {
	body := []byte("a tampered k3s")
	srv := k3sServer(t, body)
	cache := t.TempDir()
	want := sum([]byte("the real k3s"))
	_, err := Fetch(context.Background(), FetchOptions{Version: "v1.34.3+k3s1", URL: srv.URL + "/k3s", SHA256: want, CacheDir: cache})
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "want "+want) || !strings.Contains(err.Error(), "got "+sum(body)) {
		t.Fatalf("err = %v; want a mismatch naming both sums", err)
	}
	assertNothingCached(t, cache)
}

func TestFetch404(t *testing.T) {
	srv := k3sServer(t, []byte("x"))
	cache := t.TempDir()
	_, err := Fetch(context.Background(), FetchOptions{Version: "v9.9.9+k3s1", URL: srv.URL + "/missing", SHA256: sum([]byte("x")), CacheDir: cache})
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "/missing") {
		t.Fatalf("err = %v; want the status and the URL", err)
	}
	assertNothingCached(t, cache)
}

func TestFetchTruncated(t *testing.T) {
	body := bytes.Repeat([]byte("k3s"), 50000)
	srv := k3sServer(t, body)
	cache := t.TempDir()
	_, err := Fetch(context.Background(), FetchOptions{Version: "v1.34.3+k3s1", URL: srv.URL + "/truncated", SHA256: sum(body), CacheDir: cache})
	if err == nil || !strings.Contains(err.Error(), "/truncated") {
		t.Fatalf("err = %v; want a failed download naming the URL", err)
	}
	assertNothingCached(t, cache)
}

func TestFetchNeedsChecksumToDownload(t *testing.T) {
	_, err := Fetch(context.Background(), FetchOptions{Version: "v1.34.3+k3s1", URL: "http://127.0.0.1:1/k3s", CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("err = %v", err)
	}
}

func TestFetchOfflineMiss(t *testing.T) {
	_, err := Fetch(context.Background(), FetchOptions{Version: "v1.34.3+k3s1", URL: "http://127.0.0.1:1/k3s", SHA256: sum([]byte("x")), CacheDir: t.TempDir(), Offline: true})
	if err == nil || !strings.Contains(err.Error(), "--offline") {
		t.Fatalf("err = %v", err)
	}
}

func TestFetchLocalFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k3s")
	body := []byte("local k3s")
	os.WriteFile(p, body, 0o755)
	rt, err := Fetch(context.Background(), FetchOptions{File: p})
	if err != nil || rt.K3s.Path != p || rt.K3s.SHA256 != sum(body) {
		t.Fatalf("%+v, %v", rt, err)
	}
	if _, err := Fetch(context.Background(), FetchOptions{File: p, SHA256: sum(body)}); err != nil {
		t.Fatal(err)
	}
	_, err = Fetch(context.Background(), FetchOptions{File: p, SHA256: sum([]byte("other"))})
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v; want a mismatch naming the file", err)
	}
	_, err = Fetch(context.Background(), FetchOptions{File: p + ".missing"})
	if err == nil || !strings.Contains(err.Error(), p+".missing") {
		t.Fatalf("err = %v", err)
	}
}

// assertNothingCached checks a failed download left no binary (nor a
// temporary file) in the cache.
func assertNothingCached(t *testing.T, cache string) {
	t.Helper()
	filepath.Walk(cache, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			t.Errorf("failed download left %s", p)
		}
		return nil
	})
}

// testGoMod is a runtime/go.mod with the versions the build stamps.
const testGoMod = `module github.com/ballast-os/ballast/runtime

require (
	github.com/containerd/containerd/v2 v2.4.2
	k8s.io/kubernetes v1.37.2
	sigs.k8s.io/cri-tools v1.37.0
)
`

func TestPruneBuilds(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	mk := func(name string, age time.Duration) {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, now.Add(-age), now.Add(-age))
	}
	mk("amd64-aaaa", 1*time.Minute)
	mk("amd64-bbbb", 2*time.Hour)
	mk("amd64-cccc", 3*time.Hour)
	mk("amd64-dddd", 4*time.Hour) // beyond the newest 3, old: removed
	mk("amd64-eeee", 5*time.Hour) // removed
	mk("arm64-ffff", 9*time.Hour) // another architecture: kept
	mk("build-1.tmp", 9*time.Hour)
	pruneBuilds(dir, "amd64", 3, time.Hour)
	var got []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		got = append(got, e.Name())
	}
	want := []string{"amd64-aaaa", "amd64-bbbb", "amd64-cccc", "arm64-ffff", "build-1.tmp"}
	if !slices.Equal(got, want) {
		t.Errorf("after pruning: %v, want %v", got, want)
	}
	// A build used within the hour is kept even beyond the newest 3.
	mk("amd64-gggg", 10*time.Minute)
	mk("amd64-hhhh", 20*time.Minute)
	mk("amd64-iiii", 30*time.Minute) // 4th newest
	pruneBuilds(dir, "amd64", 3, time.Hour)
	if _, err := os.Stat(filepath.Join(dir, "amd64-cccc")); err == nil {
		t.Error("amd64-cccc (4th newest, 3 hours old) kept")
	}
	if _, err := os.Stat(filepath.Join(dir, "amd64-iiii")); err != nil {
		t.Error("amd64-iiii (4th newest, used 30 minutes ago) removed")
	}
	if _, err := os.Stat(filepath.Join(dir, "amd64-bbbb")); err == nil {
		t.Error("amd64-bbbb (5th newest, 2 hours old) kept")
	}
}
