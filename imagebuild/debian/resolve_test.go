package debian

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRelations(t *testing.T) {
	rels, err := ParseRelations("libc6 (>= 2.36), python3:any (<< 3.14~) | python3-minimal, foo [amd64 !i386], bar (< 1), baz (> 2) <!nocheck>")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"libc6 (>= 2.36)", "python3:any (<< 3.14~) | python3-minimal", "foo", "bar (<= 1)", "baz (>= 2)"}
	if len(rels) != len(want) {
		t.Fatalf("got %d groups, want %d", len(rels), len(want))
	}
	for i := range want {
		if rels[i].String() != want[i] {
			t.Errorf("group %d = %q, want %q", i, rels[i], want[i])
		}
	}
	if !rels[2][0].appliesTo("amd64") || rels[2][0].appliesTo("arm64") {
		t.Error("[amd64 !i386] restriction misapplied")
	}
	for _, bad := range []string{"foo (>= )", "foo (~= 1)", "foo (>= 1", "(>= 1)", "foo [amd64", "a b"} {
		if _, err := ParseRelations(bad); err == nil {
			t.Errorf("ParseRelations(%q) succeeded, want an error", bad)
		}
	}
}

// pkg builds a test package: "name=version" plus fields.
func pkg(nv string, fields ...string) *Package {
	name, ver, _ := strings.Cut(nv, "=")
	p := &Package{Name: name, Version: ver, Arch: "amd64"}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, ": ")
		switch k {
		case "Depends":
			p.Depends = v
		case "Pre-Depends":
			p.PreDepends = v
		case "Provides":
			p.Provides = v
		case "Priority":
			p.Priority = v
		case "Architecture":
			p.Arch = v
		}
	}
	return p
}

