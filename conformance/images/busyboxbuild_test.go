package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBusyboxFromSource compiles busybox from the upstream tarball that
// Debian trixie's source package ships (or takes it from the user's
// ballast cache, as `make conformance` would) and runs its sh the way the
// tests that need it do: variables named with a '-' reach `sh -c env`,
// and on a read-only root `echo > /file` fails with ash's own message,
// the one the read-only busybox test expects in the container's log.
func TestBusyboxFromSource(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads busybox's source from deb.debian.org and compiles it (minutes) when the cache is cold")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skipf("busybox is compiled for this machine, %s/%s: not one the images are for", runtime.GOOS, runtime.GOARCH)
	}
	uc, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	o := Options{Arch: runtime.GOARCH, SourceDir: sourceDir(t), CacheDir: filepath.Join(uc, "ballast"), Log: &log}
	s, err := newSupply(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	bb, from, err := s.busybox(ctx)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("busybox in %v: %s\n%s", time.Since(start).Round(time.Second), from, log.String())
	if !strings.Contains(from, "busybox_1.37.0.orig.tar.bz2") {
		t.Errorf("from %q does not name the upstream tarball", from)
	}

	// A second build (a new supply, as a second `make conformance`)
	// takes the cached binary.
	log.Reset()
	s2, err := newSupply(o)
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := s2.busybox(ctx)
	if err != nil || !bytes.Equal(again, bb) || strings.Contains(log.String(), "compiling") {
		t.Errorf("second build: err %v, same binary %v, log:\n%s", err, bytes.Equal(again, bb), log.String())
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "busybox")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, bb, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(dir, "bin", "sh")); err != nil {
		t.Fatal(err)
	}
	run := func(env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, _ := cmd.CombinedOutput()
		return string(out)
	}

	names := []string{"A-B=1", "data-1=value-1", "p-data-1=value-1", "1-data-1=value-1", "$_-data-1=value-1", "#@!data-1=value-1"}
	out := run(append([]string{"PATH=/bin"}, names...), "sh", "-c", "env")
	for _, kv := range names {
		if !slices.Contains(strings.Split(out, "\n"), kv) {
			t.Errorf("sh -c env does not pass %s on:\n%s", kv, out)
		}
	}
	if out, want := run(nil, "sh", "-c", "echo x > /proc/nonexistent-dir/file"), "sh: can't create /proc/nonexistent-dir/file: nonexistent directory"; !strings.Contains(out, want) {
		t.Errorf("sh on a missing directory: %q, want %q", out, want)
	}
	if out := run(nil, "sh", "-c", "[[ -d / ]] && echo yes"); out != "yes\n" {
		t.Errorf("sh's [[ ]]: %q", out)
	}
	if out := run(nil, "--help"); !strings.HasPrefix(out, "BusyBox v1.37.0 (2024-") {
		t.Errorf("banner %q, want busybox 1.37.0 dated by its release", firstLine(out))
	}

	// The read-only-root test itself: the container's root is mounted
	// read-only and its command is `/bin/sh -c 'echo test > /file'`.
	// Here, a read-only bind mount of dir in a user and mount
	// namespace of their own (the mounts end with them), then chroot.
	// busybox's own mount and chroot, the host may have none.
	cmd := exec.Command(bin, "sh", "-c", `"$2" mount --bind "$1" "$1" && "$2" mount -o remount,bind,ro "$1" && exec "$2" chroot "$1" /bin/sh -c 'echo test > /file'`, "sh", dir, bin)
	cmd.Env = []string{"PATH=/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	ro, err := cmd.CombinedOutput()
	switch {
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC):
		t.Logf("no user namespaces here (%v): the read-only root is not tried", err)
	case strings.Contains(string(ro), "mount:"):
		t.Logf("no read-only bind mount in a user namespace here: %s", ro)
	default:
		if want := "/bin/sh: can't create /file: Read-only file system\n"; string(ro) != want {
			t.Errorf("on a read-only root: %q (%v), want %q", ro, err, want)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func TestEditConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), ".config")
	in := "#\n# Busybox version: 1.37.0\n#\nCONFIG_TC=y\n# CONFIG_STATIC is not set\nCONFIG_SH_IS_ASH=y\n"
	if err := os.WriteFile(p, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	set := []struct{ name, value string }{{"CONFIG_STATIC", "y"}, {"CONFIG_TC", ""}}
	if err := editConfig(p, set); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if want := "#\n# Busybox version: 1.37.0\n#\n# CONFIG_TC is not set\nCONFIG_STATIC=y\nCONFIG_SH_IS_ASH=y\n"; string(got) != want {
		t.Errorf("edited:\n%s\nwant:\n%s", got, want)
	}
	if err := checkConfig(p, append(set, struct{ name, value string }{"CONFIG_SH_IS_ASH", "y"})); err != nil {
		t.Error(err)
	}
	if err := checkConfig(p, []struct{ name, value string }{{"CONFIG_BASH_IS_ASH", "y"}}); err == nil || !strings.Contains(err.Error(), "CONFIG_BASH_IS_ASH=y") {
		t.Errorf("check of a missing setting: %v", err)
	}
	if err := editConfig(p, []struct{ name, value string }{{"CONFIG_NO_SUCH", "y"}}); err == nil || !strings.Contains(err.Error(), "CONFIG_NO_SUCH") {
		t.Errorf("edit of a missing setting: %v", err)
	}
}

