package componentimages

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/debian"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// want is what each archive must hold, written from the upstream
// Dockerfiles and k3s's manifests rather than from the component table.
var want = map[string]struct {
	ref        string
	binary     string
	entrypoint []string
	cmd        []string
	user       string
}{
	"pause":                  {"docker.io/rancher/mirrored-pause:3.6", "pause", []string{"/pause"}, nil, "65535:65535"},
	"coredns":                {"docker.io/rancher/mirrored-coredns-coredns:1.15.0", "coredns", []string{"/coredns"}, nil, "65532:65532"},
	"local-path-provisioner": {"docker.io/rancher/local-path-provisioner:v0.0.30", "usr/bin/local-path-provisioner", []string{"local-path-provisioner"}, nil, ""},
	"busybox":                {"docker.io/rancher/mirrored-library-busybox:1.37.0", "bin/busybox", nil, []string{"sh"}, ""},
	"metrics-server":         {"docker.io/rancher/mirrored-metrics-server:v0.9.0", "metrics-server", []string{"/metrics-server"}, nil, "65534"},
	"svclb":                  {"docker.io/rancher/klipper-lb:v0.4.9", "svclb", []string{"/svclb"}, nil, "65532:65532"},
	"klipper-helm":           {"docker.io/rancher/klipper-helm:v0.9.14-build20260309", "usr/bin/entry", []string{"entry"}, nil, "1000:1000"},
	"traefik":                {"docker.io/rancher/mirrored-library-traefik:3.6.12", "usr/local/bin/traefik", []string{"/usr/local/bin/traefik"}, nil, ""},
	"testserver":             {"docker.io/ballast/testserver:v1", "testserver", []string{"/testserver"}, nil, "65532:65532"},
}

// check reads an archive back and checks it against want and arch; it
// returns the image's main binary.
func check(t *testing.T, img Image, arch string) []byte {
	t.Helper()
	w, ok := want[img.Name]
	if !ok {
		t.Fatalf("unexpected image %q", img.Name)
	}
	f, err := os.Open(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, err := ociimage.Read(f)
	if err != nil {
		t.Fatalf("%s: %v", img.Path, err)
	}
	if img.Ref != w.ref || a.Ref != w.ref || a.Tag != ociimage.Tag(w.ref) {
		t.Errorf("%s: Image.Ref %q, archive ref %q tag %q; want %q", img.Name, img.Ref, a.Ref, a.Tag, w.ref)
	}
	if a.Config.Architecture != arch || a.Config.OS != "linux" {
		t.Errorf("%s: platform %s/%s, want linux/%s", img.Name, a.Config.OS, a.Config.Architecture, arch)
	}
	c := a.Config.Config
	if !reflect.DeepEqual(c.Entrypoint, w.entrypoint) || !reflect.DeepEqual(c.Cmd, w.cmd) || c.User != w.user {
		t.Errorf("%s: entrypoint %q cmd %q user %q; want %q %q %q", img.Name, c.Entrypoint, c.Cmd, c.User, w.entrypoint, w.cmd, w.user)
	}
	if !strings.Contains(strings.Join(c.Env, "\n"), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") {
		t.Errorf("%s: env %q has no PATH", img.Name, c.Env)
	}
	if tmp, ok := a.File("tmp"); !ok || tmp.Type != ociimage.Dir || tmp.Mode != 0o777|fs.ModeSticky {
		t.Errorf("%s: /tmp %+v", img.Name, tmp)
	}
	bin, ok := a.File(w.binary)
	if !ok || bin.Type != ociimage.File || bin.Mode&0o111 == 0 {
		t.Fatalf("%s: /%s missing or not executable: %+v", img.Name, w.binary, bin.Mode)
	}
	ef, err := elf.NewFile(bytes.NewReader(bin.Data))
	if err != nil {
		t.Fatalf("%s: /%s: %v", img.Name, w.binary, err)
	}
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if ef.Machine != machine {
		t.Errorf("%s: /%s is for %v, want %v", img.Name, w.binary, ef.Machine, machine)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: /%s is dynamically linked", img.Name, w.binary)
		}
	}
	return bin.Data
}