func TestResolver(t *testing.T) {
	tests := []struct {
		name    string
		pkgs    []*Package
		request []string
		want    string // resolved "name=version ..." sorted by name
		wantErr string // substring of the error
		ignore  []string
	}{
		{
			name:    "ignored packages count as installed",
			pkgs:    []*Package{pkg("kernel=1", "Depends: initramfs-tools | linux-initramfs-tool, kmod"), pkg("initramfs-tools=1", "Provides: linux-initramfs-tool", "Depends: udev"), pkg("udev=1"), pkg("kmod=1")},
			request: []string{"kernel"},
			ignore:  []string{"initramfs-tools"},
			want:    "kernel=1 kmod=1",
		},
		{
			name:    "closure over Depends and Pre-Depends",
			pkgs:    []*Package{pkg("a=1", "Depends: b", "Pre-Depends: c"), pkg("b=1", "Depends: d"), pkg("c=1"), pkg("d=1"), pkg("unused=1")},
			request: []string{"a"},
			want:    "a=1 b=1 c=1 d=1",
		},
		{
			name:    "first satisfiable alternative",
			pkgs:    []*Package{pkg("a=1", "Depends: missing | b | c"), pkg("b=1"), pkg("c=1")},
			request: []string{"a"},
			want:    "a=1 b=1",
		},
		{
			name:    "alternative already chosen wins",
			pkgs:    []*Package{pkg("a=1", "Depends: b | c"), pkg("b=1"), pkg("c=1")},
			request: []string{"c", "a"},
			want:    "a=1 c=1",
		},
		{
			name:    "alternative whose version does not fit is skipped",
			pkgs:    []*Package{pkg("a=1", "Depends: b (>= 2) | c"), pkg("b=1"), pkg("c=1")},
			request: []string{"a"},
			want:    "a=1 c=1",
		},
		{
			name:    "highest version meeting the constraint",
			pkgs:    []*Package{pkg("a=1", "Depends: b (<< 3)"), pkg("b=1.0"), pkg("b=2.5"), pkg("b=3.0")},
			request: []string{"a"},
			want:    "a=1 b=2.5",
		},
		{
			name: "all operators",
			pkgs: []*Package{
				pkg("a=1", "Depends: b (= 1:2.0-1), c (>> 1.0), d (<= 1.0~rc1), e (>= 1.0)"),
				pkg("b=2.0-1"), pkg("b=1:2.0-1"), pkg("c=1.0"), pkg("c=1.0+b1"), pkg("d=1.0"), pkg("d=1.0~rc1"), pkg("e=1.0"),
			},
			request: []string{"a"},
			want:    "a=1 b=1:2.0-1 c=1.0+b1 d=1.0~rc1 e=1.0",
		},
		{
			name:    "virtual package by Provides, higher priority provider",
			pkgs:    []*Package{pkg("a=1", "Depends: awk"), pkg("gawk=5", "Provides: awk", "Priority: optional"), pkg("mawk=1", "Provides: awk", "Priority: required")},
			request: []string{"a"},
			want:    "a=1 mawk=1",
		},
		{
			name:    "virtual package already provided by a chosen package",
			pkgs:    []*Package{pkg("a=1", "Depends: awk"), pkg("gawk=5", "Provides: awk", "Priority: optional"), pkg("mawk=1", "Provides: awk", "Priority: required")},
			request: []string{"gawk", "a"},
			want:    "a=1 gawk=5",
		},
		{
			name:    "versioned dependency needs a versioned Provides",
			pkgs:    []*Package{pkg("a=1", "Depends: v (>= 2)"), pkg("p1=1", "Provides: v"), pkg("p2=1", "Provides: v (= 2.1)")},
			request: []string{"a"},
			want:    "a=1 p2=1",
		},
		{
			name:    "arch qualifiers",
			pkgs:    []*Package{pkg("a=1", "Depends: perl:any, b:amd64, c:arm64 | d"), pkg("perl=5"), pkg("b=1"), pkg("c=1"), pkg("d=1")},
			request: []string{"a"},
			want:    "a=1 b=1 d=1 perl=5",
		},
		{
			name:    "architecture restriction for another arch is ignored",
			pkgs:    []*Package{pkg("a=1", "Depends: b [i386], c [!i386]"), pkg("c=1")},
			request: []string{"a"},
			want:    "a=1 c=1",
		},
		{
			name:    "arch all packages",
			pkgs:    []*Package{pkg("a=1", "Depends: data"), pkg("data=1", "Architecture: all")},
			request: []string{"a"},
			want:    "a=1 data=1",
		},
		{
			name:    "dependency cycle",
			pkgs:    []*Package{pkg("a=1", "Depends: b"), pkg("b=1", "Depends: a")},
			request: []string{"a"},
			want:    "a=1 b=1",
		},
		{
			name:    "requested with a constraint",
			pkgs:    []*Package{pkg("a=1"), pkg("a=2")},
			request: []string{"a (<< 2)"},
			want:    "a=1",
		},
		{
			name:    "missing dependency names the package that needs it",
			pkgs:    []*Package{pkg("a=1", "Depends: b"), pkg("b=1", "Depends: gone (>= 1)")},
			request: []string{"a"},
			wantErr: "gone (>= 1) (needed by b 1)",
		},
		{
			name:    "missing requested package",
			pkgs:    []*Package{pkg("a=1")},
			request: []string{"zz"},
			wantErr: "zz (needed by requested)",
		},
		{
			name:    "version too old says which versions exist",
			pkgs:    []*Package{pkg("a=1", "Depends: b (>= 3)"), pkg("b=2")},
			request: []string{"a"},
			wantErr: "b has only version(s) 2",
		},
		{
			name:    "two versions of one package cannot coexist",
			pkgs:    []*Package{pkg("a=1", "Depends: b (= 1)"), pkg("c=1", "Depends: b (= 2)"), pkg("b=1"), pkg("b=2")},
			request: []string{"a", "c"},
			wantErr: "b 1 was already chosen",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUniverse()
			for _, p := range tt.pkgs {
				u.add(p)
			}
			u.sort()
			var reqs []Alternatives
			for _, r := range tt.request {
				rels, err := ParseRelations(r)
				if err != nil {
					t.Fatal(err)
				}
				reqs = append(reqs, rels[0])
			}
			ignore := map[string]bool{}
			for _, n := range tt.ignore {
				ignore[n] = true
			}
			got, err := resolveIndex(u, reqs, ignore)
			if tt.wantErr != "" {
				var miss *MissingError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &miss) {
					t.Fatalf("err = %v, want a MissingError containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if names(got) != tt.want {
				t.Fatalf("resolved %q, want %q", names(got), tt.want)
			}
		})
	}
}

