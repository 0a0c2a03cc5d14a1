package images

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// sourceDir is the ballast checkout this test runs in.
func sourceDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "conformance", "go.mod")); err != nil {
		t.Fatalf("not in the ballast checkout: %v", err)
	}
	return d
}

var (
	buildOnce sync.Once
	built     []Image
	buildErr  error
	buildLog  bytes.Buffer
	buildTook time.Duration
)

// buildAll builds every image for amd64 once per test binary, in the
// user's ballast cache (shared with `make image`, so Debian packages and
// compiled programs are downloaded and built once per machine).
func buildAll(t *testing.T) []Image {
	t.Helper()
	if testing.Short() {
		t.Skip("compiles agnhost, sample-apiserver and etcd and downloads Debian packages when the cache is cold")
	}
	buildOnce.Do(func() {
		uc, err := os.UserCacheDir()
		if err != nil {
			buildErr = err
			return
		}
		start := time.Now()
		built, buildErr = Build(context.Background(), Options{
			Arch:      "amd64",
			SourceDir: sourceDir(t),
			CacheDir:  filepath.Join(uc, "ballast"),
			Log:       &buildLog,
		})
		buildTook = time.Since(start)
	})
	if buildErr != nil {
		t.Fatalf("Build: %v\n%s", buildErr, buildLog.String())
	}
	return built
}

