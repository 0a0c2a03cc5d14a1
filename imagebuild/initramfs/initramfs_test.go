package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"
)

const testKver = "6.12.0-test-amd64"

var testTime = time.Date(2024, 3, 5, 6, 7, 8, 0, time.UTC)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fakeModule is the plain contents of a fake module: a minimal ELF file
// whose .modinfo names the module and its dependencies, as modpost writes
// it, plus some padding text worth compressing.
func fakeModule(name string) []byte {
	var deps []string
	for _, m := range testModules {
		if ModuleName(m.file) == name {
			for _, d := range strings.Fields(m.deps) {
				deps = append(deps, ModuleName(d))
			}
		}
	}
	modinfo := "license=GPL\x00depends=" + strings.Join(deps, ",") + "\x00name=" + name +
		"\x00vermagic=" + testKver + " SMP mod_unload\x00" + strings.Repeat(name+" ", 200)
	return minimalELF(modinfo)
}

// minimalELF builds a 64-bit little-endian relocatable ELF file with one
// .modinfo section.
func minimalELF(modinfo string) []byte {
	shstrtab := "\x00.modinfo\x00.shstrtab\x00"
	modOff := uint64(64)
	strOff := modOff + uint64(len(modinfo))
	shOff := (strOff + uint64(len(shstrtab)) + 7) &^ 7
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	binary.Write(&b, le, struct {
		Type, Machine                              uint16
		Version                                    uint32
		Entry, Phoff, Shoff                        uint64
		Flags                                      uint32
		Ehsize, Phentsize, Phnum, Shentsize, Shnum uint16
		Shstrndx                                   uint16
	}{1, 62, 1, 0, 0, shOff, 0, 64, 0, 0, 64, 3, 2})
	b.WriteString(modinfo)
	b.WriteString(shstrtab)
	b.Write(make([]byte, int(shOff)-b.Len()))
	type sh struct {
		Name, Type             uint32
		Flags, Addr, Off, Size uint64
		Link, Info             uint32
		Addralign, Entsize     uint64
	}
	binary.Write(&b, le, sh{})
	binary.Write(&b, le, sh{Name: 1, Type: 1, Flags: 2, Off: modOff, Size: uint64(len(modinfo)), Addralign: 1})
	binary.Write(&b, le, sh{Name: 10, Type: 3, Off: strOff, Size: uint64(len(shstrtab)), Addralign: 1})
	return b.Bytes()
}

func compressAs(t testing.TB, file string, plain []byte) []byte {
	var b bytes.Buffer
	switch {
	case strings.HasSuffix(file, ".xz"):
		w, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&b)
		must(t, err)
		_, err = w.Write(plain)
		must(t, err)
		must(t, w.Close())
	case strings.HasSuffix(file, ".zst"):
		w, err := zstd.NewWriter(&b)
		must(t, err)
		_, err = w.Write(plain)
		must(t, err)
		must(t, w.Close())
	case strings.HasSuffix(file, ".gz"):
		w := gzip.NewWriter(&b)
		_, err := w.Write(plain)
		must(t, err)
		must(t, w.Close())
	default:
		return plain
	}
	return b.Bytes()
}

// testModules: path in the module directory -> modules.dep dependencies.
var testModules = []struct{ file, deps string }{
	{"kernel/drivers/virtio/virtio.ko.xz", ""},
	{"kernel/drivers/virtio/virtio_ring.ko.xz", ""},
	{"kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz", ""},
	{"kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz", ""},
	{"kernel/drivers/virtio/virtio_pci.ko.xz", "kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz"},
	{"kernel/drivers/block/virtio_blk.ko.zst", "kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz"},
	{"kernel/fs/mbcache.ko.gz", ""},
	{"kernel/fs/jbd2/jbd2.ko.xz", ""},
	{"kernel/lib/crc16.ko", ""},
	{"kernel/fs/ext4/ext4.ko.xz", "kernel/lib/crc16.ko kernel/fs/mbcache.ko.gz kernel/fs/jbd2/jbd2.ko.xz"},
	{"kernel/fs/nls/nls_iso8859-1.ko.xz", ""},
	{"kernel/drivers/unused/unused.ko.xz", ""},
}

