package filetree

import (
	"errors"
	"testing"
	"time"
)

func TestAddCreatesParentsAndSorts(t *testing.T) {
	tr := New(time.Unix(0, 0))
	if err := tr.AddFile("usr/bin/env", 0o755, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := tr.AddSymlink("bin", "usr/bin"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range tr.Entries() {
		got = append(got, e.Path+":"+e.Kind.String())
	}
	want := []string{":dir", "bin:symlink", "usr:dir", "usr/bin:dir", "usr/bin/env:file"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestResolveFollowsDirectorySymlinks(t *testing.T) {
	tr := New(time.Unix(0, 0))
	_ = tr.AddSymlink("bin", "usr/bin")
	_ = tr.AddSymlink("lib64", "/usr/lib64")
	for in, want := range map[string]string{"bin/sh": "usr/bin/sh", "/lib64/ld.so": "usr/lib64/ld.so", "etc/x": "etc/x", "bin": "bin"} {
		got, err := tr.Resolve(in)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestCleanRefusesClimbing(t *testing.T) {
	for _, p := range []string{"../etc/passwd", "a/../../b", "x\x00y"} {
		if _, err := Clean(p); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("Clean(%q) err = %v, want ErrInvalidPath", p, err)
		}
	}
}

func TestReplacingDirWithFileDropsChildren(t *testing.T) {
	tr := New(time.Unix(0, 0))
	_ = tr.AddFile("a/b/c", 0o644, nil)
	_ = tr.AddFile("a", 0o644, []byte("now a file"))
	if tr.Get("a/b/c") != nil || tr.Get("a/b") != nil {
		t.Fatal("children of replaced dir survived")
	}
	if tr.Len() != 2 {
		t.Fatalf("len = %d, want 2", tr.Len())
	}
}
