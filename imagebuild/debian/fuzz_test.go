package debian

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

const sampleRelease = `Origin: Debian
Label: Debian
Suite: stable
Codename: trixie
Date: Sat, 21 Nov 2026 09:15:44 UTC
Valid-Until: Sat, 28 Nov 2026 09:15:44 UTC
Acquire-By-Hash: yes
Architectures: all amd64 arm64
Components: main contrib non-free-firmware non-free
MD5Sum:
 3e498904a30e240573dac8ddac594e6f  1961125 contrib/Contents-all
SHA256:
 9ea7778e443144ca490668737a8ab22dd3e748bb99e805e22ec055abeb3c7fac  1234 main/binary-amd64/Packages.xz
 8dbd0029697f8c9b009eeb9a153c6536b62ca031fa0a5b4cec74e8d718fccef6 99 main/binary-arm64/Packages.xz
`

const samplePackages = `Package: bash
Version: 5.2.37-2+b5
Installed-Size: 7450
Maintainer: Matthias Klose <doko@debian.org>
Architecture: amd64
Replaces: bash-completion (<< 20060301-0), bash-doc (<= 2.05-1)
Depends: base-files (>= 2.1.12), debianutils (>= 5.6-0.1)
Pre-Depends: libc6 (>= 2.38), libtinfo6 (>= 6)
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.
 .
 Bash is ultimately intended to be a conformant implementation.
Essential: yes
Section: shells
Priority: required
Filename: pool/main/b/bash/bash_5.2.37-2+b5_amd64.deb
Size: 1502340
SHA256: 9ea7778e443144ca490668737a8ab22dd3e748bb99e805e22ec055abeb3c7fac

Package: mawk
Version: 1.3.4.20250131-1
Architecture: amd64
Provides: awk
Multi-Arch: foreign
Filename: pool/main/m/mawk/mawk_1.3.4.20250131-1_amd64.deb
Size: 141312
SHA256: 8dbd0029697f8c9b009eeb9a153c6536b62ca031fa0a5b4cec74e8d718fccef6
`

func TestParseReleaseSample(t *testing.T) {
	r, err := ParseRelease([]byte(sampleRelease), "Release")
	if err != nil {
		t.Fatal(err)
	}
	fh := r.SHA256["main/binary-amd64/Packages.xz"]
	if r.Codename != "trixie" || !r.AcquireByHash || fh.Size != 1234 || fh.SHA256[:8] != "9ea7778e" || len(r.SHA256) != 2 {
		t.Fatalf("parsed %+v", r)
	}
	if want := time.Date(2026, 11, 28, 9, 15, 44, 0, time.UTC); !r.ValidUntil.Equal(want) {
		t.Fatalf("Valid-Until = %v, want %v", r.ValidUntil, want)
	}
}

func TestParsePackagesSample(t *testing.T) {
	pkgs, err := ParsePackages(strings.NewReader(samplePackages), "Packages")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 || pkgs[0].Name != "bash" || !pkgs[0].Essential || pkgs[0].PreDepends != "libc6 (>= 2.38), libtinfo6 (>= 6)" ||
		pkgs[0].Size != 1502340 || pkgs[1].Provides != "awk" {
		t.Fatalf("parsed %+v", pkgs)
	}
	bad := strings.Replace(samplePackages, "Size: 141312", "Size: lots", 1)
	if _, err := ParsePackages(strings.NewReader(bad), "Packages"); err == nil || !strings.Contains(err.Error(), "Packages:20") {
		t.Fatalf("bad Size: err = %v, want one naming Packages:20 (the stanza's line)", err)
	}
	if _, err := ParsePackages(strings.NewReader(" orphan continuation\n"), "P"); err == nil || !strings.Contains(err.Error(), "P:1") {
		t.Fatalf("continuation: err = %v", err)
	}
}

