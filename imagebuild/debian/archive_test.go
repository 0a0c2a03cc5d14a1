package debian

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"

	"github.com/dustin/go-humanize"
)

func testDebs() []*fakeDeb {
	return []*fakeDeb{
		{name: "app", version: "1.0-1", arch: "amd64", compression: "zst",
			depends: "libfoo (>= 2) | libbar, awk, only-on-i386 [i386]",
			entries: []tarEntry{
				{name: "./", typ: tar.TypeDir, mode: 0o755},
				{name: "./bin/", typ: tar.TypeDir, mode: 0o755},
				{name: "./bin/apptool", typ: tar.TypeReg, mode: 0o755, body: "tool"},
				{name: "./usr/", typ: tar.TypeDir, mode: 0o755},
				{name: "./usr/bin/", typ: tar.TypeDir, mode: 0o755},
				{name: "./usr/bin/app", typ: tar.TypeReg, mode: 0o4755, uid: 0, gid: 50, body: "app binary"},
				{name: "./usr/bin/app2", typ: tar.TypeLink, link: "./usr/bin/app"},
				{name: "./usr/bin/app-link", typ: tar.TypeSymlink, mode: 0o777, link: "app"},
				{name: "./usr/share/doc/app/copyright", typ: tar.TypeReg, mode: 0o644, body: "GPL"},
			}},
		{name: "libfoo", version: "1.5", arch: "amd64", compression: "gz", preDepends: "libc6",
			entries: []tarEntry{{name: "./usr/lib/libfoo.so.1", typ: tar.TypeReg, mode: 0o644, body: "old"}}},
		{name: "libfoo", version: "2.1", arch: "amd64", compression: "gz", preDepends: "libc6",
			entries: []tarEntry{
				{name: "./lib/", typ: tar.TypeDir, mode: 0o755},
				{name: "./lib/x86_64-linux-gnu/", typ: tar.TypeDir, mode: 0o755},
				{name: "./lib/x86_64-linux-gnu/libfoo.so.2", typ: tar.TypeReg, mode: 0o644, body: "libfoo 2"},
			}},
		{name: "libbar", version: "1.0", arch: "amd64"},
		{name: "libc6", version: "2.41-12", arch: "amd64",
			entries: []tarEntry{{name: "./usr/lib64/ld-linux-x86-64.so.2", typ: tar.TypeReg, mode: 0o755, body: "ld"}}},
		{name: "mawk", version: "1.3.4", arch: "amd64", provides: "awk", priority: "required",
			entries: []tarEntry{{name: "./usr/bin/mawk", typ: tar.TypeReg, mode: 0o755, body: "mawk"}}},
		{name: "gawk", version: "5.2", arch: "amd64", provides: "awk", priority: "optional"},
		{name: "broken", version: "1", arch: "all", depends: "libc6, does-not-exist (>= 1)"},
	}
}

