package imagebuild

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/imagebuild/componentimages"
	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/runtimebin"
	"github.com/ballast-os/ballast/imagebuild/spec"
)

// squashfsEntry is one line of unsquashfs -lln.
type squashfsEntry struct {
	mode   string
	size   int64
	target string // symlinks
}

var llnLine = regexp.MustCompile(`^(\S{10}) \d+/\d+ +(\d+|\d+, *\d+) \d{4}-\d\d-\d\d \d\d:\d\d squashfs-root/(.*)$`)

// listSquashfs lists a squashfs with Debian's unsquashfs: the image as
// written, not the tree it came from.
func listSquashfs(t *testing.T, p string) map[string]squashfsEntry {
	t.Helper()
	tool, err := exec.LookPath("unsquashfs")
	if err != nil {
		t.Fatal("unsquashfs not found: install squashfs-tools (scripts/install-deps test)")
	}
	cmd := exec.Command(tool, "-lln", p)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("unsquashfs -lln %s: %v", p, err)
	}
	m := map[string]squashfsEntry{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := llnLine.FindStringSubmatch(sc.Text())
		if f == nil {
			continue
		}
		name, target, _ := strings.Cut(f[3], " -> ")
		size, _ := strconv.ParseInt(f[2], 10, 64)
		m[name] = squashfsEntry{mode: f[1], size: size, target: target}
	}
	if len(m) == 0 {
		t.Fatalf("unsquashfs -lln %s listed nothing:\n%s", p, out)
	}
	return m
}