func FuzzParseInRelease(f *testing.F) {
	key := newTestKey(f)
	kr := openpgp.EntityList{key}
	f.Add(clearSign(f, key, sampleRelease))
	f.Add([]byte(sampleRelease))
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSuite: x\n-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if text, err := VerifyInRelease(data, "InRelease", kr, time.Now()); err == nil {
			if _, err := ParseRelease(text, "InRelease"); err != nil {
				return
			}
		}
		r, err := ParseRelease(data, "Release")
		if err != nil {
			return
		}
		for p, fh := range r.SHA256 {
			if !isHexSHA256(fh.SHA256) || fh.Size < 0 || p == "" {
				t.Fatalf("accepted bad entry %q: %+v", p, fh)
			}
		}
	})
}

func FuzzParsePackages(f *testing.F) {
	f.Add([]byte(samplePackages))
	f.Add([]byte("Package: a\n\n\nPackage: b\n c\n .\n"))
	f.Add([]byte("# comment\nA: b\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		err := ParseStanzas(bytes.NewReader(data), "fuzz", func(s *Stanza) error {
			n++
			if len(s.Fields) == 0 || s.Line < 1 {
				t.Fatalf("empty stanza or bad line %d", s.Line)
			}
			return nil
		})
		pkgs, perr := ParsePackages(bytes.NewReader(data), "fuzz")
		if perr == nil {
			if err != nil {
				t.Fatalf("ParsePackages accepted what ParseStanzas refused: %v", err)
			}
			if len(pkgs) != n {
				t.Fatalf("%d packages from %d stanzas", len(pkgs), n)
			}
			for _, p := range pkgs {
				if p.Name == "" || !isHexSHA256(p.SHA256) || p.Size < 0 {
					t.Fatalf("accepted bad package %+v", p)
				}
				// The resolver must cope with whatever the index says.
				ParseRelations(p.Depends)
			}
		}
	})
}

func FuzzArReader(f *testing.F) {
	d := &fakeDeb{name: "x", version: "1", arch: "all", compression: "gz", entries: []tarEntry{
		{name: "./usr/bin/x", typ: tar.TypeReg, mode: 0o755, body: "x"},
		{name: "./usr/bin/y", typ: tar.TypeLink, link: "./usr/bin/x"},
		{name: "./bin", typ: tar.TypeSymlink, link: "usr/bin"},
	}}
	f.Add(d.build(f))
	f.Add(buildAr([]arMember{{"debian-binary", []byte("2.0\n")}, {"odd", []byte("abc")}}))
	f.Add([]byte(arMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		ar, err := NewArReader(bytes.NewReader(data))
		if err == nil {
			total := int64(len(arMagic))
			for {
				h, err := ar.Next()
				if err != nil {
					break
				}
				n, err := io.Copy(io.Discard, ar)
				if err == nil && n != h.Size {
					t.Fatalf("member %q: read %d bytes, header says %d", h.Name, n, h.Size)
				}
				total += 60 + n
				if total > int64(len(data))+int64(len(data)/2)+60 {
					t.Fatalf("read more than the input holds")
				}
			}
		}
		// The whole .deb path, unpacking into a scratch directory.
		dir := t.TempDir()
		entries, err := unpackTo(bytes.NewReader(data), dir)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Path == "" || strings.HasPrefix(e.Path, "/") || strings.Contains("/"+e.Path+"/", "/../") {
				t.Fatalf("unsafe entry path %q", e.Path)
			}
		}
	})
}

func FuzzParseLock(f *testing.F) {
	l := NewLock(Config{Arch: "amd64"}, []Package{{Name: "bash", Version: "5.2-1", Arch: "amd64",
		Filename: "pool/main/b/bash/bash_5.2-1_amd64.deb", Size: 10,
		SHA256: "9ea7778e443144ca490668737a8ab22dd3e748bb99e805e22ec055abeb3c7fac", Depends: "libc6"}})
	b, _ := l.Marshal()
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseLock(data, "fuzz.lock")
		if err != nil {
			return
		}
		// A lock that parses must re-encode to something that parses the same.
		out, err := l.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		l2, err := ParseLock(out, "again")
		if err != nil {
			t.Fatalf("re-encoded lock does not parse: %v", err)
		}
		out2, _ := l2.Marshal()
		if !bytes.Equal(out, out2) {
			t.Fatal("lock encoding is not stable")
		}
	})
}