func openFake(t *testing.T, fa *fakeArchive, cache string, mod func(*Config)) *Archive {
	t.Helper()
	cfg := fa.config(t, cache)
	if mod != nil {
		mod(&cfg)
	}
	a, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func names(pkgs []Package) string {
	var s []string
	for _, p := range pkgs {
		s = append(s, p.Name+"="+p.Version)
	}
	return strings.Join(s, " ")
}

func TestInstallFromSignedArchive(t *testing.T) {
	ctx := context.Background()
	fa := newFakeArchive(t, testDebs())
	cache := t.TempDir()
	a := openFake(t, fa, cache, nil)
	pkgs, err := a.Resolve(ctx, []string{"app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(pkgs), "app=1.0-1 libc6=2.41-12 libfoo=2.1 mawk=1.3.4"; got != want {
		t.Fatalf("resolved %q, want %q", got, want)
	}

	tree := filetree.New(time.Unix(0, 0))
	if err := MergedUsr(tree, "amd64"); err != nil {
		t.Fatal(err)
	}
	exclude := func(p string) bool { return strings.HasPrefix(p, "usr/share/doc/") }
	if err := a.Install(ctx, tree, pkgs, InstallOptions{Exclude: exclude}); err != nil {
		t.Fatal(err)
	}
	readTree := func(p string) string {
		t.Helper()
		e := tree.Get(p)
		if e == nil || e.Kind != filetree.File {
			t.Fatalf("%s: got %+v, want a file", p, e)
		}
		rc, err := e.Data.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		if int64(len(b)) != e.Size() {
			t.Fatalf("%s: size %d, content %d bytes", p, e.Size(), len(b))
		}
		return string(b)
	}
	// Merged /usr: /bin/apptool and /lib/... land under usr/.
	if got := readTree("usr/bin/apptool"); got != "tool" {
		t.Errorf("usr/bin/apptool = %q", got)
	}
	if got := readTree("usr/lib/x86_64-linux-gnu/libfoo.so.2"); got != "libfoo 2" {
		t.Errorf("libfoo.so.2 = %q", got)
	}
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		if e := tree.Get(l); e == nil || e.Kind != filetree.Symlink || e.Target != "usr/"+l {
			t.Errorf("%s: got %+v, want symlink to usr/%s", l, e, l)
		}
	}
	app := tree.Get("usr/bin/app")
	if app == nil || app.Mode != 0o755|fs.ModeSetuid || app.UID != 0 || app.GID != 50 {
		t.Errorf("usr/bin/app = %+v, want setuid 0755 gid 50", app)
	}
	if got := readTree("usr/bin/app2"); got != "app binary" {
		t.Errorf("hard link app2 = %q", got)
	}
	if e := tree.Get("usr/bin/app-link"); e == nil || e.Kind != filetree.Symlink || e.Target != "app" {
		t.Errorf("app-link = %+v", e)
	}
	if tree.Get("usr/share/doc/app/copyright") != nil {
		t.Error("excluded file was installed")
	}
	if got := readTree("usr/bin/mawk"); got != "mawk" {
		t.Errorf("mawk = %q", got)
	}

	// A second install, from a fresh Archive, fetches no .deb.
	before := fa.debRequests()
	a2 := openFake(t, fa, cache, nil)
	tree2 := filetree.New(time.Unix(0, 0))
	MergedUsr(tree2, "amd64")
	if err := a2.Install(ctx, tree2, pkgs, InstallOptions{Exclude: exclude}); err != nil {
		t.Fatal(err)
	}
	if n := fa.debRequests() - before; n != 0 {
		t.Errorf("second install fetched %d .debs, want 0", n)
	}
	if tree2.Len() != tree.Len() {
		t.Errorf("second tree has %d entries, first %d", tree2.Len(), tree.Len())
	}
	u, err := a2.Unpack(ctx, pkgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if b, err := u.Control("postinst"); err != nil || string(b) != "#!/bin/sh\n" {
		t.Errorf("control postinst = %q, %v", b, err)
	}
}

func TestMissingDependencyNamesTheNeeder(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	a := openFake(t, fa, t.TempDir(), nil)
	_, err := a.Resolve(context.Background(), []string{"broken"}, nil)
	var miss *MissingError
	if !errors.As(err, &miss) || miss.NeededBy != "broken 1" || !strings.Contains(err.Error(), "does-not-exist (>= 1)") {
		t.Fatalf("err = %v, want MissingError for does-not-exist needed by broken 1", err)
	}
	_, err = a.Resolve(context.Background(), []string{"nope"}, nil)
	if !errors.As(err, &miss) || miss.NeededBy != "requested" {
		t.Fatalf("err = %v, want MissingError for a requested package", err)
	}
}

func TestTamperedInReleaseRejected(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	ir := fa.files["dists/trixie/InRelease"]
	fa.files["dists/trixie/InRelease"] = bytes.Replace(ir, []byte("Codename: trixie"), []byte("Codename: trixiE"), 1)
	a := openFake(t, fa, t.TempDir(), nil)
	err := a.LoadIndexes(context.Background())
	if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), fa.srv.URL+"/debian/dists/trixie/InRelease") {
		t.Fatalf("err = %v, want ErrSignature naming the URL", err)
	}
}

func TestUnsignedInReleaseRejected(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	fa.files["dists/trixie/InRelease"] = []byte(fa.releaseText())
	a := openFake(t, fa, t.TempDir(), nil)
	if err := a.LoadIndexes(context.Background()); !errors.Is(err, ErrSignature) {
		t.Fatalf("err = %v, want ErrSignature", err)
	}
	// Unsigned text before a valid signed block is refused too.
	fa.sign()
	fa.files["dists/trixie/InRelease"] = append([]byte("SHA256:\n evil\n\n"), fa.files["dists/trixie/InRelease"]...)
	if err := openFake(t, fa, t.TempDir(), nil).LoadIndexes(context.Background()); !errors.Is(err, ErrSignature) {
		t.Fatalf("prefixed: err = %v, want ErrSignature", err)
	}
}

