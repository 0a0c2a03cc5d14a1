package debian

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testSources() []fakeSource {
	return []fakeSource{
		{name: "busybox", version: "1:1.36.1-9", files: map[string]string{
			"busybox_1.36.1-9.dsc":           "dsc 1.36",
			"busybox_1.36.1.orig.tar.bz2":    "upstream 1.36.1",
			"busybox_1.36.1-9.debian.tar.xz": "debian 1.36",
		}},
		{name: "busybox", version: "1:1.37.0-6", files: map[string]string{
			"busybox_1.37.0-6.dsc":            "dsc 1.37",
			"busybox_1.37.0.orig.tar.bz2":     "upstream 1.37.0, pristine",
			"busybox_1.37.0.orig.tar.bz2.asc": "signature",
			"busybox_1.37.0-6.debian.tar.xz":  "debian 1.37 patches",
		}},
		// Kept for another package's Built-Using: not the suite's source.
		{name: "busybox", version: "1:1.38.0-1", extraOnly: true, files: map[string]string{
			"busybox_1.38.0.orig.tar.bz2": "upstream 1.38.0",
		}},
		{name: "native", version: "3.1", files: map[string]string{"native_3.1.dsc": "dsc", "native_3.1.tar.xz": "all of it"}},
	}
}

func (fa *fakeArchive) sourceHits() int {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	n := 0
	for p, c := range fa.hits {
		if strings.Contains(p, "/source/") || strings.HasPrefix(p, "pool/main/b/busybox/") {
			n += c
		}
	}
	return n
}