// kernelTree is a fake kernel package; withDep adds the modules.dep that
// depmod would write at install time (Debian's packages have none).
func kernelTree(t testing.TB, withDep bool) *filetree.Tree {
	tr := filetree.New(testTime)
	dir := "usr/lib/modules/" + testKver + "/"
	var dep strings.Builder
	for _, m := range testModules {
		must(t, tr.AddFile(dir+m.file, 0o644, compressAs(t, m.file, fakeModule(ModuleName(m.file)))))
		fmt.Fprintf(&dep, "%s: %s\n", m.file, m.deps)
	}
	if withDep {
		must(t, tr.AddFile(dir+"modules.dep", 0o644, []byte(dep.String())))
	}
	must(t, tr.AddFile(dir+"modules.builtin", 0o644, []byte("kernel/fs/squashfs/squashfs.ko\nkernel/drivers/ata/ahci.ko\n")))
	must(t, tr.AddFile("boot/vmlinuz-"+testKver, 0o644, []byte("kernel image")))
	return tr
}

func TestKernelVersionAndImage(t *testing.T) {
	tr := kernelTree(t, true)
	kver, err := KernelVersion(tr)
	must(t, err)
	if kver != testKver {
		t.Fatalf("KernelVersion = %q, want %q", kver, testKver)
	}
	e, err := KernelImage(tr, kver)
	must(t, err)
	if e.Path != "boot/vmlinuz-"+testKver {
		t.Errorf("KernelImage = %s", e.Path)
	}
	must(t, tr.AddDir("usr/lib/modules/6.13.0-other", 0o755))
	if _, err := KernelVersion(tr); err == nil || !strings.Contains(err.Error(), "6.13.0-other") {
		t.Errorf("two kernels: want an error naming both, got %v", err)
	}
	if _, err := KernelImage(tr, "6.13.0-other"); err == nil {
		t.Error("KernelImage of a kernel without an image: want an error")
	}
	if _, err := KernelVersion(filetree.New(testTime)); err == nil {
		t.Error("empty tree: want an error")
	}
}

func TestSelectModules(t *testing.T) {
	for _, withDep := range []bool{true, false} {
		t.Run(fmt.Sprintf("modules.dep=%v", withDep), func(t *testing.T) {
			testSelectModules(t, kernelTree(t, withDep))
		})
	}
}

func testSelectModules(t *testing.T, tr *filetree.Tree) {
	mods, err := SelectModules(tr, testKver, []string{"virtio-pci", "virtio_blk", "ext4", "squashfs", "ahci", "nls-iso8859-1", "virtio_pci"})
	must(t, err)
	var names []string
	pos := map[string]int{}
	for i, m := range mods {
		names = append(names, m.Name)
		if _, dup := pos[m.Name]; dup {
			t.Errorf("%s selected twice", m.Name)
		}
		pos[m.Name] = i
	}
	want := []string{"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
		"virtio_blk", "mbcache", "jbd2", "crc16", "ext4", "nls_iso8859_1"}
	slices.Sort(want)
	got := slices.Clone(names)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("selected %v, want the set %v", names, want)
	}
	for _, m := range mods {
		for _, d := range m.Deps {
			if pos[d] >= pos[m.Name] {
				t.Errorf("%s (at %d) comes before its dependency %s (at %d)", m.Name, pos[m.Name], d, pos[d])
			}
		}
	}
	if m := mods[pos["nls_iso8859_1"]]; m.Path != "kernel/fs/nls/nls_iso8859-1.ko.xz" || m.PlainPath() != "kernel/fs/nls/nls_iso8859-1.ko" {
		t.Errorf("nls_iso8859_1: path %s, plain %s", m.Path, m.PlainPath())
	}

	_, err = SelectModules(tr, testKver, []string{"ext4", "no_such_mod", "squashfs", "other-missing"})
	if err == nil || !strings.Contains(err.Error(), "no_such_mod, other-missing") {
		t.Fatalf("want an error listing both missing modules, got %v", err)
	}
}