func TestOwnImages(t *testing.T) {
	cache := t.TempDir()
	// An archive of an older build of pause goes when a new one is written.
	stale := filepath.Join(cache, "componentimages", "pause-amd64-0123456789abcdef.tar")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		var log bytes.Buffer
		imgs, err := Build(context.Background(), Options{Arch: arch, CacheDir: cache, Names: []string{"testserver", "pause"}, Log: &log})
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 2 || imgs[0].Name != "testserver" || imgs[1].Name != "pause" {
			t.Fatalf("images %+v", imgs)
		}
		for _, img := range imgs {
			check(t, img, arch)
		}
		t.Logf("cold build for %s:\n%s", arch, log.String())
		if strings.Count(log.String(), "built in") != 2 {
			t.Errorf("log of a cold build:\n%s", log.String())
		}
		if f, _ := os.Open(imgs[0].Path); f != nil {
			a, err := ociimage.Read(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := a.File("data"); !ok || d.UID != 65532 {
				t.Errorf("testserver /data %+v", d)
			}
		}

		// A second build reuses both, byte for byte.
		first, _ := os.ReadFile(imgs[1].Path)
		log.Reset()
		again, err := Build(context.Background(), Options{Arch: arch, CacheDir: cache, Names: []string{"testserver", "pause"}, Log: &log})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, imgs) || strings.Count(log.String(), "reused") != 2 {
			t.Errorf("second build: %+v\n%s", again, log.String())
		}
		if second, _ := os.ReadFile(again[1].Path); !bytes.Equal(first, second) {
			t.Error("second build changed the archive")
		}
	}
	// Only the newest archive and binary per image and arch are kept.
	ents, _ := os.ReadDir(filepath.Join(cache, "componentimages"))
	var tars []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tar") {
			tars = append(tars, e.Name())
		}
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("stale archive not pruned")
	}
	if len(tars) != 4 {
		t.Errorf("cache holds %q, want 4 archives", tars)
	}
}

