package images

import (
	"context"
	"io/fs"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/imagebuild/debian"
	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
	imageutils "k8s.io/kubernetes/test/utils/image"
)

// wantRefs are the references the v1.37.2 suite asks for, written out
// rather than taken from the manifest the code reads.
var wantRefs = map[string]string{
	"agnhost":           "registry.k8s.io/e2e-test-images/agnhost:2.66.1",
	"agnhost-prev":      "registry.k8s.io/e2e-test-images/agnhost:2.55",
	"busybox":           "registry.k8s.io/e2e-test-images/busybox:1.37.0-2",
	"etcd":              "registry.k8s.io/etcd:3.7.0-0",
	"glibc-dns-testing": "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1",
	"kitten":            "registry.k8s.io/e2e-test-images/kitten:1.8",
	"nautilus":          "registry.k8s.io/e2e-test-images/nautilus:1.8",
	"nginx":             "registry.k8s.io/e2e-test-images/nginx:1.27.0-2",
	"nginx-new":         "registry.k8s.io/e2e-test-images/nginx:1.28.0-2",
	"nonewprivs":        "registry.k8s.io/e2e-test-images/nonewprivs:1.4",
	"pause":             "registry.k8s.io/pause:3.10.2",
	"sample-apiserver":  "registry.k8s.io/e2e-test-images/sample-apiserver:1.29.2",
}