func TestSelectModulesBrokenTree(t *testing.T) {
	for name, dep := range map[string]string{
		"cycle":       "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n",
		"missing dep": "kernel/a.ko: kernel/gone.ko\n",
		"no file":     "kernel/a.ko:\nkernel/nofile.ko:\n",
		"syntax":      "kernel/a.ko\n",
	} {
		t.Run(name, func(t *testing.T) {
			tr := filetree.New(testTime)
			dir := "usr/lib/modules/" + testKver + "/"
			must(t, tr.AddFile(dir+"kernel/a.ko", 0o644, []byte("a")))
			must(t, tr.AddFile(dir+"kernel/b.ko", 0o644, []byte("b")))
			must(t, tr.AddFile(dir+"modules.dep", 0o644, []byte(dep)))
			if _, err := SelectModules(tr, testKver, []string{"a", "nofile"}); err == nil {
				t.Fatal("want an error")
			} else if !strings.Contains(err.Error(), "modules.dep") {
				t.Errorf("error does not name modules.dep: %v", err)
			}
		})
	}
}

func testSpec(t testing.TB, withDep bool) Spec {
	extra := filetree.New(testTime)
	must(t, extra.AddFile("usr/share/extra.txt", 0o644, []byte("extra\n")))
	must(t, extra.AddSymlink("bin", "usr/bin"))
	must(t, extra.AddFile(InitPath, 0o755, []byte("must be replaced")))
	return Spec{
		ModTime:     testTime,
		Init:        filetree.Bytes("\x7fELF the ballast init"),
		Kernel:      kernelTree(t, withDep),
		Modules:     []string{"virtio_blk", "virtio_pci", "ext4", "squashfs"},
		BakedConfig: []byte("#cloud-config\nhostname: test\n"),
		BuildInfo:   []byte(`{"board":"x86_64"}`),
		Extra:       extra,
	}
}

type record struct {
	info cpio.Info
	data []byte
}

// readBack decompresses an initramfs and reads it with u-root's cpio reader.
func readBack(t *testing.T, b []byte) map[string]record {
	zr, err := zstd.NewReader(bytes.NewReader(b))
	must(t, err)
	defer zr.Close()
	plain, err := io.ReadAll(zr)
	must(t, err)
	recs, err := cpio.ReadAllRecords(cpio.EOFReader{RecordReader: cpio.Newc.Reader(bytes.NewReader(plain))})
	must(t, err)
	out := map[string]record{}
	var prev string
	inos := map[uint64]string{}
	for _, r := range recs {
		if r.Name <= prev {
			t.Errorf("%q after %q: not sorted", r.Name, prev)
		}
		prev = r.Name
		if other, dup := inos[r.Ino]; dup {
			t.Errorf("%s and %s share inode %d", r.Name, other, r.Ino)
		}
		inos[r.Ino] = r.Name
		data, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		must(t, err)
		out[r.Name] = record{r.Info, data}
	}
	return out
}

func TestWrite(t *testing.T) {
	for _, withDep := range []bool{true, false} {
		t.Run(fmt.Sprintf("modules.dep=%v", withDep), func(t *testing.T) { testWrite(t, withDep) })
	}
}