func readArchive(t *testing.T, img Image) *ociimage.Archive {
	t.Helper()
	f, err := os.Open(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, err := ociimage.Read(f)
	if err != nil {
		t.Fatalf("%s: %v", img.Path, err)
	}
	return a
}

// needs are the programs the tests run in each image (through PATH or by
// path), which must be executables there with everything they link.
var needs = map[string][]string{
	"agnhost": {"/agnhost", "/agnhost-2", "/bin/sh", "/bin/bash", "/usr/bin/curl", "/usr/bin/nc", "/usr/bin/dig",
		"/usr/bin/nslookup", "/usr/bin/ip", "/usr/bin/ss", "/usr/bin/iperf", "/usr/local/bin/iperf", "/usr/bin/socat",
		"/usr/bin/ipcs", "/usr/bin/getent", "/bin/wget", "/bin/hostname", "/bin/cat", "/bin/grep", "/bin/sleep", "/bin/timeout", "/bin/seq",
		"/bin/id", "/bin/ps", "/bin/test", "/bin/env", "/bin/dd", "/bin/stat", "/bin/find", "/bin/awk", "/bin/tail",
		"/bin/mv", "/bin/touch", "/bin/ls", "/bin/echo", "/bin/true", "/bin/false", "/bin/which", "/bin/df"},
	"agnhost-prev": {"/agnhost", "/bin/sh", "/usr/bin/curl"},
	"busybox": {"/bin/sh", "/bin/busybox", "/bin/sysctl", "/bin/cat", "/bin/echo", "/bin/false", "/bin/true", "/bin/sleep",
		"/bin/env", "/bin/id", "/bin/ls", "/bin/stat", "/bin/find", "/bin/dd", "/bin/tail", "/bin/ip", "/bin/wget",
		"/bin/nslookup", "/bin/hostname", "/bin/df", "/bin/awk", "/bin/timeout", "/bin/ash"},
	"etcd":              {"/usr/local/bin/etcd"},
	"glibc-dns-testing": {"/bin/sh", "/bin/bash", "/usr/bin/dig", "/usr/bin/getent", "/usr/bin/seq", "/usr/bin/test", "/usr/bin/sleep", "/usr/bin/hostname"},
	"kitten":            {"/agnhost"},
	"nautilus":          {"/agnhost"},
	"nginx":             {"/usr/sbin/nginx", "/bin/sh", "/bin/cat"},
	"nginx-new":         {"/usr/sbin/nginx"},
	"nonewprivs":        {"/usr/local/bin/nnp"},
	"pause":             {"/pause"},
	"sample-apiserver":  {"/sample-apiserver"},
}

// TestBuild builds every image for real and reads each archive back with
// the project's OCI reader: the reference the suite asks for, the
// programs its tests call, each with its ELF interpreter and every shared
// library it needs, and a second build that reuses every archive.
func TestBuild(t *testing.T) {
	imgs := buildAll(t)
	t.Logf("Build took %v:\n%s", buildTook.Round(time.Second), buildLog.String())
	var names []string
	for _, img := range imgs {
		names = append(names, img.Name)
		t.Run(img.Name, func(t *testing.T) {
			a := readArchive(t, img)
			if a.Ref != wantRefs[img.Name] || img.Ref != a.Ref || a.Tag != ociimage.Tag(a.Ref) {
				t.Errorf("archive ref %q tag %q, Image.Ref %q; want %q", a.Ref, a.Tag, img.Ref, wantRefs[img.Name])
			}
			if a.Config.Architecture != "amd64" || a.Config.OS != "linux" {
				t.Errorf("platform %s/%s", a.Config.OS, a.Config.Architecture)
			}
			fs := newImageFS(a)
			for _, p := range needs[img.Name] {
				e, ok := fs.resolve(p)
				if !ok || e.Type != ociimage.File || e.Mode&0o111 == 0 {
					t.Errorf("%s: not an executable in the image (%+v)", p, e.Mode)
					continue
				}
				checkLinked(t, fs, p, e.Data)
			}
			t.Logf("%s: %d MiB, %d entries; %s", img.Ref, img.Size>>20, len(a.Files), img.From)
		})
	}
	if !reflect.DeepEqual(names, Names) {
		t.Errorf("built %q, want %q", names, Names)
	}

	// A second build reuses every archive.
	var log bytes.Buffer
	uc, _ := os.UserCacheDir()
	again, err := Build(context.Background(), Options{SourceDir: sourceDir(t), CacheDir: filepath.Join(uc, "ballast"), Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, imgs) || strings.Count(log.String(), "reused") != len(imgs) {
		t.Errorf("second build:\n%s", log.String())
	}
}

// imageFS resolves paths in an archive's files as the kernel would.
type imageFS map[string]ociimage.Entry

func newImageFS(a *ociimage.Archive) imageFS {
	m := imageFS{}
	for _, e := range a.Files {
		m[e.Path] = e
	}
	return m
}

func (m imageFS) resolve(p string) (ociimage.Entry, bool) {
	todo := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur := ""
	for hops := 0; len(todo) > 0; {
		el := todo[0]
		todo = todo[1:]
		next := path.Join(cur, el)
		e, ok := m[next]
		if !ok {
			return ociimage.Entry{}, false
		}
		if e.Type != ociimage.Symlink {
			cur = next
			if len(todo) == 0 {
				return e, true
			}
			continue
		}
		if hops++; hops > 40 {
			return ociimage.Entry{}, false
		}
		base := cur
		if path.IsAbs(e.Target) {
			base = ""
		}
		rest := strings.Split(strings.Trim(path.Clean("/"+path.Join(base, e.Target)), "/"), "/")
		todo = append(rest, todo...)
		cur = ""
	}
	return ociimage.Entry{}, false
}

// checkLinked checks that a dynamically linked program has its
// interpreter and, transitively, every library it needs, found where
// Debian's loader looks without an ld.so.cache.
func checkLinked(t *testing.T, m imageFS, p string, data []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return // a script or a stand-in
	}
	for _, pr := range f.Progs {
		if pr.Type != elf.PT_INTERP {
			continue
		}
		interp := make([]byte, pr.Filesz)
		if _, err := pr.ReadAt(interp, 0); err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		ip := strings.TrimRight(string(interp), "\x00")
		if e, ok := m.resolve(ip); !ok || e.Type != ociimage.File {
			t.Errorf("%s: interpreter %s not in the image", p, ip)
		}
	}
	seen := map[string]bool{}
	var walk func(string, *elf.File)
	walk = func(who string, f *elf.File) {
		libs, err := f.ImportedLibraries()
		if err != nil {
			t.Errorf("%s: %v", who, err)
			return
		}
		for _, lib := range libs {
			if seen[lib] {
				continue
			}
			seen[lib] = true
			var found *ociimage.Entry
			for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib", "/lib", "/usr/lib64"} {
				if e, ok := m.resolve(dir + "/" + lib); ok && e.Type == ociimage.File {
					found = &e
					break
				}
			}
			if found == nil {
				t.Errorf("%s (for %s): library %s not in the image", who, p, lib)
				continue
			}
			lf, err := elf.NewFile(bytes.NewReader(found.Data))
			if err != nil {
				t.Errorf("%s: %v", lib, err)
				continue
			}
			walk(lib, lf)
		}
	}
	walk(p, f)
}

