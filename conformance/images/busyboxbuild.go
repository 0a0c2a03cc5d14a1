package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ballast-os/ballast/imagebuild/componentimages"
	"github.com/ballast-os/ballast/imagebuild/debian"
	"github.com/ballast-os/ballast/imagebuild/runtimebin"
)

// busyboxVersion is the busybox upstream's image is: the Docker library's
// busybox:1.37, a static build of the release with ash as sh.
const busyboxVersion = "1.37.0"

// busyboxConfig are the changes made to busybox's defconfig, in
// .config's syntax ("" is "is not set").
var busyboxConfig = []struct{ name, value string }{
	// The image has no libc: busybox is its only program.
	{"CONFIG_STATIC", "y"},
	// tc needs the CBQ definitions that Linux 6.8 dropped from its
	// headers, and fails to compile against them; no test runs tc.
	{"CONFIG_TC", ""},
	{"CONFIG_FEATURE_TC_INGRESS", ""},
}

// busyboxWant are settings of defconfig the images rely on, checked in
// the final .config: ash is sh (the tests' `sh -c`), with the bash
// extensions ([[ ]]) Alpine's and Docker's busybox have.
var busyboxWant = []struct{ name, value string }{
	{"CONFIG_ASH", "y"},
	{"CONFIG_SH_IS_ASH", "y"},
	{"CONFIG_ASH_BASH_COMPAT", "y"},
}

