package initramfs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ulikunitz/xz"
)

// The modules an x86_64 image needs to find and mount its root.
var rootModules = []string{"virtio_pci", "virtio_blk", "virtio_scsi", "virtio_console", "sd_mod", "sr_mod",
	"ahci", "nvme", "usb_storage", "uas", "xhci_pci", "ehci_pci", "squashfs", "ext4", "vfat", "isofs", "loop",
	"overlay", "nls_cp437", "nls_iso8859_1", "nls_utf8", "qemu_fw_cfg", "efivarfs", "crc32c_generic"}

// TestDebianKernel selects and packs modules from the real trixie
// linux-image-amd64, downloaded once into $HOME/.cache/ballast/test-debs.
func TestDebianKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads a Debian kernel package; skipped with -short")
	}
	deb := debianKernelDeb(t)
	kernel, kver := unpackKernel(t, deb)

	got, err := KernelVersion(kernel)
	if err != nil || got != kver {
		t.Fatalf("KernelVersion = %q, %v; want %q", got, err, kver)
	}
	img, err := KernelImage(kernel, kver)
	if err != nil {
		t.Fatal(err)
	}
	if img.Size() < 1<<20 {
		t.Errorf("kernel image %s is only %d bytes", img.Path, img.Size())
	}

	mods, err := SelectModules(kernel, kver, rootModules)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
	}
	for _, m := range mods {
		for _, d := range m.Deps {
			if pos[d] >= pos[m.Name] {
				t.Errorf("%s loads before its dependency %s", m.Name, d)
			}
		}
	}

	start := time.Now()
	var out bytes.Buffer
	written, err := Write(context.Background(), &out, Spec{
		ModTime: time.Unix(1700000000, 0),
		Init:    filetree.Bytes("\x7fELF init"),
		Kernel:  kernel,
		Modules: rootModules,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s: %d modules (%d asked for), initramfs %d KiB, built in %v",
		kver, len(written), len(rootModules), out.Len()>>10, time.Since(start).Round(time.Millisecond))
	recs := readBack(t, out.Bytes())
	for _, m := range written {
		r, ok := recs["lib/modules/"+kver+"/"+m.PlainPath()]
		if !ok {
			t.Errorf("%s missing from the archive", m.Name)
			continue
		}
		if !bytes.HasPrefix(r.data, []byte("\x7fELF")) {
			t.Errorf("%s: not an ELF file after decompression", m.Name)
		}
		if !bytes.Contains(r.data, []byte("vermagic="+kver+" ")) {
			t.Errorf("%s: no vermagic for %s", m.Name, kver)
		}
	}
	for _, want := range []string{"squashfs", "ext4", "virtio_blk", "overlay"} {
		if _, ok := pos[want]; !ok && !builtinIn(t, kernel, kver, want) {
			t.Errorf("%s neither selected nor built in", want)
		}
	}
}