func tarOf(t testing.TB, hdrs ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(h.Name))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestUnpackTar(t *testing.T) {
	old := time.Date(2024, 9, 26, 0, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	newest, err := unpackTar(bytes.NewReader(tarOf(t,
		&tar.Header{Name: "busybox-1.37.0/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: old},
		&tar.Header{Name: "busybox-1.37.0/scripts/gen", Typeflag: tar.TypeReg, Mode: 0o755, ModTime: old.Add(time.Hour)},
		&tar.Header{Name: "busybox-1.37.0/Makefile", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: old},
		&tar.Header{Name: "busybox-1.37.0/link", Typeflag: tar.TypeSymlink, Linkname: "Makefile", ModTime: old},
	)), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !newest.Equal(old.Add(time.Hour)) {
		t.Errorf("newest %v", newest)
	}
	st, err := os.Stat(filepath.Join(dir, "busybox-1.37.0", "scripts", "gen"))
	if err != nil || st.Mode().Perm() != 0o755 || !st.ModTime().Equal(old.Add(time.Hour)) {
		t.Errorf("scripts/gen: %v %v", st, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "busybox-1.37.0", "link")); err != nil || string(b) != "busybox-1.37.0/Makefile" {
		t.Errorf("link: %q %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "busybox-1.37.0")); err != nil || !st.ModTime().Equal(old) {
		t.Errorf("directory's time: %v %v", st, err)
	}

	outside := t.TempDir()
	for name, hdrs := range map[string][]*tar.Header{
		"dot-dot":  {{Name: "../escaped", Typeflag: tar.TypeReg, Mode: 0o644}},
		"absolute": {{Name: "/" + filepath.Join(outside, "escaped"), Typeflag: tar.TypeReg, Mode: 0o644}},
		"symlink": {
			{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "out/escaped", Typeflag: tar.TypeReg, Mode: 0o644},
		},
		"device": {{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
	} {
		if _, err := unpackTar(bytes.NewReader(tarOf(t, hdrs...)), t.TempDir()); err == nil {
			t.Errorf("%s: unpacked", name)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("a file was written outside: %v", ents)
	}
}

func FuzzUnpackTar(f *testing.F) {
	f.Add(tarOf(f, &tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(f, &tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: ".."}, &tar.Header{Name: "l/x", Typeflag: tar.TypeReg}))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "in")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		unpackTar(bytes.NewReader(data), dir)
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Fatalf("unpacking wrote beside its folder: %v", ents)
		}
	})
}