// busybox compiles busybox from the upstream tarball that Debian's source
// package ships (busybox_1.37.0.orig.tar.bz2, checked against the signed
// Sources index), without Debian's patches. Debian's ash drops, on start,
// every environment variable whose name is not a shell name (its
// revert-9c143ce5 patch); upstream's passes them on, and the ConfigMap
// and Secret tests "should be consumable as environment variable names
// with various prefixes" (and "via the environment") give `sh -c env`
// data-1, 1-data-1, $_-data-1, #@!data-1 and p-data-1 and look for them.
// bash as sh would pass them on too, but "a read only busybox container
// should not write to root filesystem" expects ash's own message,
// "/bin/sh: can't create /file: Read-only file system", in the log.
//
// It builds with this machine's gcc and make, static against its glibc,
// so only for this machine's architecture. The binary is cached under a
// key of the tarball's hash, the configuration and the toolchain; a build
// takes about a minute on two cores.
func (s *realSupply) busybox(ctx context.Context) ([]byte, string, error) {
	if s.busyboxBin != nil {
		return s.busyboxBin, s.busyboxFrom, nil
	}
	if runtime.GOOS != "linux" || s.o.Arch != runtime.GOARCH {
		return nil, "", fmt.Errorf("busybox is compiled with this machine's gcc, for its own architecture (%s/%s); building it for %s is not supported",
			runtime.GOOS, runtime.GOARCH, s.o.Arch)
	}
	a, err := s.debian(ctx)
	if err != nil {
		return nil, "", err
	}
	sp, err := a.SourcePackage(ctx, "busybox")
	if err != nil {
		return nil, "", err
	}
	if v, err := debian.ParseVersion(sp.Version); err != nil || v.Upstream != busyboxVersion {
		return nil, "", fmt.Errorf("Debian %s has busybox %s; the image is busybox %s as upstream's (update busyboxVersion after checking the tests)",
			a.Config().Suite, sp.Version, busyboxVersion)
	}
	orig, err := sp.Orig()
	if err != nil {
		return nil, "", err
	}
	from := fmt.Sprintf("busybox %s compiled from Debian's %s (source %s, without its patches), static", busyboxVersion, orig.Name, sp.Version)
	toolchain, err := busyboxToolchain(ctx)
	if err != nil {
		return nil, "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "ballast-busybox-1\n%s\n%s %d %s\n", s.o.Arch, orig.Name, orig.Size, orig.SHA256)
	for _, c := range busyboxConfig {
		fmt.Fprintf(h, "%s=%s\n", c.name, c.value)
	}
	h.Write(toolchain)
	name := fmt.Sprintf("busybox-%s-%s", s.o.Arch, hex.EncodeToString(h.Sum(nil))[:16])
	p := filepath.Join(s.binDir, name)
	data, err := os.ReadFile(p)
	if err == nil {
		if err := componentimages.CheckELF(data, s.o.Arch); err != nil {
			return nil, "", fmt.Errorf("%s: %w", p, err)
		}
		s.busyboxBin, s.busyboxFrom = data, from
		return data, from, nil
	}
	tarball, err := a.FetchSourceFile(ctx, sp, orig.Name)
	if err != nil {
		return nil, "", err
	}
	tmp, err := os.MkdirTemp(s.binDir, "build-busybox-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	fmt.Fprintf(s.o.Log, "busybox %s: compiling from %s (a minute or more)\n", busyboxVersion, orig.Name)
	bin, err := buildBusybox(ctx, tarball, tmp, s.o.Log)
	if err != nil {
		return nil, "", fmt.Errorf("busybox %s from %s: %w", busyboxVersion, orig.Name, err)
	}
	if data, err = os.ReadFile(bin); err != nil {
		return nil, "", err
	}
	if err := componentimages.CheckELF(data, s.o.Arch); err != nil {
		return nil, "", fmt.Errorf("busybox %s: %w", busyboxVersion, err)
	}
	if err := checkAsh(ctx, bin); err != nil {
		return nil, "", fmt.Errorf("busybox %s: %w", busyboxVersion, err)
	}
	if err := os.Rename(bin, p); err != nil {
		return nil, "", err
	}
	componentimages.Prune(s.binDir, "busybox-"+s.o.Arch+"-", "", name)
	fmt.Fprintf(s.o.Log, "busybox %s: compiled in %v\n", busyboxVersion, time.Since(start).Round(time.Second))
	s.busyboxBin, s.busyboxFrom = data, from
	return data, from, nil
}

// busyboxToolchain describes what a busybox build depends on besides its
// source and configuration: gcc's and make's versions, the glibc it is
// linked with and the kernel headers it is compiled against.
func busyboxToolchain(ctx context.Context) ([]byte, error) {
	var b bytes.Buffer
	for _, argv := range [][]string{{"gcc", "--version"}, {"make", "--version"}} {
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		if err != nil {
			return nil, fmt.Errorf("busybox is compiled from source and needs %s (scripts/install-deps test installs it): %w", argv[0], err)
		}
		first, _, _ := strings.Cut(string(out), "\n")
		fmt.Fprintf(&b, "%s\n", first)
	}
	out, err := exec.CommandContext(ctx, "gcc", "-print-file-name=libc.a").Output()
	if err != nil {
		return nil, fmt.Errorf("gcc -print-file-name=libc.a: %w", err)
	}
	libc := strings.TrimSpace(string(out))
	sum, err := fileSHA256(libc)
	if err != nil {
		return nil, fmt.Errorf("busybox is linked statically and needs glibc's libc.a (libc6-dev): %w", err)
	}
	fmt.Fprintf(&b, "libc.a %s\n", sum)
	// Absent where the headers are elsewhere; gcc finds them or fails.
	if v, err := os.ReadFile("/usr/include/linux/version.h"); err == nil {
		b.Write(v)
	}
	return b.Bytes(), nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// buildBusybox unpacks the tarball into dir, configures and compiles it,
// and returns the path of the binary.
func buildBusybox(ctx context.Context, tarball, dir string, log io.Writer) (string, error) {
	fmt.Fprintf(log, "busybox %s: unpacking %s\n", busyboxVersion, filepath.Base(tarball))
	newest, err := unpackTarBz2(tarball, dir)
	if err != nil {
		return "", fmt.Errorf("unpacking: %w", err)
	}
	src := filepath.Join(dir, "busybox-"+busyboxVersion)
	if _, err := os.Stat(filepath.Join(src, "Makefile")); err != nil {
		return "", fmt.Errorf("no busybox-%s/Makefile in the tarball: %w", busyboxVersion, err)
	}
	// The banner (`busybox --help`) carries the build date: the
	// release's, so that builds of the same source are the same.
	env := makeEnv("SOURCE_DATE_EPOCH=" + strconv.FormatInt(newest.Unix(), 10))
	fmt.Fprintf(log, "busybox %s: make defconfig\n", busyboxVersion)
	if err := runMake(ctx, src, env, nil, "defconfig"); err != nil {
		return "", err
	}
	cfgPath := filepath.Join(src, ".config")
	if err := editConfig(cfgPath, busyboxConfig); err != nil {
		return "", err
	}
	jobs := strconv.Itoa(runtime.NumCPU())
	fmt.Fprintf(log, "busybox %s: make -j%s busybox (niced)\n", busyboxVersion, jobs)
	var compiled atomic.Int64
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(log, "busybox %s: %d files compiled\n", busyboxVersion, compiled.Load())
			}
		}
	}()
	err = runMake(ctx, src, env, func(line string) {
		if strings.HasPrefix(line, "  CC ") {
			compiled.Add(1)
		}
	}, "-j"+jobs, "busybox")
	close(done)
	if err != nil {
		return "", err
	}
	// The build runs oldconfig on the edited .config: what it kept is
	// what was built.
	if err := checkConfig(cfgPath, slices.Concat(busyboxConfig, busyboxWant)); err != nil {
		return "", err
	}
	return filepath.Join(src, "busybox"), nil
}

// makeEnv is this process's environment for a make of its own: without
// the variables an outer make (`make test`) passes to its children, in
// the C locale, plus extra.
func makeEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "LANG", "LANGUAGE":
			continue
		}
		if strings.HasPrefix(k, "LC_") {
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, "LC_ALL=C"), extra...)
}