func builtinIn(t *testing.T, kernel *filetree.Tree, kver, name string) bool {
	dir, _ := ModulesDir(kernel, kver)
	b, err := readEntry(kernel, kernel.Get(dir+"/modules.builtin"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if ModuleName(strings.TrimSpace(line)) == name {
			return true
		}
	}
	return false
}

func testCacheDir(t *testing.T) string {
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(home, ".cache", "ballast", "test-debs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// debianKernelDeb returns the path of the current trixie kernel package,
// found through linux-image-amd64 in the Packages index and checked
// against its SHA-256. Without network it falls back to a cached package.
func debianKernelDeb(t *testing.T) string {
	dir := testCacheDir(t)
	mirror := os.Getenv("BALLAST_TEST_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	filename, sum, err := findKernelPackage(mirror)
	if err != nil {
		cached, _ := filepath.Glob(filepath.Join(dir, "linux-image-*-amd64_*_amd64.deb"))
		if len(cached) == 0 {
			t.Fatalf("finding the trixie kernel package: %v (and none cached in %s)", err, dir)
		}
		slices.Sort(cached)
		t.Logf("no Packages index (%v); using cached %s", err, cached[len(cached)-1])
		return cached[len(cached)-1]
	}
	p := filepath.Join(dir, filepath.Base(filename))
	if fileSHA256(p) == sum {
		return p
	}
	t.Logf("downloading %s/%s", mirror, filename)
	resp, err := http.Get(mirror + "/" + filename)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", filename, resp.Status)
	}
	tmp, err := os.CreateTemp(dir, ".download-*")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), resp.Body); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		t.Fatalf("%s: SHA-256 %s, Packages says %s", filename, got, sum)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSHA256(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// findKernelPackage reads trixie's Packages index for the package that
// linux-image-amd64 depends on, and returns its pool path and SHA-256.
func findKernelPackage(mirror string) (filename, sum string, err error) {
	client := &http.Client{Timeout: 2 * time.Minute}
	resp, err := client.Get(mirror + "/dists/trixie/main/binary-amd64/Packages.xz")
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("Packages.xz: %s", resp.Status)
	}
	xr, err := xz.NewReader(bufio.NewReaderSize(resp.Body, 1<<20))
	if err != nil {
		return "", "", err
	}
	stanzas := map[string]map[string]string{}
	cur := map[string]string{}
	sc := bufio.NewScanner(xr)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	flush := func() {
		if name := cur["Package"]; strings.HasPrefix(name, "linux-image-") {
			stanzas[name] = cur
		}
		cur = map[string]string{}
	}
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, " ") {
			cur[k] = v
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	meta := stanzas["linux-image-amd64"]
	if meta == nil {
		return "", "", fmt.Errorf("no linux-image-amd64 in Packages")
	}
	for _, dep := range strings.Split(meta["Depends"], ",") {
		name := strings.Fields(strings.TrimSpace(dep))[0]
		if !strings.HasPrefix(name, "linux-image-") {
			continue
		}
		if s := stanzas[name]; s != nil {
			return s["Filename"], s["SHA256"], nil
		}
		// linux-image-6.12.x-amd64 may be provided by the signed
		// variant's unsigned sibling.
		if s := stanzas[name+"-unsigned"]; s != nil {
			return s["Filename"], s["SHA256"], nil
		}
	}
	return "", "", fmt.Errorf("linux-image-amd64 depends on %q, not found in Packages", meta["Depends"])
}

// unpackKernel extracts the package once (dpkg-deb) next to it and returns
// its modules and kernel image as a tree of host files.
func unpackKernel(t *testing.T, deb string) (*filetree.Tree, string) {
	dir := strings.TrimSuffix(deb, ".deb") + ".d"
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		tool, err := exec.LookPath("dpkg-deb")
		if err != nil {
			t.Fatal("dpkg-deb is needed to unpack the kernel package")
		}
		os.RemoveAll(dir)
		if out, err := exec.Command(tool, "-x", deb, dir).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x %s: %v\n%s", deb, err, out)
		}
		if err := os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree := filetree.New(time.Unix(1700000000, 0))
	var kver string
	for _, sub := range []string{"usr/lib/modules", "lib/modules", "boot"} {
		root := filepath.Join(dir, sub)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			rel = filepath.ToSlash(rel)
			switch {
			case d.IsDir():
				return tree.AddDir(rel, 0o755)
			case d.Type()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				return tree.AddSymlink(rel, target)
			case d.Type().IsRegular():
				hf, err := filetree.NewHostFile(p)
				if err != nil {
					return err
				}
				if name, ok := strings.CutPrefix(rel, "boot/vmlinuz-"); ok {
					kver = name
				}
				return tree.Add(filetree.Entry{Path: rel, Kind: filetree.File, Mode: 0o644, Data: hf})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if kver == "" {
		t.Fatalf("%s has no boot/vmlinuz-*", deb)
	}
	return tree, kver
}
