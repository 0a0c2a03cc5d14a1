package debian

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// countingTransport counts requests by URL suffix.
type countingTransport struct {
	mu   sync.Mutex
	debs int
	all  int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.all++
	if strings.HasSuffix(r.URL.Path, ".deb") {
		c.debs++
	}
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

// TestRealTrixie resolves and installs real packages from the Debian
// mirror, verified with the embedded archive keys. BALLAST_TEST_CACHE
// names a cache directory to keep between runs (default: a fresh one).
func TestRealTrixie(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads from deb.debian.org; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cache := os.Getenv("BALLAST_TEST_CACHE")
	if cache == "" {
		cache = t.TempDir()
	}
	ct := &countingTransport{}
	cfg := Config{Arch: "amd64", CacheDir: cache, HTTPClient: &http.Client{Transport: ct}}
	if testing.Verbose() {
		cfg.Progress = os.Stderr
	}
	a, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := a.Release(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Codename != "trixie" {
		t.Fatalf("codename %q", rel.Codename)
	}
	pkgs, err := a.Resolve(ctx, []string{"bash", "busybox-static"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range pkgs {
		got = append(got, p.Name)
	}
	t.Logf("resolved %d packages: %s", len(pkgs), strings.Join(got, " "))
	for _, want := range []string{"bash", "busybox-static", "libc6", "base-files"} {
		if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+want+" ") {
			t.Errorf("closure lacks %s", want)
		}
	}
	install := func(a *Archive) *filetree.Tree {
		t.Helper()
		tree := filetree.New(time.Unix(0, 0))
		if err := MergedUsr(tree, "amd64"); err != nil {
			t.Fatal(err)
		}
		err := a.Install(ctx, tree, pkgs, InstallOptions{Exclude: func(p string) bool {
			return strings.HasPrefix(p, "usr/share/doc/") || strings.HasPrefix(p, "usr/share/man/")
		}})
		if err != nil {
			t.Fatal(err)
		}
		return tree
	}
	tree := install(a)
	for _, p := range []string{"usr/bin/bash", "usr/bin/busybox", "usr/lib64/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/libc.so.6", "etc/debian_version"} {
		e := tree.Get(p)
		if e == nil {
			t.Errorf("%s missing from the tree", p)
			continue
		}
		if e.Kind == filetree.File {
			if st, err := os.Stat(e.Data.(filetree.HostFile).Path); err != nil || st.Size() != e.Size() {
				t.Errorf("%s: host file %v, size %d", p, err, e.Size())
			}
		}
	}
	if e := tree.Get("bin"); e == nil || e.Kind != filetree.Symlink {
		t.Errorf("bin is %+v, want the merged-/usr symlink", e)
	}
	for _, e := range tree.Entries() {
		for _, top := range []string{"bin/", "sbin/", "lib/", "lib64/"} {
			if strings.HasPrefix(e.Path, top) {
				t.Errorf("%s was not moved under usr/", e.Path)
			}
		}
		if strings.HasPrefix(e.Path, "usr/share/doc/") {
			t.Errorf("%s was not excluded", e.Path)
		}
	}
	if e := tree.Get("usr/bin/bash"); e == nil || e.Mode != 0o755 {
		t.Errorf("usr/bin/bash = %+v", e)
	}

	// Lock, then a warm rebuild from lock and cache alone.
	lockPath := filepath.Join(t.TempDir(), "ballast.lock")
	if err := NewLock(a.Config(), pkgs).Write(lockPath); err != nil {
		t.Fatal(err)
	}
	debsBefore := ct.debs
	start := time.Now()
	lock, err := ReadLock(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Offline = true
	off, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	locked, err := off.Resolve(ctx, []string{"bash", "busybox-static"}, lock)
	if err != nil {
		t.Fatal(err)
	}
	tree2 := install(off)
	warm := time.Since(start)
	t.Logf("warm offline rebuild from the lock: %v, %d entries", warm, tree2.Len())
	if ct.debs != debsBefore {
		t.Errorf("second install fetched %d .debs, want 0", ct.debs-debsBefore)
	}
	if len(locked) != len(pkgs) || tree2.Len() != tree.Len() {
		t.Errorf("warm rebuild: %d packages, %d entries; first: %d, %d", len(locked), tree2.Len(), len(pkgs), tree.Len())
	}
	if warm > 5*time.Second {
		t.Errorf("warm rebuild took %v, want under 5s", warm)
	}

	// Online again with a fresh Archive: still no .deb downloads.
	cfg.Offline = false
	a3, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	install(a3)
	if ct.debs != debsBefore {
		t.Errorf("online reinstall fetched %d .debs, want 0", ct.debs-debsBefore)
	}
}
