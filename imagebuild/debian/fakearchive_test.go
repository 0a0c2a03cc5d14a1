package debian

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// tarEntry describes one member of a test data.tar.
type tarEntry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	link     string
	body     string
}

// fakeDeb is a test package and the .deb built from it.
type fakeDeb struct {
	name, version, arch string
	depends, preDepends string
	provides, priority  string
	entries             []tarEntry
	compression         string // "xz", "zst" or "gz" for data.tar
}

func buildTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, Linkname: e.link}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t testing.TB, kind string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch kind {
	case "xz":
		w, err := xz.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case "zst":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case "gz":
		w := gzip.NewWriter(&buf)
		w.Write(data)
		w.Close()
	default:
		t.Fatalf("compression %q", kind)
	}
	return buf.Bytes()
}

type arMember struct {
	name string
	data []byte
}

func buildAr(members []arMember) []byte {
	var buf bytes.Buffer
	buf.WriteString(arMagic)
	for _, m := range members {
		fmt.Fprintf(&buf, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m.name, 0, 0, 0, "100644", len(m.data))
		buf.Write(m.data)
		if len(m.data)%2 == 1 {
			buf.WriteByte('\n')
		}
	}
	return buf.Bytes()
}

func (d *fakeDeb) build(t testing.TB) []byte {
	t.Helper()
	ctl := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: test\nDescription: test\n", d.name, d.version, d.arch)
	control := compress(t, "xz", buildTar(t, []tarEntry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "./control", typ: tar.TypeReg, mode: 0o644, body: ctl},
		{name: "./postinst", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\n"},
	}))
	comp := d.compression
	if comp == "" {
		comp = "xz"
	}
	data := compress(t, comp, buildTar(t, d.entries))
	return buildAr([]arMember{
		{"debian-binary", []byte("2.0\n")},
		{"control.tar.xz", control},
		{"data.tar." + comp, data},
	})
}

// fakeArchive serves a signed archive over HTTP.
type fakeArchive struct {
	t      testing.TB
	srv    *httptest.Server
	key    *openpgp.Entity
	files  map[string][]byte
	mu     sync.Mutex
	hits   map[string]int
	suite  string
	arch   string
	debs   map[string][]byte // name -> .deb
	pkgs   map[string]*Package
	extraR string   // extra Release fields
	date   string   // the Release's Date; "" is a fixed day
	others []string // further suites (addSuite), signed with the same key
}

// testKeyTime is when test keys and signatures are made: a fixed day in
// the past, so that a test that verifies "as of" some date (Valid-Until)
// does not meet a key made after it.
var testKeyTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestKey(t testing.TB) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity("ballast test archive", "", "test@example.invalid",
		&packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Time: func() time.Time { return testKeyTime }})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func newFakeArchive(t testing.TB, debs []*fakeDeb) *fakeArchive {
	t.Helper()
	fa := &fakeArchive{t: t, key: newTestKey(t), files: map[string][]byte{}, hits: map[string]int{},
		suite: "trixie", arch: "amd64", debs: map[string][]byte{}, pkgs: map[string]*Package{}}
	fa.srv = httptest.NewServer(http.HandlerFunc(fa.serve))
	t.Cleanup(fa.srv.Close)
	fa.publish("trixie", debs)
	fa.sign()
	return fa
}

// addSuite publishes debs as another suite of the mirror (a backports
// suite), in the same pool, and signs it.
func (fa *fakeArchive) addSuite(suite string, debs []*fakeDeb) {
	fa.others = append(fa.others, suite)
	fa.publish(suite, debs)
	fa.sign()
}

// publish builds debs into the pool and writes suite's Packages indexes.
func (fa *fakeArchive) publish(suite string, debs []*fakeDeb) {
	t := fa.t
	var packages strings.Builder
	for _, d := range debs {
		b := d.build(t)
		sum := sha256.Sum256(b)
		p := &Package{Name: d.name, Version: d.version, Arch: d.arch, Size: int64(len(b)),
			SHA256: hex.EncodeToString(sum[:]), Depends: d.depends, PreDepends: d.preDepends,
			Provides: d.provides, Priority: d.priority,
			Filename: fmt.Sprintf("pool/main/%c/%s/%s_%s_%s.deb", d.name[0], d.name, d.name, d.version, d.arch)}
		fa.files[p.Filename] = b
		fa.debs[d.name] = b
		fa.pkgs[d.name+"_"+d.version] = p
		fmt.Fprintf(&packages, "Package: %s\nVersion: %s\nArchitecture: %s\n", p.Name, p.Version, p.Arch)
		for _, f := range [][2]string{{"Pre-Depends", p.PreDepends}, {"Depends", p.Depends}, {"Provides", p.Provides}, {"Priority", p.Priority}} {
			if f[1] != "" {
				fmt.Fprintf(&packages, "%s: %s\n", f[0], f[1])
			}
		}
		fmt.Fprintf(&packages, "Filename: %s\nSize: %d\nSHA256: %s\nDescription: %s\n a test package\n .\n second paragraph\n\n",
			p.Filename, p.Size, p.SHA256, p.Name)
	}
	fa.files["dists/"+suite+"/main/binary-amd64/Packages.xz"] = compress(t, "xz", []byte(packages.String()))
	fa.files["dists/"+suite+"/non-free-firmware/binary-amd64/Packages.xz"] = compress(t, "xz", nil)
}