func TestWrongKeyRejected(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	fa.files["dists/trixie/InRelease"] = clearSign(t, newTestKey(t), fa.releaseText())
	err := openFake(t, fa, t.TempDir(), nil).LoadIndexes(context.Background())
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("err = %v, want ErrSignature", err)
	}
}

func TestRealArchiveKeyringRejectsTestKey(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	err := openFake(t, fa, t.TempDir(), func(c *Config) { c.Keyring = nil }).LoadIndexes(context.Background())
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("err = %v, want ErrSignature with the embedded Debian keyring", err)
	}
	kr, err := DefaultKeyring()
	if err != nil || len(kr) != 6 {
		t.Fatalf("embedded keyring: %d keys, %v; want 6", len(kr), err)
	}
}

func TestValidUntil(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	fa.extraR = "Valid-Until: Sat, 28 Nov 2026 09:15:44 UTC\n"
	fa.sign()
	at := func(s string) func(*Config) {
		tm, _ := time.Parse(time.RFC3339, s)
		return func(c *Config) { c.Now = func() time.Time { return tm } }
	}
	if err := openFake(t, fa, t.TempDir(), at("2026-11-27T00:00:00Z")).LoadIndexes(context.Background()); err != nil {
		t.Fatalf("before Valid-Until: %v", err)
	}
	err := openFake(t, fa, t.TempDir(), at("2026-12-01T00:00:00Z")).LoadIndexes(context.Background())
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("after Valid-Until: err = %v, want ErrExpired", err)
	}
}

func TestPackagesHashMismatchRejected(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	// The signed Release lists the original index; serve another one.
	fa.files["dists/trixie/main/binary-amd64/Packages.xz"] = compress(t, "xz", []byte("Package: evil\n"))
	err := openFake(t, fa, t.TempDir(), nil).LoadIndexes(context.Background())
	if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), "main/binary-amd64/Packages.xz") {
		t.Fatalf("err = %v, want ErrHashMismatch naming Packages.xz", err)
	}
}

func TestDebHashMismatchRejectedAndNotCached(t *testing.T) {
	ctx := context.Background()
	fa := newFakeArchive(t, testDebs())
	cache := t.TempDir()
	a := openFake(t, fa, cache, nil)
	pkgs, err := a.Resolve(ctx, []string{"mawk"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := fa.files[pkgs[0].Filename]
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 1
	fa.files[pkgs[0].Filename] = bad
	err = a.Install(ctx, filetree.New(time.Unix(0, 0)), pkgs, InstallOptions{})
	if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), "mawk") || !strings.Contains(err.Error(), pkgs[0].SHA256) {
		t.Fatalf("err = %v, want ErrHashMismatch naming mawk and the hash", err)
	}
	left, _ := os.ReadDir(filepath.Join(cache, "debian", "debs"))
	if len(left) != 0 {
		t.Fatalf("cache holds %d files after a bad download, want none", len(left))
	}
	// A corrupted cached .deb is caught at unpack and removed.
	fa.files[pkgs[0].Filename] = good
	if err := a.fetchDeb(ctx, &pkgs[0]); err != nil {
		t.Fatal(err)
	}
	deb := a.debPath(&pkgs[0])
	os.WriteFile(deb, bad, 0o644)
	if _, err := a.Unpack(ctx, pkgs[0]); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("corrupt cache: err = %v, want ErrHashMismatch", err)
	}
	if _, err := os.Stat(deb); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("corrupt cached .deb was not removed")
	}
	if _, err := a.Unpack(ctx, pkgs[0]); err != nil {
		t.Fatalf("refetch after corruption: %v", err)
	}
}

