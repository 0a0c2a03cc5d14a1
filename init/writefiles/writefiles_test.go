package writefiles

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
)

func testRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
	write(t, filepath.Join(root, "etc/group"), "root:x:0:\nalice:x:1000:\nweb:x:1001:alice\n")
	return root
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func gz(t *testing.T, s string) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestApply(t *testing.T) {
	root := testRoot(t)
	users, err := NewPasswdLookup(root)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString([]byte("from base64\n"))
	gzb64 := base64.StdEncoding.EncodeToString(gz(t, "from gzip\n"))
	// A base64 block scalar split over lines, as YAML users write it.
	wrapped := b64[:8] + "\n  " + b64[8:] + "\n"
	write(t, filepath.Join(root, "etc/existing"), "one\n")
	files := []cloudconfig.File{
		{Path: "/etc/plain.conf", Content: "hello\n"},
		{Path: "/opt/deep/dir/b64", Content: wrapped, Encoding: "b64", Permissions: "0600", Owner: "alice"},
		{Path: "/srv/gz", Content: gzb64, Encoding: "gz+b64", Owner: "alice:web", Permissions: "0755"},
		{Path: "/srv/raw-gz", Content: string(gz(t, "raw gzip\n")), Encoding: "gzip", Owner: "1234:5678"},
		{Path: "/etc/existing", Content: "two\n", Append: true},
	}
	if err := Apply(root, files, users); err != nil {
		t.Fatal(err)
	}
	check := func(p, content string, mode os.FileMode, uid, gid uint32) {
		t.Helper()
		full := filepath.Join(root, p)
		b, err := os.ReadFile(full)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != content {
			t.Errorf("%s: content %q, want %q", p, b, content)
		}
		fi, _ := os.Stat(full)
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
	check("etc/plain.conf", "hello\n", 0o644, 0, 0)
	check("opt/deep/dir/b64", "from base64\n", 0o600, 1000, 1000)
	check("srv/gz", "from gzip\n", 0o755, 1000, 1001)
	check("srv/raw-gz", "raw gzip\n", 0o644, 1234, 5678)
	check("etc/existing", "one\ntwo\n", 0o644, 0, 0)
	for _, d := range []string{"opt", "opt/deep", "opt/deep/dir", "srv"} {
		fi, err := os.Stat(filepath.Join(root, d))
		if err != nil || fi.Mode() != os.ModeDir|0o755 {
			t.Errorf("%s: %v %v, want dir 0755", d, fi.Mode(), err)
		}
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(filepath.Join(root, "srv"))
	if len(ents) != 2 {
		t.Errorf("srv has %d entries, want 2: %v", len(ents), ents)
	}
	// Overwriting is atomic and replaces content.
	if err := Apply(root, []cloudconfig.File{{Path: "/etc/plain.conf", Content: "bye\n"}}, users); err != nil {
		t.Fatal(err)
	}
	check("etc/plain.conf", "bye\n", 0o644, 0, 0)
}

func TestApplyCollectsErrors(t *testing.T) {
	root := testRoot(t)
	users, err := NewPasswdLookup(root)
	if err != nil {
		t.Fatal(err)
	}
	files := []cloudconfig.File{
		{Path: "relative/path", Content: "x"},
		{Path: "/etc/bad-b64", Content: "!!!", Encoding: "b64"},
		{Path: "/etc/good", Content: "ok"},
		{Path: "/etc/bad-owner", Content: "x", Owner: "mallory"},
		{Path: "/etc/bad-group", Content: "x", Owner: "alice:nogroup"},
		{Path: "/etc/bad-mode", Content: "x", Permissions: "rw-r--r--"},
		{Path: "/etc/bad-enc", Content: "x", Encoding: "rot13"},
	}
	err = Apply(root, files, users)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"relative/path", "/etc/bad-b64", "/etc/bad-owner", "/etc/bad-group", "/etc/bad-mode", "rot13", "permissions", `no user "mallory"`, `no group "nogroup"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "/etc/good") {
		t.Errorf("error mentions the good file: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/good")); err != nil || string(b) != "ok" {
		t.Errorf("good file not written despite others failing: %q %v", b, err)
	}
	for _, p := range []string{"etc/bad-owner", "etc/bad-b64"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s written despite error", p)
		}
	}
}

func TestPathStaysUnderRoot(t *testing.T) {
	root := testRoot(t)
	if err := Apply(root, []cloudconfig.File{{Path: "/../../escape", Content: "x"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "escape")); err != nil {
		t.Errorf("/../../escape not written as <root>/escape: %v", err)
	}
}

func TestLookup(t *testing.T) {
	l, err := NewPasswdLookup(testRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	for owner, want := range map[string][2]int{
		"": {0, 0}, "root": {0, 0}, "alice": {1000, 1000}, "alice:web": {1000, 1001}, "root:web": {0, 1001}, "42": {42, 42}, "42:7": {42, 7}, "alice:0": {1000, 0},
	} {
		uid, gid, err := l.Lookup(owner)
		if err != nil || uid != want[0] || gid != want[1] {
			t.Errorf("Lookup(%q) = %d:%d %v, want %d:%d", owner, uid, gid, err, want[0], want[1])
		}
	}
}

func TestNewPasswdLookupBadFile(t *testing.T) {
	root := testRoot(t)
	write(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nbroken:line\n")
	_, err := NewPasswdLookup(root)
	if err == nil || !strings.Contains(err.Error(), "passwd:2") {
		t.Errorf("error %v, want one naming passwd:2", err)
	}
}

func FuzzLookup(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/sh\n", "root:x:0:\n", "root:root")
	f.Fuzz(func(t *testing.T, passwd, group, owner string) {
		root := t.TempDir()
		os.Mkdir(filepath.Join(root, "etc"), 0o755)
		os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644)
		os.WriteFile(filepath.Join(root, "etc/group"), []byte(group), 0o644)
		l, err := NewPasswdLookup(root)
		if err != nil {
			return
		}
		l.Lookup(owner)
	})
}