// releaseText is the Release file listing the current index files.
func (fa *fakeArchive) releaseText() string { return fa.releaseTextOf("trixie", "stable", fa.suite) }

// releaseTextOf is the Release file of the suite published under
// dists/<dir>, listing its current index files.
func (fa *fakeArchive) releaseTextOf(dir, suite, codename string) string {
	var b strings.Builder
	date := fa.date
	if date == "" {
		date = "Sat, 21 Nov 2026 09:15:44 UTC"
	}
	fmt.Fprintf(&b, "Origin: Debian\nSuite: %s\nCodename: %s\nDate: %s\n%sArchitectures: amd64\nComponents: main non-free-firmware\nSHA256:\n",
		suite, codename, date, fa.extraR)
	var paths []string
	for p := range fa.files {
		if strings.HasPrefix(p, "dists/"+dir+"/") && (strings.HasSuffix(p, "Packages.xz") || strings.Contains(p, "/source/Sources.")) {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		sum := sha256.Sum256(fa.files[p])
		fmt.Fprintf(&b, " %x %d %s\n", sum, len(fa.files[p]), strings.TrimPrefix(p, "dists/"+dir+"/"))
	}
	return b.String()
}

// fakeSource is a test source package.
type fakeSource struct {
	name, version string
	files         map[string]string // contents by file name
	extraOnly     bool              // Extra-Source-Only: yes
}

// addSources publishes srcs in main's Sources index (and an empty one for
// non-free-firmware), compressed as comp ("xz" or "gz"), and signs the
// Release again.
func (fa *fakeArchive) addSources(comp string, srcs []fakeSource) {
	var b strings.Builder
	for _, s := range srcs {
		dir := fmt.Sprintf("pool/main/%c/%s", s.name[0], s.name)
		fmt.Fprintf(&b, "Package: %s\nBinary: %s\nVersion: %s\nMaintainer: test\nDirectory: %s\n", s.name, s.name, s.version, dir)
		if s.extraOnly {
			b.WriteString("Extra-Source-Only: yes\n")
		}
		var names []string
		for n := range s.files {
			names = append(names, n)
		}
		sort.Strings(names)
		b.WriteString("Checksums-Sha256:\n")
		for _, n := range names {
			fmt.Fprintf(&b, " %x %d %s\n", sha256.Sum256([]byte(s.files[n])), len(s.files[n]), n)
			fa.files[dir+"/"+n] = []byte(s.files[n])
		}
		b.WriteString("Priority: optional\nSection: utils\n\n")
	}
	fa.files["dists/trixie/main/source/Sources."+comp] = compress(fa.t, comp, []byte(b.String()))
	fa.files["dists/trixie/non-free-firmware/source/Sources."+comp] = compress(fa.t, comp, nil)
	fa.sign()
}

// sign (re)writes InRelease from the current index files.
func (fa *fakeArchive) sign() {
	fa.files["dists/trixie/InRelease"] = clearSign(fa.t, fa.key, fa.releaseText())
	for _, o := range fa.others {
		fa.files["dists/"+o+"/InRelease"] = clearSign(fa.t, fa.key, fa.releaseTextOf(o, "stable-backports", o))
	}
}

func clearSign(t testing.TB, key *openpgp.Entity, text string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := clearsign.Encode(&buf, key.PrivateKey, &packet.Config{Time: func() time.Time { return testKeyTime }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (fa *fakeArchive) serve(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/debian/")
	fa.mu.Lock()
	fa.hits[p]++
	b, ok := fa.files[p]
	fa.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(b)
}

func (fa *fakeArchive) requests() int {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	n := 0
	for _, c := range fa.hits {
		n += c
	}
	return n
}

func (fa *fakeArchive) debRequests() int {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	n := 0
	for p, c := range fa.hits {
		if strings.HasSuffix(p, ".deb") {
			n += c
		}
	}
	return n
}

func (fa *fakeArchive) config(t testing.TB, cache string) Config {
	return Config{
		Mirror:   fa.srv.URL + "/debian",
		Arch:     fa.arch,
		CacheDir: cache,
		Keyring:  openpgp.EntityList{fa.key},
	}
}