func TestLockAndOffline(t *testing.T) {
	ctx := context.Background()
	fa := newFakeArchive(t, testDebs())
	cache := t.TempDir()
	a := openFake(t, fa, cache, nil)
	pkgs, err := a.Resolve(ctx, []string{"app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(t.TempDir(), "ballast.lock")
	if err := NewLock(a.Config(), pkgs).Write(lockPath); err != nil {
		t.Fatal(err)
	}
	lock, err := ReadLock(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(lockPath)
	b2, _ := lock.Marshal()
	if !bytes.Equal(b1, b2) {
		t.Fatalf("lock does not round-trip:\n%s\n---\n%s", b1, b2)
	}

	// Offline with a lock but an empty cache: a clear error.
	off := openFake(t, fa, t.TempDir(), func(c *Config) { c.Offline = true })
	locked, err := off.Resolve(ctx, []string{"app"}, lock)
	if err != nil {
		t.Fatalf("offline resolve from lock alone: %v", err)
	}
	err = off.Install(ctx, filetree.New(time.Unix(0, 0)), locked, InstallOptions{})
	if err == nil || !strings.Contains(err.Error(), "without --offline") {
		t.Fatalf("offline install with empty cache: err = %v, want a hint to run without --offline", err)
	}

	// Fill the cache, then build offline with the server gone.
	if err := a.Install(ctx, filetree.New(time.Unix(0, 0)), pkgs, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	fa.srv.Close()
	off = openFake(t, fa, cache, func(c *Config) { c.Offline = true })
	locked, err = off.Resolve(ctx, []string{"app"}, lock)
	if err != nil {
		t.Fatal(err)
	}
	if names(locked) != names(pkgs) {
		t.Fatalf("offline resolve = %s, want %s", names(locked), names(pkgs))
	}
	tree := filetree.New(time.Unix(0, 0))
	MergedUsr(tree, "amd64")
	if err := off.Install(ctx, tree, locked, InstallOptions{}); err != nil {
		t.Fatalf("offline install: %v", err)
	}
	if tree.Get("usr/bin/app") == nil {
		t.Fatal("offline install lost usr/bin/app")
	}
	// A package the lock does not pin comes from the cached index.
	extra, err := off.Resolve(ctx, []string{"app", "gawk"}, lock)
	if err != nil || !strings.Contains(names(extra), "gawk=5.2") {
		t.Fatalf("offline resolve of a new package from the cached index: %s, %v", names(extra), err)
	}
	// And with no cached index, offline says what to do.
	empty := openFake(t, fa, t.TempDir(), func(c *Config) { c.Offline = true })
	if _, err := empty.Resolve(ctx, []string{"gawk"}, lock); err == nil || !strings.Contains(err.Error(), "without --offline") {
		t.Fatalf("offline, unpinned, uncached: err = %v", err)
	}
}

func TestLockPinsOlderVersion(t *testing.T) {
	ctx := context.Background()
	fa := newFakeArchive(t, testDebs())
	a := openFake(t, fa, t.TempDir(), nil)
	old := *fa.pkgs["libfoo_1.5"]
	lock := NewLock(a.Config(), []Package{old})
	pkgs, err := a.Resolve(ctx, []string{"libfoo"}, lock)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(pkgs); got != "libc6=2.41-12 libfoo=1.5" {
		t.Fatalf("resolved %q, want the pinned libfoo 1.5 plus libc6 from the index", got)
	}
	tree := filetree.New(time.Unix(0, 0))
	if err := a.Install(ctx, tree, pkgs, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	if tree.Get("usr/lib/libfoo.so.1") == nil {
		t.Fatal("pinned libfoo 1.5 not installed")
	}
}

func TestMergedUsrRefusesToLoseFiles(t *testing.T) {
	tree := filetree.New(time.Unix(0, 0))
	tree.AddFile("bin/sh", 0o755, []byte("sh"))
	if err := MergedUsr(tree, "amd64"); err == nil {
		t.Fatal("MergedUsr replaced a non-empty /bin")
	}
	// A package shipping a symlink over a populated directory is refused.
	tree = filetree.New(time.Unix(0, 0))
	tree.AddFile("opt/x/file", 0o644, nil)
	u := &Unpacked{Package: Package{Name: "p"}, Entries: []ManifestEntry{{Path: "opt/x", Kind: filetree.Symlink, Target: "y"}}}
	if err := AddToTree(tree, u, nil); err == nil || tree.Get("opt/x/file") == nil {
		t.Fatalf("err = %v; a populated directory was replaced by a symlink", err)
	}
}

func TestReleaseForAnotherSuiteRejected(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	fa.suite = "bookworm" // signed, but says Codename: bookworm
	fa.sign()
	err := openFake(t, fa, t.TempDir(), nil).LoadIndexes(context.Background())
	if err == nil || !strings.Contains(err.Error(), `codename "bookworm"`) {
		t.Fatalf("err = %v, want a suite mismatch", err)
	}
}

// A mirror that answers with an older, validly signed InRelease than the
// one cached from it before (a replay, a rollback, a lagging CDN node) is
// not used, as apt refuses going back in time: the build goes on from the
// newer cached index, and says so.
func TestOlderInReleaseNotUsed(t *testing.T) {
	cache := t.TempDir()
	fa := newFakeArchive(t, testDebs())
	fa.date = "Sat, 21 Nov 2026 09:15:44 UTC"
	fa.sign()
	if err := openFake(t, fa, cache, nil).LoadIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	fa.date = "Sat, 14 Nov 2026 09:15:44 UTC"
	fa.sign()
	var out bytes.Buffer
	a := openFake(t, fa, cache, func(c *Config) { c.Progress = &out })
	if err := a.LoadIndexes(context.Background()); err != nil {
		t.Fatalf("an older InRelease: %v", err)
	}
	if got := a.release.Date.Format(time.RFC1123); got != "Sat, 21 Nov 2026 09:15:44 UTC" {
		t.Errorf("the index in use is dated %s, want the newer cached one", got)
	}
	if !strings.Contains(out.String(), "older than the one fetched from it before") {
		t.Errorf("no warning: %q", out.String())
	}
	// The cache still holds the 21 Nov index: one dated 17 Nov is older.
	mid := &Release{Date: time.Date(2026, 11, 17, 0, 0, 0, 0, time.UTC)}
	if _, err := a.checkNotOlder(filepath.Join(a.root(), "index", a.mirrorKey(), "trixie", "InRelease"), "x", mid, a.cfg.Now()); !errors.Is(err, ErrRollback) {
		t.Errorf("the cache was replaced by the older index: %v", err)
	}
}

func TestProgressLines(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	var out bytes.Buffer
	a := openFake(t, fa, t.TempDir(), func(c *Config) { c.Progress = &out })
	pkgs, err := a.Resolve(context.Background(), []string{"mawk"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Install(context.Background(), filetree.New(time.Unix(0, 0)), pkgs, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("debian: fetching mawk 1.3.4 (%s)\n", humanize.IBytes(uint64(pkgs[0].Size)))
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "dists/trixie/InRelease") {
		t.Fatalf("progress output:\n%s\nwant a line %q", out.String(), want)
	}
}

// A board's kernel from another suite of the mirror: its InRelease and
// Packages are verified like the archive's own, the lock says which
// packages came from it, a locked rebuild (offline too) gets the same
// ones, and a resolution that does not ask for the suite ignores them.
func TestResolveFromAnotherSuite(t *testing.T) {
	ctx := context.Background()
	fa := newFakeArchive(t, append(testDebs(),
		&fakeDeb{name: "kernel", version: "1.0", arch: "amd64", depends: "libc6"}))
	fa.addSuite("trixie-backports", []*fakeDeb{
		{name: "kernel", version: "2.0~bpo", arch: "amd64", depends: "kernel-image-2 (= 2.0~bpo)"},
		{name: "kernel-image-2", version: "2.0~bpo", arch: "amd64", preDepends: "kernel-base (>= 2)", depends: "libc6, initramfs-tools",
			entries: []tarEntry{{name: "./usr/lib/modules/2/vmlinuz", typ: tar.TypeReg, mode: 0o644, body: "kernel 2"}}},
		{name: "kernel-base", version: "2.1~bpo", arch: "all"},
		{name: "libc6", version: "2.50~bpo", arch: "amd64"},
	})
	cache := t.TempDir()
	a := openFake(t, fa, cache, nil)
	bpo := []ResolveOption{FromSuite("trixie-backports"), Ignoring("initramfs-tools")}
	pkgs, err := a.Resolve(ctx, []string{"kernel"}, nil, bpo...)
	if err != nil {
		t.Fatal(err)
	}
	suites := func(ps []Package) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.Name+"="+p.Version+"@"+p.Suite)
		}
		return strings.Join(s, " ")
	}
	want := "kernel=2.0~bpo@trixie-backports kernel-base=2.1~bpo@trixie-backports kernel-image-2=2.0~bpo@trixie-backports libc6=2.41-12@"
	if got := suites(pkgs); got != want {
		t.Fatalf("resolved %s\nwant     %s", got, want)
	}
	if fa.hits["dists/trixie-backports/InRelease"] != 1 {
		t.Errorf("trixie-backports InRelease fetched %d times", fa.hits["dists/trixie-backports/InRelease"])
	}
	// The archive's own suite alone: the kernel of trixie.
	plain, err := a.Resolve(ctx, []string{"kernel"}, nil)
	if err != nil || names(plain) != "kernel=1.0 libc6=2.41-12" {
		t.Fatalf("without FromSuite: %s, %v", names(plain), err)
	}

	lockPath := filepath.Join(t.TempDir(), "ballast.lock")
	if err := NewLock(a.Config(), pkgs).Write(lockPath); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(lockPath)
	if n := strings.Count(string(data), `"suite": "trixie-backports"`); n != 3 {
		t.Errorf("the lock names trixie-backports %d times, want once per package from it:\n%s", n, data)
	}
	if n := strings.Count(string(data), `"suite"`); n != 4 {
		t.Errorf("the lock has %d suite fields, want the lock's own and 3 packages':\n%s", n, data)
	}
	lock, err := ReadLock(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Install(ctx, filetree.New(time.Unix(0, 0)), pkgs, InstallOptions{}); err != nil {
		t.Fatalf("installing packages of trixie-backports: %v", err)
	}

	// Offline, from the lock alone and the cache: the same packages.
	fa.srv.Close()
	off := openFake(t, fa, cache, func(c *Config) { c.Offline = true })
	locked, err := off.Resolve(ctx, []string{"kernel"}, lock, bpo...)
	if err != nil || suites(locked) != want {
		t.Fatalf("offline from the lock: %s, %v", suites(locked), err)
	}
	tree := filetree.New(time.Unix(0, 0))
	if err := off.Install(ctx, tree, locked, InstallOptions{}); err != nil || tree.Get("usr/lib/modules/2/vmlinuz") == nil {
		t.Fatalf("offline install: %v", err)
	}
	// A resolution that does not ask for trixie-backports leaves its pins
	// alone: trixie's kernel, from the cached index.
	plain, err = off.Resolve(ctx, []string{"kernel"}, lock)
	if err != nil || suites(plain) != "kernel=1.0@ libc6=2.41-12@" {
		t.Fatalf("offline without FromSuite: %s, %v", suites(plain), err)
	}
	// Offline without a lock: both suites' cached indexes.
	if got, err := off.Resolve(ctx, []string{"kernel"}, nil, bpo...); err != nil || suites(got) != want {
		t.Fatalf("offline from the cached indexes: %s, %v", suites(got), err)
	}
	// A suite never fetched: offline says what to do.
	if _, err := off.Resolve(ctx, []string{"kernel"}, nil, FromSuite("forky")); err == nil || !strings.Contains(err.Error(), "without --offline") {
		t.Fatalf("offline, uncached suite: err = %v", err)
	}
}

func TestAnotherSuiteSignedByAnotherKeyRejected(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	fa.addSuite("trixie-backports", []*fakeDeb{{name: "kernel", version: "2", arch: "amd64"}})
	fa.files["dists/trixie-backports/InRelease"] = clearSign(t, newTestKey(t), fa.releaseTextOf("trixie-backports", "stable-backports", "trixie-backports"))
	_, err := openFake(t, fa, t.TempDir(), nil).Resolve(context.Background(), []string{"kernel"}, nil, FromSuite("trixie-backports"))
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("err = %v, want ErrSignature", err)
	}
	if _, err := openFake(t, fa, t.TempDir(), nil).Resolve(context.Background(), []string{"kernel"}, nil, FromSuite("../x")); err == nil {
		t.Fatal("a suite name with .. was accepted")
	}
}

func TestLockPackageSuiteChecked(t *testing.T) {
	const pkgFmt = `{"version":1,"mirror":"m","suite":"trixie","arch":"amd64","packages":[{"name":"k","version":"1","arch":"amd64","filename":"pool/k.deb","size":1,"sha256":"%s","suite":%q}]}`
	sum := strings.Repeat("ab", 32)
	if _, err := ParseLock([]byte(fmt.Sprintf(pkgFmt, sum, "trixie-backports")), "l"); err != nil {
		t.Errorf("a package from trixie-backports: %v", err)
	}
	for _, bad := range []string{"trixie", "../x", "a b"} {
		if _, err := ParseLock([]byte(fmt.Sprintf(pkgFmt, sum, bad)), "l"); err == nil {
			t.Errorf("suite %q accepted", bad)
		}
	}
}