func TestResolverIsDeterministic(t *testing.T) {
	u := newUniverse()
	for _, p := range []*Package{
		pkg("a=1", "Depends: v1, v2 | x, y"), pkg("p=1", "Provides: v1, v2"), pkg("q=1", "Provides: v1"),
		pkg("x=1", "Depends: q"), pkg("y=1", "Depends: p | q"),
	} {
		u.add(p)
	}
	u.sort()
	first := ""
	for i := 0; i < 20; i++ {
		got, err := resolveIndex(u, []Alternatives{{{Name: "a"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = names(got)
		} else if names(got) != first {
			t.Fatalf("run %d resolved %q, first run %q", i, names(got), first)
		}
	}
}

// resolveIndex resolves reqs from one index, as Resolve does without a
// lock or another suite.
func resolveIndex(u *universe, reqs []Alternatives, ignore map[string]bool) ([]Package, error) {
	r := &resolver{arch: "amd64", ignore: ignore, base: layer{index: u, where: "trixie/amd64"}}
	return r.run(reqs, "")
}

// A kernel from another suite: the requested package comes from it even
// though the archive's suite has one of the name; a dependency comes from
// the archive's suite when it can, from the other suite only when the
// archive's cannot satisfy it at the version needed.
func TestResolverFromSuite(t *testing.T) {
	base, bpo := newUniverse(), newUniverse()
	for _, p := range []*Package{
		pkg("linux-image-arm64=6.12", "Depends: linux-image-6.12=6.12"), pkg("linux-image-6.12=6.12", "Depends: kmod"),
		pkg("kmod=34"), pkg("linux-base=4.12"), pkg("debconf=1.5"),
	} {
		base.add(p)
	}
	for _, p := range []*Package{
		pkg("linux-image-arm64=7.3", "Depends: linux-image-7.3 (= 7.3)"),
		pkg("linux-image-7.3=7.3", "Pre-Depends: linux-base (>= 4.17~)", "Depends: kmod, initramfs-tools | linux-initramfs-tool"),
		pkg("linux-base=4.17~bpo", "Depends: debconf"), pkg("kmod=35"),
	} {
		p.Suite = "trixie-backports"
		bpo.add(p)
	}
	base.sort()
	bpo.sort()
	r := &resolver{arch: "amd64", ignore: map[string]bool{"initramfs-tools": true},
		base: layer{index: base, where: "trixie/amd64"}, from: &layer{index: bpo, where: "trixie-backports/amd64"}}
	got, err := r.run([]Alternatives{{{Name: "linux-image-arm64"}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	var desc []string
	for _, p := range got {
		desc = append(desc, p.Name+"="+p.Version+"@"+p.Suite)
	}
	want := "debconf=1.5@ kmod=34@ linux-base=4.17~bpo@trixie-backports linux-image-7.3=7.3@trixie-backports linux-image-arm64=7.3@trixie-backports"
	if strings.Join(desc, " ") != want {
		t.Errorf("resolved %s\nwant     %s", strings.Join(desc, " "), want)
	}

	// A requested package the other suite lacks is not taken from the
	// archive's suite instead.
	_, err = r.run([]Alternatives{{{Name: "debconf"}}}, "")
	var miss *MissingError
	if !errors.As(err, &miss) || miss.Where != "trixie-backports/amd64" {
		t.Errorf("debconf from trixie-backports: err = %v, want a MissingError for trixie-backports/amd64", err)
	}
	// A dependency neither suite satisfies names both.
	bpo.add(&Package{Name: "needy", Version: "1", Arch: "amd64", Depends: "kmod (>= 40)", Suite: "trixie-backports"})
	_, err = r.run([]Alternatives{{{Name: "needy"}}}, "")
	if !errors.As(err, &miss) || miss.Where != "trixie/amd64 or trixie-backports/amd64" ||
		!strings.Contains(miss.Detail, "trixie/amd64: kmod has only version(s) 34") {
		t.Errorf("unsatisfiable dependency: err = %v", err)
	}
}