func testWrite(t *testing.T, withDep bool) {
	spec := testSpec(t, withDep)
	var a, b bytes.Buffer
	mods, err := Write(context.Background(), &a, spec)
	must(t, err)
	_, err = Write(context.Background(), &b, testSpec(t, withDep))
	must(t, err)
	if sa, sb := sha256.Sum256(a.Bytes()), sha256.Sum256(b.Bytes()); sa != sb {
		t.Fatalf("two builds differ: %x vs %x", sa, sb)
	}

	recs := readBack(t, a.Bytes())
	for name, r := range recs {
		if r.info.MTime != uint64(testTime.Unix()) {
			t.Errorf("%s: mtime %d", name, r.info.MTime)
		}
		if r.info.UID != 0 || r.info.GID != 0 {
			t.Errorf("%s: owner %d:%d", name, r.info.UID, r.info.GID)
		}
	}
	check := func(name string, mode uint64, data string) {
		t.Helper()
		r, ok := recs[name]
		if !ok {
			t.Errorf("%s missing", name)
			return
		}
		if r.info.Mode != mode {
			t.Errorf("%s: mode %o, want %o", name, r.info.Mode, mode)
		}
		if string(r.data) != data {
			t.Errorf("%s: contents %q, want %q", name, r.data, data)
		}
	}
	check("init", cpio.S_IFREG|0o755, "\x7fELF the ballast init")
	check(BakedConfigPath, cpio.S_IFREG|0o600, "#cloud-config\nhostname: test\n")
	check(BuildInfoPath, cpio.S_IFREG|0o644, `{"board":"x86_64"}`)
	check("usr/share/extra.txt", cpio.S_IFREG|0o644, "extra\n")
	check("bin", cpio.S_IFLNK|0o777, "usr/bin")
	check("tmp", cpio.S_IFDIR|0o1777, "")
	check("dev/console", cpio.S_IFCHR|0o600, "")
	if r := recs["dev/console"]; r.info.Rmajor != 5 || r.info.Rminor != 1 {
		t.Errorf("dev/console: %d:%d", r.info.Rmajor, r.info.Rminor)
	}

	var load, paths strings.Builder
	for _, m := range mods {
		p := "lib/modules/" + testKver + "/" + m.PlainPath()
		check(p, cpio.S_IFREG|0o644, string(fakeModule(m.Name)))
		fmt.Fprintln(&load, m.Name)
		fmt.Fprintf(&paths, "%s %s\n", m.Name, m.PlainPath())
	}
	check(ModulesLoadPath, cpio.S_IFREG|0o644, load.String())
	check(ModulesPathPath, cpio.S_IFREG|0o644, paths.String())
	// Requested order, each module after its dependencies, which are
	// taken last-listed first as modprobe does.
	wantLoad := []string{"virtio", "virtio_ring", "virtio_blk", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
		"virtio_pci", "jbd2", "mbcache", "crc16", "ext4"}
	if got := strings.Fields(string(recs[ModulesLoadPath].data)); !slices.Equal(got, wantLoad) {
		t.Errorf("modules.load = %v, want %v", got, wantLoad)
	}
	for name := range recs {
		if strings.HasSuffix(name, ".xz") || strings.HasSuffix(name, ".zst") || strings.HasSuffix(name, ".gz") || strings.Contains(name, "unused") {
			t.Errorf("%s should not be in the initramfs", name)
		}
	}
}