// TestBinariesRun runs the amd64 pause and testserver on this host.
func TestBinariesRun(t *testing.T) {
	if runtime.GOARCH != "amd64" || runtime.GOOS != "linux" {
		t.Skipf("runs amd64 binaries; this host is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	imgs, err := Build(context.Background(), Options{Arch: "amd64", CacheDir: t.TempDir(), Names: []string{"pause", "testserver"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	extract := func(img Image) string {
		p := filepath.Join(dir, img.Name)
		if err := os.WriteFile(p, check(t, img, "amd64"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("pause", func(t *testing.T) {
		cmd := exec.Command(extract(imgs[0]))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Still running after a while: it sleeps, it does not exit.
		time.Sleep(300 * time.Millisecond)
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("pause exited on its own: %v\n%s", err, out.String())
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := waitTimeout(cmd, 5*time.Second); err != nil {
			t.Fatalf("pause after SIGTERM: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "terminated") {
			t.Errorf("pause output %q", out.String())
		}
	})

	t.Run("testserver", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		data := t.TempDir()
		cmd := exec.Command(extract(imgs[1]))
		cmd.Env = append(os.Environ(), "PORT="+port, "DATA_DIR="+data)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		base := "http://127.0.0.1:" + port
		var up bool
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if code, body := get(t, "GET", base+"/healthz", ""); code == 200 && body == "ok\n" {
				up = true
				break
			}
		}
		if !up {
			t.Fatalf("/healthz never answered\n%s", out.String())
		}
		host, _ := os.Hostname()
		if code, body := get(t, "GET", base+"/", ""); code != 200 || !strings.Contains(body, "hostname: "+host) || !strings.HasPrefix(body, "hello from ballast testserver") {
			t.Errorf("GET /: %d %q", code, body)
		}
		if code, body := get(t, "PUT", base+"/file?path=pvc/proof.txt", "kept across restarts"); code != 204 {
			t.Errorf("PUT /file: %d %q", code, body)
		}
		if got, err := os.ReadFile(filepath.Join(data, "pvc", "proof.txt")); err != nil || string(got) != "kept across restarts" {
			t.Errorf("file on disk: %q %v", got, err)
		}
		if code, body := get(t, "GET", base+"/file?path=pvc/proof.txt", ""); code != 200 || body != "kept across restarts" {
			t.Errorf("GET /file: %d %q", code, body)
		}
		if code, body := get(t, "GET", base+"/resolve?name=localhost", ""); code != 200 || !(strings.Contains(body, "127.0.0.1") || strings.Contains(body, "::1")) {
			t.Errorf("GET /resolve: %d %q", code, body)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := waitTimeout(cmd, 10*time.Second); err != nil {
			t.Fatalf("testserver after SIGTERM: %v\n%s", err, out.String())
		}
	})
}

func get(t *testing.T, method, url, body string) (int, string) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitTimeout(cmd *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cmd.Process.Kill()
		return fmt.Errorf("still running after %v", d)
	}
}

// TestDescribe: the image of a name without an archive, as Build would
// write it, for a caller to write under another reference.
func TestDescribe(t *testing.T) {
	cache := t.TempDir()
	img, err := Describe(context.Background(), Options{Arch: "arm64", CacheDir: cache}, "pause")
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != want["pause"].ref || img.Architecture != "arm64" || !reflect.DeepEqual(img.Config.Entrypoint, []string{"/pause"}) || img.Config.User != "65535:65535" {
		t.Errorf("pause: ref %q arch %q config %+v", img.Ref, img.Architecture, img.Config)
	}
	var bin []byte
	for _, e := range img.Entries {
		if e.Path == "pause" {
			bin = e.Data
		}
	}
	if err := CheckELF(bin, "arm64"); err != nil {
		t.Errorf("/pause: %v", err)
	}
	if tars, _ := filepath.Glob(filepath.Join(cache, "componentimages", "*.tar")); len(tars) != 0 {
		t.Errorf("Describe wrote %q", tars)
	}
	for _, name := range []string{"nginx", "busybox"} {
		if _, err := Describe(context.Background(), Options{Arch: "amd64", CacheDir: cache}, name); err == nil {
			t.Errorf("Describe(%q) did not fail", name)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Arch: "riscv64"}, `architecture "riscv64"`},
		{Options{Arch: "amd64", Names: []string{"nginx"}}, `unknown image "nginx"`},
		{Options{Arch: "amd64", Names: []string{"pause", "pause"}}, "twice"},
		{Options{Arch: "amd64"}, "Options.Busybox is empty"},
		{Options{Arch: "arm64", Names: []string{"busybox"}, Busybox: []byte("#!/bin/sh\n")}, "not an ELF"},
		{Options{Arch: "arm64", Names: []string{"busybox"}, Busybox: self}, "ELF machine"},
	} {
		tc.o.CacheDir = t.TempDir()
		_, err := Build(context.Background(), tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one containing %q", tc.o.Names, err, tc.want)
		}
	}
}

// TestDefault builds every default image for amd64, as the image builder
// does. A cold build compiles CoreDNS, local-path-provisioner and
// metrics-server (minutes); it keeps them in the user's ballast cache, so
// later runs only hash and reuse. Busybox comes from Debian's
// busybox-static, through the project's Debian client and cache.
func TestDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles CoreDNS, local-path-provisioner and metrics-server when the cache is cold")
	}
	uc, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(uc, "ballast")
	ctx := context.Background()
	bb := debianBusybox(t, ctx, cache, "amd64")
	var log bytes.Buffer
	start := time.Now()
	imgs, err := Build(ctx, Options{Arch: "amd64", CacheDir: cache, Busybox: bb, Log: &log})
	t.Logf("Build took %v:\n%s", time.Since(start).Round(time.Second), log.String())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, img := range imgs {
		names = append(names, img.Name)
		check(t, img, "amd64")
	}
	if !reflect.DeepEqual(names, Default) {
		t.Errorf("built %q, want %q", names, Default)
	}

	read := func(img Image) *ociimage.Archive {
		f, err := os.Open(img.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		a, err := ociimage.Read(f)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	coredns := read(imgs[1])
	if f, _ := coredns.File("coredns"); f.Xattrs[ociimage.XattrCapability] != ociimage.FileCapabilities(10) {
		t.Errorf("/coredns has no cap_net_bind_service file capability: %q", f.Xattrs)
	}
	busybox := read(imgs[3])
	for _, applet := range []string{"sh", "mkdir", "rm", "ls", "cat"} {
		if f, ok := busybox.File("bin/" + applet); !ok || f.Type != ociimage.Symlink || f.Target != "busybox" {
			t.Errorf("busybox /bin/%s: %+v", applet, f)
		}
	}
	if b, _ := busybox.File("bin/busybox"); !bytes.Equal(b.Data, bb) {
		t.Error("busybox /bin/busybox is not the binary given")
	}
	// klipper-helm: ballast's entry beside upstream helm, as a non-root
	// user with a home; Traefik where its image keeps it.
	helm := read(imgs[6])
	for _, p := range []string{"usr/bin/entry", "usr/bin/helm"} {
		if f, ok := helm.File(p); !ok || CheckELF(f.Data, "amd64") != nil || f.Mode&0o111 == 0 {
			t.Errorf("klipper-helm /%s: missing or not an amd64 executable", p)
		}
	}
	if f, ok := helm.File("home/klipper-helm"); !ok || f.UID != 1000 {
		t.Errorf("klipper-helm /home/klipper-helm: %+v", f)
	}
	if cfg := helm.Config.Config; cfg.User != "1000:1000" || !slices.Equal(cfg.Entrypoint, []string{"entry"}) {
		t.Errorf("klipper-helm config: user %q entrypoint %q", cfg.User, cfg.Entrypoint)
	}
	if f, ok := read(imgs[7]).File("usr/local/bin/traefik"); !ok || CheckELF(f.Data, "amd64") != nil {
		t.Error("traefik: no amd64 /usr/local/bin/traefik")
	}

	// Everything comes from the cache the second time.
	log.Reset()
	start = time.Now()
	again, err := Build(ctx, Options{Arch: "amd64", CacheDir: cache, Busybox: bb, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, imgs) || strings.Count(log.String(), "reused") != len(Default) {
		t.Errorf("second build:\n%s", log.String())
	}
	t.Logf("second Build took %v", time.Since(start).Round(time.Millisecond))
}

// debianBusybox returns /bin/busybox of Debian's busybox-static for arch.
func debianBusybox(t *testing.T, ctx context.Context, cache, arch string) []byte {
	t.Helper()
	a, err := debian.Open(ctx, debian.Config{Arch: arch, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := a.Resolve(ctx, []string{"busybox-static"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkgs {
		if p.Name != "busybox-static" {
			continue
		}
		u, err := a.Unpack(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"usr/bin/busybox", "bin/busybox"} {
			if data, err := os.ReadFile(u.HostPath(path)); err == nil {
				return data
			}
		}
		t.Fatalf("busybox-static %s has no bin/busybox", p.Version)
	}
	t.Fatalf("busybox-static not resolved: %+v", pkgs)
	return nil
}