// TestDefaultImageCarriesRuntime builds the default x86_64 image and reads
// its squashfs back: the ballast runtime, its personalities, the CNI
// plugins, every default image archive, the netfilter tools and the
// kernel modules k3s loads are there, and build.json records them.
func TestDefaultImageCarriesRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the runtime (minutes when cold) and the default image: not a -short test")
	}
	out := t.TempDir()
	var log bytes.Buffer
	b, err := newBuilder(Options{Spec: testSpec(t, out, nil), CacheDir: testCache(t), Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.run(context.Background())
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, log.String())
	}
	if b.runtime == nil || b.runtime.kind != spec.RuntimeBallast {
		t.Fatalf("default build has runtime %+v", b.runtime)
	}
	ls := listSquashfs(t, res.SquashfsPath)
	file := func(p string) squashfsEntry {
		t.Helper()
		e, ok := ls[p]
		if !ok {
			t.Errorf("/%s is not in the system image", p)
		} else if e.mode[0] != '-' {
			t.Errorf("/%s is %s, not a file", p, e.mode)
		}
		return e
	}
	link := func(p, target string) {
		t.Helper()
		if e, ok := ls[p]; !ok || e.mode[0] != 'l' || e.target != target {
			t.Errorf("/%s = %+v, want a symlink to %s", p, e, target)
		}
	}

	k3s := file(RuntimeBinPath)
	if k3s.mode != "-rwxr-xr-x" || k3s.size != b.runtime.rt.K3s.Size {
		t.Errorf("/usr/bin/k3s: %+v, want mode 0755 and %d bytes", k3s, b.runtime.rt.K3s.Size)
	}
	for _, l := range runtimeLinks {
		link(l, "/usr/bin/k3s")
	}
	// crictl's personality runs cri-tools' crictl from ToolsDir.
	file(ToolsDir + "/crictl")
	for _, p := range runtimebin.CNIPlugins {
		if e := file(CNIBinDir + "/" + p.Name); e.mode != "" && e.mode != "-rwxr-xr-x" {
			t.Errorf("CNI plugin %s has mode %s", p.Name, e.mode)
		}
	}
	for _, p := range runtimebin.Tools {
		if e := file(toolPath(p.Name)); e.mode != "" && e.mode != "-rwxr-xr-x" {
			t.Errorf("/%s has mode %s", toolPath(p.Name), e.mode)
		}
	}
	if _, ok := ls[K3sBinPath]; ok {
		t.Errorf("/%s (the official k3s) is in an image with the ballast runtime", K3sBinPath)
	}

	var imagesMB int64
	for _, name := range componentimages.Default {
		e := file(ImagesDir + "/" + name + ".tar")
		imagesMB += e.size
		t.Logf("image %-24s %6.1f MiB", name, mib(e.size))
	}
	for _, img := range b.runtime.images {
		checkOCIArchive(t, img)
	}

	// The netfilter tools and what k3s runs from the host.
	link("usr/sbin/iptables", "/usr/sbin/iptables-nft")
	link("usr/sbin/iptables-save", "/usr/sbin/iptables-nft-save")
	link("usr/sbin/iptables-restore", "/usr/sbin/iptables-nft-restore")
	link("usr/sbin/ip6tables", "/usr/sbin/ip6tables-nft")
	for _, p := range []string{"usr/sbin/xtables-nft-multi", "usr/sbin/ipset", "usr/sbin/conntrack", "usr/sbin/runc", "usr/bin/nsenter", "usr/bin/mount", "usr/bin/umount"} {
		if e, ok := ls[p]; !ok || (e.mode[0] != '-' && e.mode[0] != 'l') {
			t.Errorf("/%s is missing (%+v)", p, e)
		}
	}
	if _, ok := ls["usr/bin/busybox"]; ok {
		t.Error("busybox is in the system image: it belongs to the helper image only")
	}
	// glibc's iconv modules stay out (systemExcludes); libc itself stays.
	for p := range ls {
		if path.Base(path.Dir(p)) == "gconv" || path.Base(p) == "gconv" {
			t.Errorf("/%s is in the system image: gconv modules are excluded", p)
			break
		}
	}
	// The kernel's config, for k3s check-config.
	if e, ok := ls["usr/lib/modules/"+res.Kernel+"/config"]; !ok || e.mode[0] != '-' || e.size < 100<<10 {
		t.Errorf("/usr/lib/modules/%s/config: %+v, want the kernel's build configuration", res.Kernel, e)
	}
	if _, ok := ls["usr/lib/x86_64-linux-gnu/libc.so.6"]; !ok {
		t.Error("/usr/lib/x86_64-linux-gnu/libc.so.6 is missing")
	}

	// Every module the runtime loads, as a file under the image's module
	// tree or built into the kernel (fuse is, in Debian's amd64 kernel).
	mods := map[string]string{}
	for p := range ls {
		if strings.HasPrefix(p, "usr/lib/modules/"+res.Kernel+"/kernel/") && strings.Contains(p, ".ko") {
			mods[moduleName(p)] = p
		}
	}
	if e := b.system.Get("usr/lib/modules/" + res.Kernel + "/modules.builtin"); e != nil {
		for _, l := range strings.Fields(string(entryBytes(t, e))) {
			mods[moduleName(l)] = "built in: " + l
		}
	}
	for _, m := range RuntimeModules {
		if p, ok := mods[m]; !ok {
			t.Errorf("kernel module %s is not in the system image", m)
		} else if testing.Verbose() {
			t.Logf("module %-22s /%s", m, p)
		}
	}

	// build.json records the runtime.
	var man Manifest
	bj := readManifest(t, b)
	if err := json.Unmarshal(bj, &man); err != nil {
		t.Fatal(err)
	}
	if man.Runtime == nil || man.Runtime.Kind != "ballast" || man.Runtime.Binary != "/usr/bin/k3s" ||
		man.Runtime.SHA256 != b.runtime.rt.K3s.SHA256 || len(man.Runtime.Images) != len(componentimages.Default) {
		t.Fatalf("build.json runtime: %+v", man.Runtime)
	}
	for _, img := range man.Runtime.Images {
		if img.Ref == "" || len(img.SHA256) != 64 || !strings.HasPrefix(img.File, "/"+ImagesDir+"/") {
			t.Errorf("build.json image %+v", img)
		}
	}

	t.Logf("squashfs %.1f MiB (target < 250 MiB): k3s %.1f MiB, CNI plugins %.1f MiB, images %.1f MiB (uncompressed sizes)",
		mib(res.SquashfsSize), mib(k3s.size), mib(cniSize(b)), mib(imagesMB))
	for _, st := range res.Steps {
		t.Logf("  step %-40s %s", st.Name, st.Duration.Round(1e6))
	}
	// 250 MiB, issue #12's figure with Traefik and the Helm job image in.
	if res.SquashfsSize >= 250<<20 {
		t.Errorf("system squashfs is %d MiB, over the 250 MiB budget with the runtime", res.SquashfsSize>>20)
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func cniSize(b *builder) int64 {
	var n int64
	for _, c := range b.runtime.rt.CNI {
		n += c.Size
	}
	return n
}

// readManifest returns the build.json the build put into the system tree.
func readManifest(t *testing.T, b *builder) []byte {
	t.Helper()
	e := b.system.Get(SystemJSON)
	if e == nil || e.Kind != filetree.File {
		t.Fatalf("no /%s", SystemJSON)
	}
	return entryBytes(t, e)
}

// checkOCIArchive reads an image archive's index.json: one manifest,
// annotated with the image's full reference (runtime contract).
func checkOCIArchive(t *testing.T, img runtimeImage) {
	t.Helper()
	f, err := os.Open(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Errorf("%s (%s): no index.json: %v", img.Name, img.Path, err)
			return
		}
		if strings.TrimPrefix(h.Name, "./") != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			t.Errorf("%s: index.json: %v", img.Name, err)
			return
		}
		if len(idx.Manifests) != 1 || idx.Manifests[0].Annotations["io.containerd.image.name"] != img.Ref {
			t.Errorf("%s: index.json manifests %+v, want one named %s", img.Name, idx.Manifests, img.Ref)
		}
		return
	}
}