func TestWriteMinimal(t *testing.T) {
	var b bytes.Buffer
	mods, err := Write(context.Background(), &b, Spec{ModTime: testTime, Init: filetree.Bytes("init")})
	must(t, err)
	if len(mods) != 0 {
		t.Errorf("modules %v without asking", mods)
	}
	recs := readBack(t, b.Bytes())
	for _, p := range []string{BakedConfigPath, BuildInfoPath} {
		if _, ok := recs[p]; ok {
			t.Errorf("%s written though not given", p)
		}
	}
	if r, ok := recs[ModulesLoadPath]; !ok || len(r.data) != 0 {
		t.Errorf("modules.load: want present and empty, got %v %q", ok, r.data)
	}
	if _, err := Write(context.Background(), io.Discard, Spec{ModTime: testTime}); err == nil {
		t.Error("no init: want an error")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "initrd.img")
	_, err := WriteFile(context.Background(), p, testSpec(t, false))
	must(t, err)
	st, err := os.Stat(p)
	must(t, err)
	if st.Mode().Perm() != 0o644 || st.Size() == 0 {
		t.Errorf("initrd.img: mode %v size %d", st.Mode(), st.Size())
	}
	bad := testSpec(t, false)
	bad.Modules = append(bad.Modules, "no_such_module")
	if _, err := WriteFile(context.Background(), filepath.Join(dir, "bad.img"), bad); err == nil {
		t.Fatal("want an error for a missing module")
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 1 {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("after a failed write the directory holds %v", names)
	}
}

// TestCPIORoundTrip writes a tree of every kind of entry as cpio and reads
// it back.
func TestCPIORoundTrip(t *testing.T) {
	tr := filetree.New(testTime)
	must(t, tr.Add(filetree.Entry{Path: "a/setuid", Kind: filetree.File, Mode: 0o755 | fs.ModeSetuid, UID: 3, GID: 4, Data: filetree.Bytes("x")}))
	must(t, tr.Add(filetree.Entry{Path: "a/hard", Kind: filetree.Hardlink, Target: "a/setuid"}))
	must(t, tr.Add(filetree.Entry{Path: "dev/sda", Kind: filetree.BlockDevice, Mode: 0o660, Major: 8, Minor: 300}))
	must(t, tr.Add(filetree.Entry{Path: "fifo", Kind: filetree.FIFO, Mode: 0o600}))
	host := filepath.Join(t.TempDir(), "host")
	must(t, os.WriteFile(host, []byte("from the host"), 0o644))
	hf, err := filetree.NewHostFile(host)
	must(t, err)
	must(t, tr.Add(filetree.Entry{Path: "a/host", Kind: filetree.File, Mode: 0o644, Data: hf}))
	must(t, tr.AddFile("a/empty", 0o644, nil))
	var b bytes.Buffer
	must(t, WriteCPIO(context.Background(), &b, tr))
	recs, err := cpio.ReadAllRecords(cpio.EOFReader{RecordReader: cpio.Newc.Reader(bytes.NewReader(b.Bytes()))})
	must(t, err)
	got := map[string]cpio.Record{}
	for _, r := range recs {
		got[r.Name] = r
	}
	if len(got) != tr.Len()-1 {
		t.Errorf("%d records, want %d", len(got), tr.Len()-1)
	}
	want := map[string]cpio.Info{
		"a":        {Mode: cpio.S_IFDIR | 0o755, NLink: 2},
		"a/setuid": {Mode: cpio.S_IFREG | 0o4755, UID: 3, GID: 4, FileSize: 1, NLink: 1},
		"a/hard":   {Mode: cpio.S_IFREG | 0o4755, UID: 3, GID: 4, FileSize: 1, NLink: 1},
		"a/host":   {Mode: cpio.S_IFREG | 0o644, FileSize: 13, NLink: 1},
		"a/empty":  {Mode: cpio.S_IFREG | 0o644, NLink: 1},
		"dev":      {Mode: cpio.S_IFDIR | 0o755, NLink: 2},
		"dev/sda":  {Mode: cpio.S_IFBLK | 0o660, Rmajor: 8, Rminor: 300, NLink: 1},
		"fifo":     {Mode: cpio.S_IFIFO | 0o600, NLink: 1},
	}
	for name, w := range want {
		r, ok := got[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		g := r.Info
		if g.Mode != w.Mode || g.UID != w.UID || g.GID != w.GID || g.FileSize != w.FileSize || g.NLink != w.NLink || g.Rmajor != w.Rmajor || g.Rminor != w.Rminor || g.MTime != uint64(testTime.Unix()) {
			t.Errorf("%s: got %v, want %v", name, g, w)
		}
	}
	data, _ := io.ReadAll(io.NewSectionReader(got["a/host"].ReaderAt, 0, 13))
	if string(data) != "from the host" {
		t.Errorf("a/host: %q", data)
	}
}