// runMake runs `nice make args...` in dir, calling line (if not nil) for
// each line it prints; a failure's error ends with the last lines.
func runMake(ctx context.Context, dir string, env []string, line func(string), args ...string) error {
	name, argv := runtimebin.Niced("make", args)
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Dir, cmd.Env = dir, env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	tail := make([]string, 0, 30)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			if line != nil {
				line(l)
			}
			if len(tail) == cap(tail) {
				tail = append(tail[:0], tail[1:]...)
			}
			tail = append(tail, l)
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-scanned
	if err != nil {
		return fmt.Errorf("make %s: %w; its last lines:\n%s", strings.Join(args, " "), err, strings.Join(tail, "\n"))
	}
	return nil
}

// editConfig sets each of settings in the kconfig file at p, which must
// already mention it (set or "is not set").
func editConfig(p string, settings []struct{ name, value string }) error {
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	lines := strings.Split(string(data), "\n")
	for _, c := range settings {
		found := false
		for i, l := range lines {
			if strings.HasPrefix(l, c.name+"=") || l == "# "+c.name+" is not set" {
				lines[i], found = configLine(c.name, c.value), true
			}
		}
		if !found {
			return fmt.Errorf("%s: no %s to change (not busybox %s's defconfig?)", p, c.name, busyboxVersion)
		}
	}
	return os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644)
}

// checkConfig makes sure the kconfig file at p has settings.
func checkConfig(p string, settings []struct{ name, value string }) error {
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	lines := strings.Split(string(data), "\n")
	for _, c := range settings {
		want := configLine(c.name, c.value)
		found := false
		for _, l := range lines {
			found = found || l == want
		}
		if !found {
			return fmt.Errorf("%s: the build's configuration lacks %q", p, want)
		}
	}
	return nil
}

func configLine(name, value string) string {
	if value == "" {
		return "# " + name + " is not set"
	}
	return name + "=" + value
}

// checkAsh runs the built busybox's sh the way the tests that made it
// necessary do: a variable named with a '-' reaches `sh -c env`, and a
// redirection that cannot open its file fails with ash's own message.
func checkAsh(ctx context.Context, bin string) error {
	cmd := exec.CommandContext(ctx, bin, "sh", "-c", "env")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "data-1=value-1"}
	out, err := cmd.CombinedOutput()
	if err != nil || !slices.Contains(strings.Split(string(out), "\n"), "data-1=value-1") {
		return fmt.Errorf("its sh does not pass data-1=value-1 on to env (%v):\n%s", err, out)
	}
	out, _ = exec.CommandContext(ctx, bin, "sh", "-c", "echo x > /nonexistent-dir/file").CombinedOutput()
	if want := "sh: can't create /nonexistent-dir/file: nonexistent directory"; !strings.Contains(string(out), want) {
		return fmt.Errorf("its sh says %q where ash says %q", bytes.TrimSpace(out), want)
	}
	return nil
}

// unpackTarBz2 unpacks a .tar.bz2 under dir, which it cannot leave (an
// os.Root holds it there, symlinks included), and returns the newest
// modification time in it. Files keep their modes and times, as tar
// leaves them, so that make sees the source as its authors shipped it.
func unpackTarBz2(tarball, dir string) (time.Time, error) {
	f, err := os.Open(tarball)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	t, err := unpackTar(bzip2.NewReader(bufio.NewReaderSize(f, 1<<20)), dir)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", filepath.Base(tarball), err)
	}
	return t, nil
}

// unpackTar is unpackTarBz2 for an uncompressed stream.
func unpackTar(r io.Reader, dir string) (time.Time, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return time.Time{}, err
	}
	defer root.Close()
	var newest time.Time
	type dirTime struct {
		name string
		t    time.Time
	}
	var dirs []dirTime
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return time.Time{}, err
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if !fs.ValidPath(name) {
			return time.Time{}, fmt.Errorf("entry %q leaves the tree", h.Name)
		}
		if h.ModTime.After(newest) {
			newest = h.ModTime
		}
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return time.Time{}, err
			}
		}
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return time.Time{}, err
			}
			if err := root.Chmod(name, mode|0o700); err != nil {
				return time.Time{}, err
			}
			dirs = append(dirs, dirTime{name, h.ModTime})
			continue
		case tar.TypeReg:
			w, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
			if err != nil {
				return time.Time{}, err
			}
			_, err = io.Copy(w, tr)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return time.Time{}, fmt.Errorf("%s: %w", name, err)
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, name); err != nil {
				return time.Time{}, err
			}
			continue
		case tar.TypeXGlobalHeader:
			continue
		default:
			return time.Time{}, fmt.Errorf("entry %q is of a type (%q) this unpacker does not take", h.Name, h.Typeflag)
		}
		if err := root.Chtimes(name, h.ModTime, h.ModTime); err != nil {
			return time.Time{}, err
		}
	}
	// Directories last: unpacking into them changed their times.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := root.Chtimes(dirs[i].name, dirs[i].t, dirs[i].t); err != nil {
			return time.Time{}, err
		}
	}
	if newest.IsZero() {
		return time.Time{}, errors.New("an empty tarball")
	}
	return newest, nil
}