// TestRuntimeK3sAndExtraImages builds the system tree pieces for kind k3s
// from a local binary with an extra image archive: /usr/local/bin/k3s, no
// ballast runtime, the archive under its name.
func TestRuntimeK3sFilesInTree(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "k3s")
	os.WriteFile(bin, []byte("official"), 0o755)
	archive := filepath.Join(dir, "app.tar")
	writeTar(t, archive, map[string]string{"oci-layout": "{}", "index.json": "{}"})
	s := testSpec(t, dir, func(s *spec.Spec) {
		s.Runtime = spec.Runtime{Kind: spec.RuntimeK3s, File: "k3s", Images: []string{"app.tar"}}
		s.Dir = dir
	})
	b, err := newBuilder(Options{Spec: s, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rf, err := b.buildRuntime(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.buildRuntimeImages(context.Background(), &packages{}, rf); err != nil {
		t.Fatal(err)
	}
	tree := filetree.New(DefaultEpoch)
	if err := b.addRuntimeFiles(tree, rf); err != nil {
		t.Fatal(err)
	}
	if e := tree.Get(K3sBinPath); e == nil || e.Mode != 0o755 {
		t.Errorf("/%s = %+v", K3sBinPath, e)
	}
	if tree.Get(RuntimeBinPath) != nil || tree.Get("usr/bin/kubectl") != nil || tree.Get(CNIBinDir) != nil {
		t.Error("kind k3s got the ballast runtime's files")
	}
	if e := tree.Get(ImagesDir + "/app.tar"); e == nil || e.Kind != filetree.File {
		t.Errorf("extra archive missing: %+v", e)
	}
	m, err := rf.manifest()
	if err != nil || m.Binary != "/usr/local/bin/k3s" || m.Kind != "k3s" || len(m.Images) != 1 || m.Images[0].Name != "app" {
		t.Fatalf("manifest %+v, %v", m, err)
	}
}

func TestRuntimeImageArchiveChecked(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k3s"), []byte("official"), 0o755)
	writeTar(t, filepath.Join(dir, "notimage.tar"), map[string]string{"hello.txt": "hi"})
	os.WriteFile(filepath.Join(dir, "garbage.tar"), bytes.Repeat([]byte{0xff}, 1024), 0o644)
	for entry, want := range map[string]string{
		"notimage.tar":    "not an image archive",
		"garbage.tar":     "not a tar archive",
		"missing/app.tar": "no such file",
	} {
		s := testSpec(t, dir, func(s *spec.Spec) {
			s.File = filepath.Join(dir, "ballast.yaml")
			s.Runtime = spec.Runtime{Kind: spec.RuntimeK3s, File: "k3s", Images: []string{entry}}
			s.Dir = dir
		})
		b, err := newBuilder(Options{Spec: s, CacheDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		rf, err := b.buildRuntime(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		err = b.buildRuntimeImages(context.Background(), &packages{}, rf)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "runtime.images[0]") || !strings.Contains(err.Error(), "ballast.yaml") {
			t.Errorf("%s: err = %v; want %q with the spec file and key", entry, err, want)
		}
	}
}

func TestCheckRuntimeModules(t *testing.T) {
	const root = "usr/lib/modules/6.12-test/"
	// trees holds every runtime module but skip, every third one as
	// builtin (modules.builtin of the kernel package), the rest as files.
	trees := func(skip string) (*filetree.Tree, *kernelFiles) {
		sys, kt := filetree.New(DefaultEpoch), filetree.New(DefaultEpoch)
		var builtin []string
		for i, m := range RuntimeModules {
			switch {
			case m == skip:
			case i%3 == 0:
				builtin = append(builtin, "kernel/net/"+m+".ko")
			default:
				if err := sys.AddFile(root+"kernel/net/"+m+".ko.xz", 0o644, []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := kt.AddFile(root+"modules.builtin", 0o644, []byte(strings.Join(builtin, "\n")+"\n")); err != nil {
			t.Fatal(err)
		}
		return sys, &kernelFiles{version: "6.12-test", tree: kt}
	}
	sys, k := trees("")
	if err := checkRuntimeModules(sys, k, "testboard"); err != nil {
		t.Fatalf("every module present (files or builtin): %v", err)
	}
	for _, skip := range []string{RuntimeModules[0], "br_netfilter"} {
		sys, k := trees(skip)
		err := checkRuntimeModules(sys, k, "testboard")
		if err == nil || !strings.Contains(err.Error(), "testboard") || !strings.HasSuffix(strings.SplitN(err.Error(), "(", 2)[0], ": "+skip+" ") || !strings.Contains(err.Error(), "module_excludes") {
			t.Errorf("without %s: err = %v; want the board, that module alone and the fix", skip, err)
		}
	}
}

func writeTar(t *testing.T, p string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, c := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg})
		tw.Write([]byte(c))
	}
	tw.Close()
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