// TestImagesRun unpacks each amd64 image and runs in it, chrooted, what
// the tests call: the tools answer, sh (busybox's ash, compiled from
// upstream's source) passes variables with '-' in their names on and
// speaks ash's messages, nginx takes its config and serves its page, nnp
// keeps uid 1000 under no_new_privs and becomes root without.
func TestImagesRun(t *testing.T) {
	if runtime.GOARCH != "amd64" || runtime.GOOS != "linux" {
		t.Skipf("runs amd64 programs; this host is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	for _, tool := range []string{"chroot", "setpriv", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on this host", tool)
		}
	}
	imgs := buildAll(t)
	root := t.TempDir()
	// A TCP server that answers a line as agnhost's netexec does, and an
	// HTTP one, for the network tools (the chroot shares this host's
	// network).
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "answer to %s", line)
			}()
		}
	}()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "served %s", r.URL.Path)
	}))
	defer web.Close()
	tcpPort := strconv.Itoa(tcp.Addr().(*net.TCPAddr).Port)
	type run struct {
		argv  []string
		env   []string // besides PATH
		user  string   // chroot --userspec
		nnp   bool     // with no_new_privs
		netns bool     // in a network namespace of its own
		wants []string // in the combined output
	}
	runs := map[string][]run{
		"agnhost": {
			{argv: []string{"/agnhost", "--version"}, wants: []string{"2.66.1"}},
			{argv: []string{"/agnhost-2", "--help"}, wants: []string{"netexec", "test-webserver", "pause"}},
			{argv: []string{"curl", "--version"}, wants: []string{"curl 8", "https"}},
			{argv: []string{"dig", "-v"}, wants: []string{"DiG 9"}},
			{argv: []string{"nslookup", "-version"}, wants: []string{"nslookup 9"}},
			{argv: []string{"nc", "-h"}, wants: []string{"OpenBSD netcat", "-z"}},
			{argv: []string{"ip", "-V"}, wants: []string{"iproute2"}},
			{argv: []string{"ss", "-V"}, wants: []string{"iproute2"}},
			{argv: []string{"iperf", "-v"}, wants: []string{"iperf version 2"}},
			{argv: []string{"/usr/local/bin/iperf", "-v"}, wants: []string{"iperf version 2"}},
			{argv: []string{"socat", "-V"}, wants: []string{"socat version 1"}},
			{argv: []string{"ipcs", "-V"}, wants: []string{"util-linux"}},
			{argv: []string{"bash", "--version"}, wants: []string{"GNU bash"}},
			{argv: []string{"wget", "--help"}, wants: []string{"BusyBox v1.37.0"}},
			{argv: []string{"/bin/sh", "-x", "-c", "env; hostname; seq 2 3; echo hi | grep -c hi"}, env: []string{"data-1=value-1", "1-data-1=x"},
				wants: []string{"data-1=value-1", "1-data-1=x", "+ env", "2\n3\n", "1\n"}},
			{argv: []string{"sh", "-c", "echo hostName | nc -v -t -w 2 127.0.0.1 " + tcpPort}, wants: []string{"answer to hostName", "succeeded"}},
			{argv: []string{"nc", "-v", "-z", "-w", "2", "127.0.0.1", tcpPort}, wants: []string{"succeeded"}},
			{argv: []string{"curl", "-g", "-q", "-s", "--connect-timeout", "2", web.URL + "/hostname"}, wants: []string{"served /hostname"}},
			{argv: []string{"wget", "-T", "5", "-qO-", web.URL + "/x"}, wants: []string{"served /x"}},
			// The DNS tests' probe, with the /etc/hosts the kubelet writes.
			{argv: []string{"sh", "-c", "test -n \"$(getent hosts dns-querier-1)\" && echo OK; getent hosts localhost"}, wants: []string{"OK", "127.0.0.1"}},
			{argv: []string{"id", "user-defined-in-image"}, wants: []string{"uid=1000(user-defined-in-image) gid=1000(user-defined-in-image) groups=1000(user-defined-in-image),50000(group-defined-in-image)"}},
		},
		"busybox": {
			{argv: []string{"sh", "-c", "env"}, env: []string{"data-1=value-1", "p-data-1=value-1", "1-data-1=value-1", "$_-data-1=value-1", "#@!data-1=value-1", "ABC_data-1=value-1"},
				wants: []string{"data-1=value-1", "p-data-1=value-1", "1-data-1=value-1", "$_-data-1=value-1", "#@!data-1=value-1", "ABC_data-1=value-1"}},
			{argv: []string{"sh", "-c", "echo -n DONE; /bin/true; [[ -d / ]] && echo yes; exit 3"}, wants: []string{"DONE", "yes"}},
			{argv: []string{"/bin/sh", "-c", "echo test > /no/such/dir/file"}, wants: []string{"/bin/sh: can't create /no/such/dir/file: nonexistent directory"}},
			{argv: []string{"/bin/sysctl", "-h"}, wants: []string{"BusyBox v1.37.0"}},
			{argv: []string{"id"}, wants: []string{"uid=0(root) gid=0(root)"}},
			{argv: []string{"sh", "-c", "id -u"}, user: "65534:65534", wants: []string{"65534"}},
		},
		"glibc-dns-testing": {
			{argv: []string{"sh", "-c", "for i in `seq 1 2`; do test -n \"$(dig -v 2>&1)\" && echo OK$i; done; getent passwd root; test -n \"$(getent hosts dns-querier-1)\" && echo hostsOK"},
				wants: []string{"OK1", "OK2", "root:x:0:0", "hostsOK"}},
		},
		"nginx": {
			{argv: []string{"nginx", "-t"}, wants: []string{"syntax is ok", "test is successful"}},
			{argv: []string{"nginx", "-V"}, wants: []string{"nginx version: nginx/1."}},
			// Serving, on both loopbacks, with workers as user nginx.
			{argv: []string{"sh", "-c", "ip link set lo up && nginx && sleep 1 && wget -qO- http://127.0.0.1/ && wget -qO- http://[::1]/50x.html; nginx -s quit; sleep 1"},
				netns: true, wants: []string{"<title>Welcome to nginx!</title>", "An error occurred."}},
		},
		"etcd":             {{argv: []string{"/usr/local/bin/etcd", "--version"}, wants: []string{"etcd Version: 3.7"}}},
		"sample-apiserver": {{argv: []string{"/sample-apiserver", "--help"}, wants: []string{"--etcd-servers"}}},
		"nonewprivs": {
			{argv: []string{"nnp"}, user: "1000:1000", nnp: true, wants: []string{"Effective uid: 1000"}},
			{argv: []string{"nnp"}, user: "1000:1000", wants: []string{"Effective uid: 0"}},
		},
		"kitten":   {{argv: []string{"/agnhost", "--version"}, wants: []string{"2.66.1"}}},
		"nautilus": {{argv: []string{"/agnhost", "--version"}, wants: []string{"2.66.1"}}},
		"pause":    {{argv: []string{"/pause", "-v"}, wants: []string{"pause"}}},
	}
	for _, img := range imgs {
		t.Run(img.Name, func(t *testing.T) {
			dir := filepath.Join(root, img.Name)
			unpack(t, readArchive(t, img), dir)
			for _, r := range runs[img.Name] {
				argv := []string{"chroot"}
				if r.user != "" {
					argv = append(argv, "--userspec="+r.user)
				}
				argv = append(append(argv, dir), r.argv...)
				if r.nnp {
					argv = append([]string{"setpriv", "--no-new-privs"}, argv...)
				}
				if r.netns {
					argv = append([]string{"unshare", "--net"}, argv...)
				}
				cmd := exec.Command(argv[0], argv[1:]...)
				cmd.Env = append([]string{defaultPath}, r.env...)
				out, err := cmd.CombinedOutput()
				for _, w := range r.wants {
					if !strings.Contains(string(out), w) {
						t.Errorf("%q: no %q in its output (%v):\n%s", r.argv, w, err, out)
						break
					}
				}
			}
		})
	}
}

// unpack writes an archive's files under dir with their modes and owners,
// and the /dev files the programs write their output to.
func unpack(t *testing.T, a *ociimage.Archive, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range a.Files {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		var err error
		switch e.Type {
		case ociimage.Dir:
			err = os.MkdirAll(p, 0o755)
		case ociimage.File:
			err = os.WriteFile(p, e.Data, 0o600)
		case ociimage.Symlink:
			err = os.Symlink(e.Target, p)
		}
		if err == nil && e.Type != ociimage.Symlink {
			if err = os.Chown(p, e.UID, e.GID); err == nil {
				err = os.Chmod(p, e.Mode&fs.ModePerm|e.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// No /proc or /dev in a chroot: the logs nginx links to are files.
	if err := os.MkdirAll(filepath.Join(dir, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"null", "stdout", "stderr"} {
		if err := os.WriteFile(filepath.Join(dir, "dev", f), nil, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	// What the kubelet mounts at /etc/hosts.
	hosts := "127.0.0.1\tlocalhost\n10.42.0.7\tdns-querier-1.dns-test-service.e2e.svc.cluster.local\tdns-querier-1\n"
	if err := os.WriteFile(filepath.Join(dir, "etc", "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
}