func TestRefs(t *testing.T) {
	if len(Names) != len(wantRefs) {
		t.Errorf("Names %q, want the %d of wantRefs", Names, len(wantRefs))
	}
	for name, want := range wantRefs {
		if got, ok := Ref(name); !ok || got != want {
			t.Errorf("Ref(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
	if _, ok := Ref("httpd"); ok {
		t.Error("Ref knows httpd")
	}
}

// TestSkipped holds every image of the suite's manifest to be either built
// or listed with a reason: a new image in a new suite must be looked at.
func TestSkipped(t *testing.T) {
	sk := Skipped()
	built := map[string]bool{}
	for _, r := range wantRefs {
		built[r] = true
		if _, ok := sk[r]; ok {
			t.Errorf("%s is built and skipped", r)
		}
	}
	for id, c := range imageutils.GetOriginalImageConfigs() {
		r := c.GetE2EImage()
		if !built[r] && sk[r] == "" {
			t.Errorf("image %d (%s) is neither built nor skipped with a reason", id, r)
		}
	}
	for _, r := range []string{"registry.k8s.io/e2e-test-images/nonroot:1.5", "gcr.io/k8s-authenticated-test/agnhost:2.6"} {
		if sk[r] == "" {
			t.Errorf("Skipped() has no reason for %s", r)
		}
	}
}

// fakeSupply makes images from stand-ins: programs are their names,
// packages a file or two each where Debian puts them.
type fakeSupply struct {
	asked map[string][]string // ignore lists, by the first package asked for
}

var fakeFiles = map[string][]string{
	"bash":           {"usr/bin/bash"},
	"base-passwd":    {"usr/share/base-passwd/passwd.master", "usr/share/base-passwd/group.master"},
	"bind9-dnsutils": {"usr/bin/dig", "usr/bin/nslookup"},
	"coreutils":      {"usr/bin/seq", "usr/bin/sleep", "usr/bin/test"},
	"curl":           {"usr/bin/curl"},
	"dash":           {"usr/bin/dash"},
	"iperf":          {"usr/bin/iperf"},
	"iproute2":       {"usr/bin/ip", "usr/bin/ss"},
	"libc-bin":       {"usr/bin/getent"},
	"netbase":        {"etc/services"},
	"netcat-openbsd": {"usr/bin/nc.openbsd"},
	"nginx":          {"usr/sbin/nginx"},
	"nginx-common":   {"etc/nginx/nginx.conf", "etc/nginx/mime.types", "etc/nginx/sites-available/default", "usr/share/nginx/html/index.html"},
	"socat":          {"usr/bin/socat"},
	"util-linux":     {"usr/bin/ipcs", "usr/sbin/blkid"},
}

// fakeBusybox is a busybox binary as far as busyboxApplets can tell: a
// decoy "[" string, then the applet table.
var fakeApplets = []string{"[", "[[", "ash", "awk", "cat", "echo", "env", "grep", "hostname", "id", "ip", "ipcs",
	"ls", "nc", "nslookup", "ping", "ps", "sed", "sh", "sleep", "sysctl", "test", "wget"}

func fakeBusybox() []byte {
	return []byte("\x7fELF junk\x00[\x00not a table\x00\x00" + strings.Join(fakeApplets, "\x00") + "\x00\x00more")
}

func (f *fakeSupply) program(ctx context.Context, p program) ([]byte, string, error) {
	return []byte("program " + p.pkg + " " + p.xflags), p.provider + " v0", nil
}

func (f *fakeSupply) packages(ctx context.Context, names, ignore []string) (*installed, error) {
	if f.asked == nil {
		f.asked = map[string][]string{}
	}
	f.asked[names[0]] = ignore
	t := filetree.New(created)
	if err := debian.MergedUsr(t, "amd64"); err != nil {
		return nil, err
	}
	var pkgs []debian.Package
	all := slices.Clone(names)
	if slices.Contains(names, "nginx") {
		all = append(all, "nginx-common")
	}
	for _, n := range all {
		pkgs = append(pkgs, debian.Package{Name: n, Version: "1.0-1"})
		for _, p := range fakeFiles[n] {
			if err := t.AddFile(p, 0o755, []byte(n+" "+p)); err != nil {
				return nil, err
			}
		}
		if n == "dash" {
			if err := t.AddSymlink("usr/bin/sh", "dash"); err != nil {
				return nil, err
			}
		}
	}
	return &installed{tree: t, pkgs: pkgs}, nil
}

func (f *fakeSupply) busybox(ctx context.Context) ([]byte, string, error) {
	return fakeBusybox(), "busybox " + busyboxVersion + " (fake)", nil
}

func (f *fakeSupply) upstream(ctx context.Context, p string) ([]byte, error) {
	return []byte("upstream " + p), nil
}

func (f *fakeSupply) pause(ctx context.Context) (ociimage.Image, error) {
	return ociimage.Image{
		Ref:     "docker.io/rancher/mirrored-pause:3.6",
		Config:  ociimage.Config{Entrypoint: []string{"/pause"}, User: "65535:65535", Env: []string{defaultPath}},
		Entries: []ociimage.Entry{{Path: "pause", Type: ociimage.File, Mode: 0o755, Data: []byte("pause")}},
	}, nil
}

// layout is an assembled image with its files by path.
type layout struct {
	img   ociimage.Image
	from  string
	files map[string]ociimage.Entry
}

func assemble(t *testing.T, name string) (layout, *fakeSupply) {
	t.Helper()
	i := slices.IndexFunc(recipes, func(r recipe) bool { return r.name == name })
	if i < 0 {
		t.Fatalf("no recipe %q", name)
	}
	src := &fakeSupply{}
	b := &builder{arch: "amd64", src: src}
	img, from, err := b.image(context.Background(), recipes[i])
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	l := layout{img: img, from: from, files: map[string]ociimage.Entry{}}
	for _, e := range img.Entries {
		l.files[e.Path] = e
	}
	return l, src
}

// resolve follows symlinks in the image to the entry a path names.
func (l layout) resolve(p string) (ociimage.Entry, bool) {
	p = strings.TrimPrefix(p, "/")
	for hops := 0; hops < 40; hops++ {
		// Resolve the directories first: bin/sh is usr/bin/sh.
		parts := strings.Split(p, "/")
		cur := ""
		for i, el := range parts {
			cur = path.Join(cur, el)
			e, ok := l.files[cur]
			if !ok {
				return ociimage.Entry{}, false
			}
			if e.Type == ociimage.Symlink && i < len(parts)-1 {
				tgt := e.Target
				if !path.IsAbs(tgt) {
					tgt = path.Join(path.Dir(cur), tgt)
				}
				cur = strings.TrimPrefix(path.Clean(tgt), "/")
			}
		}
		e := l.files[cur]
		if e.Type != ociimage.Symlink {
			return e, true
		}
		if path.IsAbs(e.Target) {
			p = strings.TrimPrefix(e.Target, "/")
		} else {
			p = path.Join(path.Dir(cur), e.Target)
		}
	}
	return ociimage.Entry{}, false
}

// TestLayouts checks each image's config and the files its tests call,
// as upstream's Dockerfiles have them, without the network or a compiler.
func TestLayouts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		entrypoint []string
		cmd        []string
		user       string
		stop       string
		// files must resolve to regular files holding what the fake
		// supply put there (a prefix of it).
		files map[string]string
		links map[string]string // symlinks and their targets
		none  []string          // paths that must not be there
	}{
		{
			name: "agnhost", entrypoint: []string{"/agnhost"}, cmd: []string{"pause"},
			files: map[string]string{
				"/agnhost":             "program k8s.io/kubernetes/test/images/agnhost -X main.Version=2.66.1",
				"/agnhost-2":           "program k8s.io/kubernetes/test/images/agnhost",
				"/localhost.crt":       "upstream test/images/agnhost/porter/localhost.crt",
				"/localhost.key":       "upstream test/images/agnhost/porter/localhost.key",
				"/bin/sh":              "\x7fELF",
				"/bin/bash":            "bash ",
				"/usr/bin/curl":        "curl ",
				"/usr/bin/nc":          "netcat-openbsd ",
				"/usr/bin/dig":         "bind9-dnsutils ",
				"/usr/bin/nslookup":    "bind9-dnsutils ",
				"/usr/bin/ip":          "iproute2 ",
				"/usr/bin/ss":          "iproute2 ",
				"/usr/local/bin/iperf": "iperf ",
				"/usr/bin/socat":       "socat ",
				"/usr/bin/ipcs":        "util-linux ",
				"/bin/wget":            "\x7fELF",
				"/bin/hostname":        "\x7fELF",
				"/etc/services":        "netbase ",
				"/etc/nsswitch.conf":   "passwd:",
				"/usr/bin/[[":          "\x7fELF",
				"/etc/passwd":          "root:x:0:0:root:/root:/bin/sh\n",
				"/usr/sbin/blkid":      "util-linux ",
				"/etc/group":           "root:x:0:root\n",
			},
			links: map[string]string{"agnhost-2": "agnhost", "usr/bin/sh": "busybox", "usr/bin/nc": "nc.openbsd", "usr/bin/wget": "busybox", "bin": "usr/bin"},
			none:  []string{"usr/bin/blkid", "coredns", "var/registry"},
		},
		{
			name: "agnhost-prev", entrypoint: []string{"/agnhost"}, cmd: []string{"pause"},
			files: map[string]string{"/agnhost": "program k8s.io/kubernetes/test/images/agnhost", "/usr/bin/curl": "curl "},
		},
		{
			name: "busybox", cmd: []string{"sh"},
			files: map[string]string{
				"/bin/busybox": "\x7fELF", "/bin/cat": "\x7fELF", "/bin/sysctl": "\x7fELF", "/bin/[": "\x7fELF",
				"/bin/sh": "\x7fELF", "/bin/ash": "\x7fELF", "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
				"/etc/group": "root:x:0:\n",
			},
			links: map[string]string{"bin/sh": "busybox", "bin/ash": "busybox", "bin/env": "busybox"},
			none:  []string{"usr/bin", "bin/bash", "bin/bash-static"},
		},
		{
			name: "etcd", cmd: []string{"/usr/local/bin/etcd"},
			files: map[string]string{"/usr/local/bin/etcd": "program go.etcd.io/etcd/server/v3"},
		},
		{
			name: "glibc-dns-testing", cmd: []string{"bash"},
			files: map[string]string{
				"/bin/sh": "dash ", "/usr/bin/dig": "bind9-dnsutils ", "/usr/bin/getent": "libc-bin ", "/usr/bin/seq": "coreutils ",
				"/etc/passwd": "base-passwd usr/share/base-passwd/passwd.master", "/etc/group": "base-passwd usr/share/base-passwd/group.master",
				"/etc/nsswitch.conf": "passwd:",
			},
			none: []string{"usr/bin/busybox", "coredns"},
		},
		{
			name: "kitten", entrypoint: []string{"/agnhost"}, cmd: []string{"test-webserver"},
			files: map[string]string{"/agnhost": "program k8s.io/kubernetes/test/images/agnhost", "/kitten.jpg": "upstream test/images/kitten/html/kitten.jpg", "/data.json": "upstream test/images/kitten/html/data.json"},
		},
		{
			name: "nautilus", entrypoint: []string{"/agnhost"}, cmd: []string{"test-webserver"},
			files: map[string]string{"/nautilus.jpg": "upstream test/images/nautilus/html/nautilus.jpg", "/data.json": "upstream test/images/nautilus/html/data.json"},
		},
		{
			name: "nginx", cmd: []string{"nginx", "-g", "daemon off;"}, stop: "SIGQUIT",
			files: map[string]string{
				"/usr/sbin/nginx": "nginx ", "/etc/nginx/nginx.conf": nginxConf, "/etc/nginx/conf.d/default.conf": nginxDefault,
				"/etc/nginx/mime.types": "nginx-common ", "/usr/share/nginx/html/index.html": "nginx-common ",
				"/usr/share/nginx/html/50x.html": "<!DOCTYPE html>", "/bin/sh": "\x7fELF", "/bin/cat": "\x7fELF",
				"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
			},
			links: map[string]string{"var/log/nginx/access.log": "/dev/stdout", "var/log/nginx/error.log": "/dev/stderr", "usr/bin/sh": "busybox"},
			none:  []string{"etc/nginx/sites-available", "usr/bin/ss", "usr/bin/bash-static"},
		},
		{
			name: "nginx-new", cmd: []string{"nginx", "-g", "daemon off;"}, stop: "SIGQUIT",
			files: map[string]string{"/usr/sbin/nginx": "nginx "},
		},
		{
			name: "nonewprivs", cmd: []string{"nnp"},
			files: map[string]string{"/usr/local/bin/nnp": "program k8s.io/kubernetes/test/images/nonewprivs"},
		},
		{
			name: "pause", entrypoint: []string{"/pause"}, user: "65535:65535",
			files: map[string]string{"/pause": "pause"},
		},
		{
			name: "sample-apiserver", entrypoint: []string{"/sample-apiserver"},
			files: map[string]string{"/sample-apiserver": "program k8s.io/sample-apiserver"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := assemble(t, tc.name)
			if l.img.Ref != wantRefs[tc.name] || l.img.Architecture != "amd64" || l.img.Compression != ociimage.Zstd {
				t.Errorf("ref %q arch %q compression %q", l.img.Ref, l.img.Architecture, l.img.Compression)
			}
			c := l.img.Config
			if !reflect.DeepEqual(c.Entrypoint, tc.entrypoint) || !reflect.DeepEqual(c.Cmd, tc.cmd) || c.User != tc.user || c.StopSignal != tc.stop {
				t.Errorf("entrypoint %q cmd %q user %q stop %q; want %q %q %q %q", c.Entrypoint, c.Cmd, c.User, c.StopSignal, tc.entrypoint, tc.cmd, tc.user, tc.stop)
			}
			if len(c.Env) == 0 || c.Env[0] != defaultPath {
				t.Errorf("env %q does not start with %s", c.Env, defaultPath)
			}
			if tmp, ok := l.files["tmp"]; tc.name != "pause" && (!ok || tmp.Type != ociimage.Dir || tmp.Mode != 0o777|fs.ModeSticky) {
				t.Errorf("/tmp %+v", tmp)
			}
			for p, want := range tc.files {
				e, ok := l.resolve(p)
				if !ok || e.Type != ociimage.File || !strings.HasPrefix(string(e.Data), want) {
					t.Errorf("%s: %+v %q, want a file starting %q", p, e.Type, e.Data, want)
				}
			}
			for p, want := range tc.links {
				if e := l.files[p]; e.Type != ociimage.Symlink || e.Target != want {
					t.Errorf("%s: %v -> %q, want a symlink to %q", p, e.Type, e.Target, want)
				}
			}
			for _, p := range tc.none {
				if _, ok := l.files[p]; ok {
					t.Errorf("%s is in the image", p)
				}
			}
			if l.from == "" {
				t.Error("no From")
			}
		})
	}
}

func TestAgnhostAccounts(t *testing.T) {
	l, _ := assemble(t, "agnhost")
	passwd := string(l.files["etc/passwd"].Data)
	group := string(l.files["etc/group"].Data)
	if !strings.Contains(passwd, "\nuser-defined-in-image:x:1000:1000:") {
		t.Errorf("passwd:\n%s", passwd)
	}
	if !strings.Contains(group, "\ngroup-defined-in-image:x:50000:user-defined-in-image\n") || !strings.Contains(group, "\nuser-defined-in-image:x:1000:\n") {
		t.Errorf("group:\n%s", group)
	}
	if h := l.files["home/user-defined-in-image"]; h.Type != ociimage.Dir || h.UID != 1000 || h.GID != 1000 {
		t.Errorf("home %+v", h)
	}
	// Every applet is busybox's, sh among them, but those a package has.
	for _, a := range fakeApplets {
		e := l.files["usr/bin/"+a]
		fromPackage := slices.Contains([]string{"nc", "nslookup", "ipcs", "ip"}, a)
		if isBusybox := e.Type == ociimage.Symlink && e.Target == "busybox"; isBusybox == fromPackage {
			t.Errorf("usr/bin/%s: %v -> %q", a, e.Type, e.Target)
		}
	}
}

// TestAddShellKeepsAsh: a package's /bin/sh must not silently take the
// place of busybox's ash.
func TestAddShellKeepsAsh(t *testing.T) {
	tr := filetree.New(created)
	if err := debian.MergedUsr(tr, "amd64"); err != nil {
		t.Fatal(err)
	}
	if err := tr.AddSymlink("usr/bin/sh", "dash"); err != nil {
		t.Fatal(err)
	}
	if err := addShell(tr, fakeBusybox()); err == nil || !strings.Contains(err.Error(), "/usr/bin/sh") {
		t.Errorf("addShell over a package's sh: %v", err)
	}
}

func TestIgnoredPackages(t *testing.T) {
	_, src := assemble(t, "nginx")
	if ig := src.asked["nginx"]; !slices.Contains(ig, "iproute2") || !slices.Contains(ig, "debconf") {
		t.Errorf("nginx's packages ignore %q", ig)
	}
	_, src = assemble(t, "agnhost")
	if ig := src.asked["bash"]; !slices.Contains(ig, "debconf") || slices.Contains(ig, "iproute2") {
		t.Errorf("agnhost's packages ignore %q", ig)
	}
}

func TestNonewprivsSetuid(t *testing.T) {
	l, _ := assemble(t, "nonewprivs")
	e := l.files["usr/local/bin/nnp"]
	if e.Mode != 0o755|fs.ModeSetuid|fs.ModeSetgid || e.UID != 0 {
		t.Errorf("nnp mode %v uid %d, want setuid and setgid root", e.Mode, e.UID)
	}
}

// TestDistinctArchives: images that share their files still differ by
// reference, so each archive is its own in the cache.
func TestDistinctArchives(t *testing.T) {
	a, _ := assemble(t, "agnhost")
	p, _ := assemble(t, "agnhost-prev")
	if a.img.Ref == p.img.Ref || !reflect.DeepEqual(a.img.Entries, p.img.Entries) {
		t.Errorf("agnhost and agnhost-prev: refs %q %q, same files %v", a.img.Ref, p.img.Ref, reflect.DeepEqual(a.img.Entries, p.img.Entries))
	}
}

func TestBusyboxApplets(t *testing.T) {
	got, err := busyboxApplets(fakeBusybox())
	if err != nil || !reflect.DeepEqual(got, fakeApplets) {
		t.Errorf("busyboxApplets = %q, %v; want %q", got, err, fakeApplets)
	}
	for _, bad := range []string{
		"no table here",
		"\x00[\x00sh\x00\x00", // too short
		"\x00[\x00" + strings.Repeat("zz\x00", 30) + "sh\x00\x00", // not sorted
	} {
		if got, err := busyboxApplets([]byte(bad)); err == nil {
			t.Errorf("busyboxApplets(%q) = %q, want an error", bad, got)
		}
	}
}

func TestEntries(t *testing.T) {
	tr := filetree.New(created)
	for _, e := range []filetree.Entry{
		{Path: "usr/bin/a", Kind: filetree.File, Mode: 0o4755, Data: filetree.Bytes("A"), UID: 0},
		{Path: "usr/bin/b", Kind: filetree.Hardlink, Mode: 0o755, Target: "usr/bin/a"},
		{Path: "bin", Kind: filetree.Symlink, Mode: 0o777, Target: "usr/bin"},
		{Path: "var/x", Kind: filetree.Dir, Mode: 0o750, UID: 5, GID: 6},
	} {
		if err := tr.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := entries(tr)
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]ociimage.Entry{}
	for _, e := range ents {
		byPath[e.Path] = e
	}
	if b := byPath["usr/bin/b"]; b.Type != ociimage.File || string(b.Data) != "A" {
		t.Errorf("hard link %+v", b)
	}
	if d := byPath["var/x"]; d.Type != ociimage.Dir || d.UID != 5 || d.GID != 6 || d.Mode != 0o750 {
		t.Errorf("dir %+v", d)
	}
	if l := byPath["bin"]; l.Type != ociimage.Symlink || l.Target != "usr/bin" {
		t.Errorf("symlink %+v", l)
	}
	if err := tr.Add(filetree.Entry{Path: "dev/null", Kind: filetree.CharDevice, Mode: 0o666, Major: 1, Minor: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := entries(tr); err == nil {
		t.Error("a device node went into a layer")
	}
}

func TestShadowed(t *testing.T) {
	in := "root:*:0:0:root:/root:/bin/bash\nbin:*:2:2:bin:/bin:/usr/sbin/nologin\nodd\n"
	want := "root:x:0:0:root:/root:/bin/bash\nbin:x:2:2:bin:/bin:/usr/sbin/nologin\nodd\n"
	if got := shadowed([]byte(in)); got != want {
		t.Errorf("shadowed = %q, want %q", got, want)
	}
}

func TestBuildRefusesUnknown(t *testing.T) {
	for _, o := range []Options{
		{SourceDir: "x", Names: []string{"httpd"}},
		{SourceDir: "x", Names: []string{"pause", "pause"}},
		{SourceDir: "x", Arch: "riscv64"},
		{Names: []string{"pause"}},
	} {
		if _, err := Build(context.Background(), o); err == nil {
			t.Errorf("Build(%+v) did not fail", o)
		}
	}
}