func TestSourcePackageAndFile(t *testing.T) {
	ctx := context.Background()
	fa := newFakeArchive(t, testDebs())
	fa.addSources("xz", testSources())
	cache := t.TempDir()
	a := openFake(t, fa, cache, nil)
	// A build of binary packages reads no Sources index.
	if _, err := a.Resolve(ctx, []string{"app"}, nil); err != nil {
		t.Fatal(err)
	}
	if n := fa.sourceHits(); n != 0 {
		t.Fatalf("resolving binary packages made %d requests for sources", n)
	}

	sp, err := a.SourcePackage(ctx, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	if sp.Version != "1:1.37.0-6" || sp.Directory != "pool/main/b/busybox" || len(sp.Files) != 4 || sp.Component != "main" {
		t.Fatalf("SourcePackage = %+v, want 1:1.37.0-6 with its 4 files", sp)
	}
	orig, err := sp.Orig()
	if err != nil || orig.Name != "busybox_1.37.0.orig.tar.bz2" {
		t.Fatalf("Orig = %+v, %v", orig, err)
	}
	p, err := a.FetchSourceFile(ctx, sp, orig.Name)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "upstream 1.37.0, pristine" {
		t.Fatalf("%s: %q, %v", p, b, err)
	}
	if want := filepath.Join(cache, "debian", "sources", orig.SHA256, orig.Name); p != want {
		t.Errorf("path %s, want %s", p, want)
	}

	// Cached: no request, not even for the index.
	before := fa.requests()
	if _, err := a.SourcePackage(ctx, "busybox"); err != nil {
		t.Fatal(err)
	}
	if p2, err := a.FetchSourceFile(ctx, sp, orig.Name); err != nil || p2 != p {
		t.Fatalf("second fetch: %s, %v", p2, err)
	}
	if n := fa.requests() - before; n != 0 {
		t.Fatalf("cached source file: %d requests", n)
	}
	// A cached file that changed is fetched again.
	if err := os.WriteFile(p, []byte("upstream 1.37.0, altered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.FetchSourceFile(ctx, sp, orig.Name); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "upstream 1.37.0, pristine" {
		t.Fatalf("after refetch: %q", b)
	}

	// Offline, from the cache: the index and the file; another file is
	// not there.
	off := openFake(t, fa, cache, func(c *Config) { c.Offline = true })
	sp2, err := off.SourcePackage(ctx, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := off.FetchSourceFile(ctx, sp2, orig.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := off.FetchSourceFile(ctx, sp2, "busybox_1.37.0-6.dsc"); err == nil || !strings.Contains(err.Error(), "offline") {
		t.Fatalf("offline, uncached: err = %v", err)
	}
	if _, err := a.FetchSourceFile(ctx, sp, "busybox_1.36.1.orig.tar.bz2"); err == nil || !strings.Contains(err.Error(), "has no file") {
		t.Fatalf("a file of another version: err = %v", err)
	}

	if _, err := (&SourcePackage{Name: "native", Version: "3.1", Files: []SourceFile{{Name: "native_3.1.tar.xz"}}}).Orig(); err == nil {
		t.Error("a native package has an orig tarball")
	}
}

func TestSourcesGzip(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	fa.addSources("gz", testSources())
	sp, err := openFake(t, fa, t.TempDir(), nil).SourcePackage(context.Background(), "native")
	if err != nil || sp.Version != "3.1" {
		t.Fatalf("SourcePackage = %+v, %v", sp, err)
	}
}

func TestSourcePackageMissing(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	fa.addSources("xz", testSources())
	_, err := openFake(t, fa, t.TempDir(), nil).SourcePackage(context.Background(), "no-such-source")
	if !errors.Is(err, ErrNoSourcePackage) || !strings.Contains(err.Error(), `"no-such-source"`) || !strings.Contains(err.Error(), "trixie") {
		t.Fatalf("err = %v, want ErrNoSourcePackage naming the package and the suite", err)
	}
}

func TestSourceFileHashMismatchRefused(t *testing.T) {
	ctx := context.Background()
	fa := newFakeArchive(t, testDebs())
	fa.addSources("xz", testSources())
	cache := t.TempDir()
	a := openFake(t, fa, cache, nil)
	sp, err := a.SourcePackage(ctx, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	// The index lists one tarball; the pool serves another of the same size.
	fa.files["pool/main/b/busybox/busybox_1.37.0.orig.tar.bz2"] = []byte("upstream 1.37.0, patched!")
	_, err = a.FetchSourceFile(ctx, sp, "busybox_1.37.0.orig.tar.bz2")
	if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), "busybox 1:1.37.0-6") {
		t.Fatalf("err = %v, want ErrHashMismatch naming the source package", err)
	}
	var left []string
	filepath.WalkDir(filepath.Join(cache, "debian", "sources"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Fatalf("cache holds %q after a bad download", left)
	}
}

func TestSourcesIndexHashMismatchRejected(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	fa.addSources("xz", testSources())
	fa.files["dists/trixie/main/source/Sources.xz"] = compress(t, "xz", []byte("Package: evil\n"))
	_, err := openFake(t, fa, t.TempDir(), nil).SourcePackage(context.Background(), "busybox")
	if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), "main/source/Sources.xz") {
		t.Fatalf("err = %v, want ErrHashMismatch naming Sources.xz", err)
	}
}

func TestSourcesNotPublished(t *testing.T) {
	fa := newFakeArchive(t, testDebs())
	_, err := openFake(t, fa, t.TempDir(), nil).SourcePackage(context.Background(), "busybox")
	if err == nil || !strings.Contains(err.Error(), "main/source/Sources") {
		t.Fatalf("err = %v, want one naming the missing Sources index", err)
	}
}

const sampleSources = `Package: busybox
Binary: busybox, busybox-static, busybox-udeb, busybox-syslogd, udhcpc, udhcpd
Version: 1:1.37.0-6
Maintainer: Debian Install System Team <debian-boot@lists.debian.org>
Build-Depends: debhelper-compat (= 13), zip <!nocheck>
Architecture: any all
Format: 3.0 (quilt)
Files:
 2d4e4ad6bbbe6e0de35f4e3ad67ec2a5 2565764 busybox_1.37.0.orig.tar.bz2
Checksums-Sha256:
 8a5b4b1a0f2a7cf3cbd0d9f4b6cbd4d0e0c0d0f0a0b0c0d0e0f0a0b0c0d0e0f0 2377 busybox_1.37.0-6.dsc
 3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4 2565764 busybox_1.37.0.orig.tar.bz2
 9b0d0a7c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f00 60844 busybox_1.37.0-6.debian.tar.xz
Homepage: http://www.busybox.net
Package-List: 
 busybox deb utils optional arch=any
Directory: pool/main/b/busybox
Priority: optional
Section: misc

Package: hello
Version: 2.10-3
Directory: pool/main/h/hello
Checksums-Sha256:
 3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4 10 hello_2.10.orig.tar.gz
`

func TestParseSourcesSample(t *testing.T) {
	srcs, err := ParseSources(strings.NewReader(sampleSources), "Sources")
	if err != nil {
		t.Fatal(err)
	}
	if len(srcs) != 2 || srcs[0].Name != "busybox" || srcs[0].Version != "1:1.37.0-6" || len(srcs[0].Files) != 3 ||
		srcs[0].Files[1] != (SourceFile{"busybox_1.37.0.orig.tar.bz2", 2565764, "3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4"}) {
		t.Fatalf("parsed %+v", srcs)
	}
	for _, bad := range []struct{ from, to, want string }{
		{"Directory: pool/main/b/busybox", "Directory: ../../etc", "bad Directory"},
		{"Directory: pool/main/b/busybox", "Directory: /pool", "bad Directory"},
		{"60844 busybox_1.37.0-6.debian.tar.xz", "60844 ../x.tar.xz", "bad file name"},
		{"60844 busybox", "-1 busybox", "bad size"},
		{"Version: 1:1.37.0-6", "Version: :1", "version"},
		{"Directory: pool/main/b/busybox\n", "", "missing Directory"},
	} {
		in := strings.Replace(sampleSources, bad.from, bad.to, 1)
		if _, err := ParseSources(strings.NewReader(in), "Sources"); err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "Sources:1") {
			t.Errorf("%q -> %q: err = %v, want one with %q at Sources:1", bad.from, bad.to, err, bad.want)
		}
	}
}

func FuzzParseSources(f *testing.F) {
	f.Add([]byte(sampleSources))
	f.Add([]byte("Package: a\nVersion: 1\nDirectory: d\nChecksums-Sha256:\n x 1 y\n"))
	f.Add([]byte("Package: a\nExtra-Source-Only: yes\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		srcs, err := ParseSources(bytes.NewReader(data), "fuzz")
		if err != nil {
			return
		}
		for _, sp := range srcs {
			if sp.Name == "" || !safeRelPath(sp.Directory) || len(sp.Files) == 0 {
				t.Fatalf("accepted bad source package %+v", sp)
			}
			if _, err := ParseVersion(sp.Version); err != nil {
				t.Fatalf("accepted bad version: %+v", sp)
			}
			for _, f := range sp.Files {
				if !isHexSHA256(f.SHA256) || f.Size < 0 || f.Name == "" || strings.ContainsAny(f.Name, "/\\") || f.Name == ".." {
					t.Fatalf("accepted bad file %+v", f)
				}
			}
			sp.Orig()
		}
	})
}
