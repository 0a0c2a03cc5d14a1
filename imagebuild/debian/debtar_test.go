package debian

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// sparseTar is a data.tar of a few KiB whose one entry, a PAX (GNU 1.0)
// sparse file, claims 10 GB: archive/tar expands the holes, so reading it
// as a regular file writes 10 GB of zeros. Go's tar.Writer drops the
// GNU.sparse records it is given, so they are written under another name
// and renamed in the output (PAX record data is not checksummed).
func sparseTar(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := make([]byte, 512) // the 1.0 sparse map: one 1-byte extent at 0
	copy(body, "1\n0\n1\n")
	body = append(body, 'A')
	h := &tar.Header{Name: "GNUSparseFile.0/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)),
		PAXRecords: map[string]string{"GNU.sparsX.major": "1", "GNU.sparsX.minor": "0",
			"GNU.sparsX.name": "./big", "GNU.sparsX.realsize": "10000000000"}}
	if err := tw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	tw.Write(body)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(buf.Bytes(), []byte("GNU.sparsX."), []byte("GNU.sparse."))
}

func TestUnpackRefusesSparseFiles(t *testing.T) {
	sparse := sparseTar(t)
	if _, err := readDataTar(bytes.NewReader(sparse), t.TempDir()); err == nil || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("data.tar: err = %v, want a refused sparse file", err)
	}
	deb := buildAr([]arMember{{"debian-binary", []byte("2.0\n")}, {"control.tar", sparse}, {"data.tar", buildTar(t, nil)}})
	if _, err := unpackTo(bytes.NewReader(deb), t.TempDir()); err == nil || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("control.tar: err = %v, want a refused sparse file", err)
	}
}

// FuzzDebTar feeds arbitrary bytes as the tar layers of a .deb: the
// control.tar and data.tar members of a .deb with a valid ar wrapper,
// through the unpacking the image builder uses (unpackTo; the members are
// uncompressed, so the control reader and readDataTar get the fuzzed bytes
// as they are). No input may panic, write outside the directory it is
// unpacked into, leave a symlink or anything but files and directories on
// the host, or write more file bytes than the tars hold.
//
// The seeds are small and most lack tar's two-block trailer (archive/tar
// takes a clean end of input as the end of the archive): the fuzzer
// minimizes every input that finds new code, and that costs time in the
// square of the input's size.
func FuzzDebTar(f *testing.F) {
	control := tarNoTrailer(f, tarEntry{name: "./control", typ: tar.TypeReg, mode: 0o644, body: "Package: x\n"})
	for _, data := range [][]tarEntry{
		{{name: "./", typ: tar.TypeDir, mode: 0o755}, {name: "./usr/bin/x", typ: tar.TypeReg, mode: 0o4755, body: "x"}},
		{{name: "x", typ: tar.TypeReg, body: "x"}, {name: "y", typ: tar.TypeLink, link: "./x"}},
		{{name: "./a", typ: tar.TypeSymlink, link: "/"}, {name: "./a/b", typ: tar.TypeReg, body: "b"}},
		{{name: "./etc/evil", typ: tar.TypeSymlink, link: "../../../../tmp"}},
		{{name: "./dev/null", typ: tar.TypeChar, mode: 0o666}, {name: "./p", typ: tar.TypeFifo}},
		{{name: "../escape", typ: tar.TypeReg, body: "z"}},
		{{name: "./l", typ: tar.TypeLink, link: "../../etc/passwd"}},
	} {
		f.Add(control, tarNoTrailer(f, data...))
	}
	f.Add(tarNoTrailer(f, tarEntry{name: "../control", typ: tar.TypeReg, body: "z"}), []byte{})
	f.Add(tarNoTrailer(f, tarEntry{name: "sub/x", typ: tar.TypeReg, body: "z"}), []byte{})
	f.Add(buildTar(f, nil), buildTar(f, []tarEntry{{name: "x", typ: tar.TypeReg, body: "x"}}))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, control, data []byte) { unpackDebTars(t, control, data) })
}

// tarNoTrailer is a tar of entries without the two zero blocks that end
// an archive.
func tarNoTrailer(t testing.TB, entries ...tarEntry) []byte {
	b := buildTar(t, entries)
	return b[:len(b)-1024]
}

func unpackDebTars(t testing.TB, control, data []byte) {
	deb := buildAr([]arMember{{"debian-binary", []byte("2.0\n")}, {"control.tar", control}, {"data.tar", data}})
	dir := scratchDir(t)
	target := filepath.Join(dir, "target")
	entries, err := unpackTo(bytes.NewReader(deb), target)
	checkUnpacked(t, dir, "target", len(control)+len(data))
	if err != nil {
		return
	}
	checkEntries(t, entries, filepath.Join(target, "root"))
	ents, err := os.ReadDir(filepath.Join(target, "control"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			t.Errorf("control member %s is not a regular file (%v)", e.Name(), e.Type())
		}
	}
}

// scratchDir is a directory removed after the test, on a tmpfs when
// /dev/shm is one: every input makes a dozen directories, which takes
// ten times longer on a disk-backed /tmp and slows the fuzzer as much.
func scratchDir(t testing.TB) string {
	d, err := os.MkdirTemp("/dev/shm", "debtar-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// checkUnpacked walks dir, which held nothing before the unpacking into
// dir/target: everything must lie under target, nothing may be a symlink,
// and the files together hold at most max bytes.
func checkUnpacked(t testing.TB, dir, target string, max int) {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		inside := rel == "." || rel == target || strings.HasPrefix(rel, target+"/") || strings.HasPrefix(target, rel+"/")
		if !inside {
			t.Errorf("%s written outside %s", rel, target)
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t.Errorf("%s: a symlink on the host", rel)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		case !d.IsDir():
			t.Errorf("%s: a %v on the host", rel, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total > int64(max) {
		t.Errorf("%d bytes of files from %d bytes of tar", total, max)
	}
}

// checkEntries checks a manifest against what was written under root: safe
// paths, and each regular file on the host with the size its last entry
// gives.
func checkEntries(t testing.TB, entries []ManifestEntry, root string) {
	t.Helper()
	last := map[string]ManifestEntry{}
	for _, e := range entries {
		if e.Path == "" || strings.HasPrefix(e.Path, "/") || strings.Contains("/"+e.Path+"/", "/../") ||
			strings.Contains("/"+e.Path+"/", "/./") || strings.Contains(e.Path, "//") {
			t.Fatalf("unsafe entry path %q", e.Path)
		}
		if e.Kind == filetree.Hardlink && e.Target == "" || e.Kind == filetree.Symlink && e.Target == "" {
			t.Errorf("%v %s without a target", e.Kind, e.Path)
		}
		last[e.Path] = e
	}
	for p, e := range last {
		if e.Kind != filetree.File {
			continue
		}
		info, err := os.Lstat(filepath.Join(root, filepath.FromSlash(p)))
		if err != nil || !info.Mode().IsRegular() || info.Size() != e.Size {
			t.Errorf("%s: manifest says a %d-byte file; host: %v, %v", p, e.Size, info, err)
		}
	}
}
