package kmod

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// fakeKernel records loads. With noCompressed it refuses compressed files
// as a kernel without CONFIG_MODULE_DECOMPRESS does.
type fakeKernel struct {
	noCompressed bool
	loaded       []string
	loadedSet    map[string]bool
}

func (k *fakeKernel) FinitModule(f *os.File, params string, flags int) error {
	if flags&unix.MODULE_INIT_COMPRESSED_FILE != 0 && k.noCompressed {
		return unix.EINVAL
	}
	b, _ := os.ReadFile(f.Name())
	if flags&unix.MODULE_INIT_COMPRESSED_FILE != 0 {
		// The kernel decompresses it itself.
		b, _ = decompress(bytes.NewReader(b), f.Name())
	}
	return k.add(string(b))
}

func (k *fakeKernel) InitModule(image []byte, params string) error { return k.add(string(image)) }

func (k *fakeKernel) add(image string) error {
	if k.loadedSet == nil {
		k.loadedSet = map[string]bool{}
	}
	if k.loadedSet[image] {
		return unix.EEXIST
	}
	k.loadedSet[image] = true
	k.loaded = append(k.loaded, image)
	return nil
}

func writeXZ(t *testing.T, path, content string) {
	var buf bytes.Buffer
	w, _ := xz.NewWriter(&buf)
	w.Write([]byte(content))
	w.Close()
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, buf.Bytes(), 0o644)
}

func TestLoaderDepsAndDecompression(t *testing.T) {
	for _, noComp := range []bool{false, true} {
		dir := t.TempDir()
		writeXZ(t, filepath.Join(dir, "kernel/net/llc.ko.xz"), "llc")
		writeXZ(t, filepath.Join(dir, "kernel/net/stp.ko.xz"), "stp")
		writeXZ(t, filepath.Join(dir, "kernel/net/bridge.ko.xz"), "bridge")
		writeXZ(t, filepath.Join(dir, "kernel/net/br_netfilter.ko.xz"), "br_netfilter")
		os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(
			"kernel/net/llc.ko.xz:\n"+
				"kernel/net/stp.ko.xz: kernel/net/llc.ko.xz\n"+
				"kernel/net/bridge.ko.xz: kernel/net/stp.ko.xz kernel/net/llc.ko.xz\n"+
				"kernel/net/br_netfilter.ko.xz: kernel/net/bridge.ko.xz kernel/net/stp.ko.xz kernel/net/llc.ko.xz\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/fs/overlayfs/overlay.ko\n"), 0o644)
		sys := t.TempDir()
		os.Mkdir(filepath.Join(sys, "stp"), 0o755) // already loaded

		k := &fakeKernel{noCompressed: noComp}
		l, err := NewLoader(k, dir, sys)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Load("br-netfilter"); err != nil {
			t.Fatal(err)
		}
		if err := l.Load("overlay"); err != nil {
			t.Fatalf("builtin: %v", err)
		}
		if err := l.Load("bridge"); err != nil {
			t.Fatalf("reload: %v", err)
		}
		// Decompressed content reached the kernel either way, deps first.
		if got := strings.Join(k.loaded, ","); got != "llc,bridge,br_netfilter" {
			t.Fatalf("noCompressed=%v: loaded %s", noComp, got)
		}
		if err := l.Load("nope"); err == nil || !strings.Contains(err.Error(), "unknown module") {
			t.Fatalf("unknown: %v", err)
		}
	}
}

func TestLoadInitramfsList(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "lib/modules/6.12/kernel"), 0o755)
	os.WriteFile(filepath.Join(dir, "lib/modules/6.12/kernel/virtio_blk.ko"), []byte("virtio_blk"), 0o644)
	os.WriteFile(filepath.Join(dir, "lib/modules/6.12/kernel/squashfs.ko"), []byte("squashfs"), 0o644)
	os.WriteFile(filepath.Join(dir, "load"), []byte("# root\nvirtio_blk\nsquashfs\nmissing\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "paths"), []byte("virtio_blk kernel/virtio_blk.ko\nsquashfs kernel/squashfs.ko\n"), 0o644)
	k := &fakeKernel{}
	k.add("squashfs") // EEXIST is fine
	n, err := LoadInitramfsList(k, filepath.Join(dir, "load"), filepath.Join(dir, "paths"), filepath.Join(dir, "lib/modules/6.12"))
	if n != 2 || err == nil || !strings.Contains(err.Error(), "module missing: not in") {
		t.Fatalf("n=%d err=%v", n, err)
	}
}

func FuzzNewLoader(f *testing.F) {
	f.Add("kernel/a.ko: kernel/b.ko\nkernel/b.ko:\n")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, dep string) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
		if l, err := NewLoader(&fakeKernel{}, dir, ""); err == nil {
			l.Load("a")
		}
	})
}
