package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/ballast-os/ballast/imagebuild/bmap"
	"github.com/ballast-os/ballast/imagebuild/filetree"
)

var testTime = time.Date(2024, 5, 6, 7, 8, 10, 0, time.UTC)

func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// testBoot is a boot tree as the pipeline prepares it, plus names that
// exercise long-name records and nested directories.
func testBoot(t *testing.T) *filetree.Tree {
	t.Helper()
	tr := filetree.New(testTime)
	files := map[string][]byte{
		KernelPath:    randBytes(1, 300_000),
		InitrdPath:    randBytes(2, 123_457),
		BuildJSONPath: []byte(`{"board":"x86_64","kernel":"6.12.0-test"}`),
		UserDataPath:  []byte("#cloud-config\nhostname: test\n"),
		"empty":       nil,
		"a/very/deep/directory with spaces/a long file name.text": []byte("deep"),
	}
	for i := 0; i < 30; i++ { // enough entries to need several directory clusters
		files[fmt.Sprintf("many/file-number-%02d.conf", i)] = []byte(fmt.Sprint(i))
	}
	for p, b := range files {
		if err := tr.AddFile(p, 0o644, b); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required for this test: apt-get install gdisk fdisk mtools dosfstools grub-common grub-pc-bin xorriso genisoimage", tool)
		}
	}
}

func testLayout(t *testing.T, dir string) Layout {
	t.Helper()
	sys := filepath.Join(dir, "system.squashfs")
	if err := os.WriteFile(sys, randBytes(3, 3*int(MiB)+17), 0o644); err != nil {
		t.Fatal(err)
	}
	return Layout{
		Boot:           testBoot(t),
		SystemA:        sys,
		SlotSize:       8 * MiB,
		DataSize:       4 * MiB,
		Arch:           "amd64",
		Cmdline:        "console=tty0 console=ttyS0,115200 panic=10",
		SystemdBootEFI: []byte("MZ fake systemd-boot"),
		GrubModulesDir: HostGrubModules,
		ModTime:        testTime,
		Seed:           "test-seed",
	}
}

func writeTest(t *testing.T) (string, Layout) {
	t.Helper()
	need(t, "grub-mkimage")
	dir := t.TempDir()
	l := testLayout(t, dir)
	img := filepath.Join(dir, "disk.img")
	if err := Write(context.Background(), img, l); err != nil {
		t.Fatal(err)
	}
	return img, l
}

func TestWritePartitionTable(t *testing.T) {
	img, l := writeTest(t)
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	wantSize := MiB + BootSize + 2*l.SlotSize + l.DataSize + MiB
	if st.Size() != wantSize {
		t.Errorf("image size %d, want %d", st.Size(), wantSize)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table, err := gpt.Read(f, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name  string
		typ   gpt.Type
		start uint64
		size  int64
	}{
		{BootName, gpt.EFISystemPartition, 2048, BootSize},
		{SlotAName, gpt.LinuxFilesystem, 2048 + uint64(BootSize/512), l.SlotSize},
		{SlotBName, gpt.LinuxFilesystem, 2048 + uint64((BootSize+l.SlotSize)/512), l.SlotSize},
		{DataName, gpt.LinuxFilesystem, 2048 + uint64((BootSize+2*l.SlotSize)/512), l.DataSize},
	}
	var got []*gpt.Partition
	for _, p := range table.Partitions {
		if p.Type != gpt.Unused {
			got = append(got, p)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d partitions, want %d", len(got), len(want))
	}
	for i, w := range want {
		p := got[i]
		if p.Name != w.name || p.Type != w.typ || p.Start != w.start || int64(p.Size) != w.size {
			t.Errorf("partition %d: %s %s start %d size %d; want %s %s start %d size %d",
				i+1, p.Name, p.Type, p.Start, p.Size, w.name, w.typ, w.start, w.size)
		}
		if p.GUID != strings.ToUpper(GUID(l.Seed, w.name)) && p.GUID != GUID(l.Seed, w.name) {
			t.Errorf("partition %d GUID %s, want %s", i+1, p.GUID, GUID(l.Seed, w.name))
		}
	}

	// Slot A holds the squashfs byte for byte.
	sys, _ := os.ReadFile(l.SystemA)
	got2 := make([]byte, len(sys))
	if _, err := f.ReadAt(got2, int64(want[1].start)*512); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got2, sys) {
		t.Error("BALLAST_A does not hold the system image")
	}
}

func TestWriteSgdiskAccepts(t *testing.T) {
	need(t, "sgdisk", "sfdisk")
	img, _ := writeTest(t)
	out, err := exec.Command("sgdisk", "-v", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v: %v\n%s", err, out)
	}
	out, err = exec.Command("sgdisk", "-p", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk -p: %v\n%s", err, out)
	}
	for _, want := range []string{"EF00  BALLAST_BOOT", "8300  BALLAST_A", "8300  BALLAST_B", "8300  BALLAST_DATA", "First usable sector is 34"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("sgdisk -p lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command("sfdisk", "--dump", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `start=        2048, size=      262144, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B`) ||
		!strings.Contains(string(out), `name="BALLAST_DATA"`) {
		t.Errorf("sfdisk --dump:\n%s", out)
	}
}

func TestWriteBootFiles(t *testing.T) {
	img, l := writeTest(t)
	f, err := file.OpenFromPath(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fs, err := fat32.Read(f, BootSize, 2048*512, 512)
	if err != nil {
		t.Fatalf("go-diskfs cannot read the FAT32: %v", err)
	}
	if got := strings.TrimSpace(fs.Label()); got != BootLabel {
		t.Errorf("label %q, want %q", got, BootLabel)
	}
	want := map[string][]byte{
		"EFI/BOOT/BOOTX64.EFI": l.SystemdBootEFI,
		LoaderEntry: []byte("title ballast (slot A)\nlinux /ballast/vmlinuz\ninitrd /ballast/initrd.img\n" +
			"options console=tty0 console=ttyS0,115200 panic=10 gpt ballast.disk=" + GUID(l.seed(), "disk") + " ballast.slot=A\n"),
	}
	for _, e := range l.Boot.Entries() {
		if e.Kind == filetree.File {
			want[e.Path] = mustRead(t, e)
		}
	}
	for p, b := range want {
		if len(b) == 0 {
			continue // go-diskfs cannot read empty files (first cluster 0, as the FAT spec says)
		}
		got, err := fs.ReadFile("/" + p)
		if err != nil {
			t.Errorf("reading /%s: %v", p, err)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("/%s: %d bytes differ from the %d expected", p, len(got), len(b))
		}
	}
	cfg, err := fs.ReadFile("/" + GrubCfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"serial --unit=0 --speed=115200", `menuentry "ballast (slot A)"`,
		"linux /ballast/vmlinuz console=tty0 console=ttyS0,115200 panic=10 gpt ballast.disk=" + GUID(l.seed(), "disk") + " ballast.slot=A", "initrd /ballast/initrd.img", "set timeout=0"} {
		if !strings.Contains(string(cfg), w) {
			t.Errorf("grub.cfg lacks %q:\n%s", w, cfg)
		}
	}
	loader, _ := fs.ReadFile("/" + LoaderConf)
	if !strings.Contains(string(loader), "default ballast-a.conf") {
		t.Errorf("loader.conf:\n%s", loader)
	}
	// Timestamps come from ModTime, not the clock.
	ents, err := fs.ReadDir("ballast")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(testTime) {
			t.Errorf("%s mtime %v, want %v", e.Name(), fi.ModTime(), testTime)
		}
	}
}

func mustRead(t *testing.T, e *filetree.Entry) []byte {
	r, err := e.Data.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWriteMtoolsAndFsck checks the FAT with independent tools: fsck.fat
// finds nothing to repair and mtools lists and extracts the files.
func TestWriteMtoolsAndFsck(t *testing.T) {
	need(t, "mdir", "mcopy", "fsck.fat")
	img, l := writeTest(t)
	part := filepath.Join(t.TempDir(), "boot.fat")
	src, _ := os.Open(img)
	defer src.Close()
	dst, _ := os.Create(part)
	if _, err := io.Copy(dst, io.NewSectionReader(src, 2048*512, BootSize)); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	out, err := exec.Command("fsck.fat", "-n", "-v", part).CombinedOutput()
	if err != nil {
		t.Errorf("fsck.fat -n: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "32 bit entries") {
		t.Errorf("fsck.fat does not see FAT32:\n%s", out)
	}
	imgAt := img + "@@1048576"
	out, err = exec.Command("mdir", "-i", imgAt, "-/", "::").CombinedOutput()
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, out)
	}
	for _, w := range []string{"BALLASTBOOT", "vmlinuz", "initrd.img", "user-data", "ballast-a.conf", "BOOTX64  EFI", "a long file name.text"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("mdir lacks %q:\n%s", w, out)
		}
	}
	out, err = exec.Command("mcopy", "-i", imgAt, "::/ballast/vmlinuz", "-").Output()
	if err != nil {
		t.Fatalf("mcopy: %v", err)
	}
	if !bytes.Equal(out, mustRead(t, l.Boot.Get(KernelPath))) {
		t.Error("mcopy ::/ballast/vmlinuz differs")
	}
}

func TestWriteGrubBIOS(t *testing.T) {
	img, _ := writeTest(t)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := os.ReadFile(filepath.Join(HostGrubModules, "boot.img"))
	mbr := b[:512]
	if got := binary.LittleEndian.Uint64(mbr[bootKernelSector:]); got != coreLBA {
		t.Errorf("boot.img kernel sector %d, want %d", got, coreLBA)
	}
	// boot.img's code is there, apart from the patched fields.
	if !bytes.Equal(mbr[0x68:0x180], boot[0x68:0x180]) {
		t.Error("MBR code area does not hold boot.img")
	}
	if mbr[450] != 0xee || mbr[510] != 0x55 || mbr[511] != 0xaa {
		t.Error("protective MBR partition lost")
	}
	core := b[coreLBA*512:]
	if got := binary.LittleEndian.Uint64(core[diskbootListStart:]); got != coreLBA+1 {
		t.Errorf("diskboot blocklist start %d, want %d", got, coreLBA+1)
	}
	n := binary.LittleEndian.Uint16(core[diskbootListStart+8:])
	if end := coreLBA + 1 + int(n); end > firstLBA || n == 0 {
		t.Errorf("core image sectors %d end at LBA %d, beyond the gap", n, end)
	}
}

func TestWriteDeterministic(t *testing.T) {
	need(t, "grub-mkimage")
	dir := t.TempDir()
	l := testLayout(t, dir)
	var sums [2][32]byte
	for i := range sums {
		img := filepath.Join(dir, fmt.Sprintf("d%d.img", i))
		if err := Write(context.Background(), img, l); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = sha256.Sum256(b)
	}
	if sums[0] != sums[1] {
		t.Errorf("two writes differ: %x %x", sums[0], sums[1])
	}
	l.Seed = "other"
	img := filepath.Join(dir, "other.img")
	if err := Write(context.Background(), img, l); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(img)
	if sha256.Sum256(b) == sums[0] {
		t.Error("a different seed gave the same image")
	}
}

func TestWriteErrorsLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	l := testLayout(t, dir)
	l.SlotSize = 1 * MiB // the 3 MiB system image does not fit
	img := filepath.Join(dir, "disk.img")
	err := Write(context.Background(), img, l)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want a slot-size error", err)
	}
	l = testLayout(t, dir)
	big := filetree.New(testTime)
	_ = big.Merge(l.Boot)
	_ = big.Add(filetree.Entry{Path: "huge", Kind: filetree.File, Mode: 0o644, Data: sizedSource(BootSize)})
	l.Boot = big
	l.GrubModulesDir = ""
	if err := Write(context.Background(), img, l); err == nil || !strings.Contains(err.Error(), "FAT volume full") {
		t.Fatalf("err = %v, want FAT volume full", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "system.squashfs" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

type sizedSource int64

func (s sizedSource) Open() (io.ReadCloser, error) {
	return io.NopCloser(io.LimitReader(zeroReader{}, int64(s))), nil
}
func (s sizedSource) Size() int64 { return int64(s) }

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestFAT16 checks the small-volume layout that the ISO's efi.img uses.
func TestFAT16(t *testing.T) {
	need(t, "fsck.fat", "mdir", "mcopy")
	tr := testBoot(t)
	size := FATSize(tr)
	p := filepath.Join(t.TempDir(), "efi.img")
	f, _ := os.Create(p)
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := WriteFAT(f, 0, FAT{Label: "EFIBOOT", Size: size, ModTime: testTime, Serial: 1}, tr); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("fsck.fat", "-n", "-v", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "FAT16") {
		t.Errorf("fsck.fat -n: %v\n%s", err, out)
	}
	out, err = exec.Command("mcopy", "-i", p, "::/"+InitrdPath, "-").Output()
	if err != nil || !bytes.Equal(out, mustRead(t, tr.Get(InitrdPath))) {
		t.Errorf("mcopy initrd: %v", err)
	}
	out, err = exec.Command("mdir", "-i", p, "-/", "::/many").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "file-number-29.conf") {
		t.Errorf("mdir: %v\n%s", err, out)
	}
}

func TestShortNames(t *testing.T) {
	var s shortNamer
	for _, c := range []struct {
		long, short string
		lfn         bool
	}{
		{"BOOTX64.EFI", "BOOTX64 EFI", false},
		{"EFI", "EFI        ", false},
		{"vmlinuz", "VMLINU~1   ", true},
		{"ballast-a.conf", "BALLAS~1CON", true},
		{"ballast-b.conf", "BALLAS~2CON", true},
		{"BOOTX64.EFI", "BOOTX6~1EFI", true}, // duplicate short name
	} {
		got, lfn := s.name(c.long)
		if strings.TrimRight(string(got[:]), " ") != strings.TrimRight(c.short, " ") || (lfn != nil) != c.lfn {
			t.Errorf("%s: %q lfn=%v, want %q lfn=%v", c.long, got, lfn != nil, c.short, c.lfn)
		}
	}
}

// A large data partition (an image with a runtime) is a hole: the image
// takes no more room on disk, the partition's first MiB reads as the
// zeros the init formats, and a block map lists that MiB for a flash.
func TestWriteLargeDataIsSparse(t *testing.T) {
	dir := t.TempDir()
	l := testLayout(t, dir)
	l.GrubModulesDir = ""
	l.DataSize = 3 << 30
	img := filepath.Join(dir, "disk.img")
	if err := Write(context.Background(), img, l); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if want := MiB + BootSize + 2*l.SlotSize + l.DataSize + MiB; st.Size() != want {
		t.Errorf("image size %d, want %d", st.Size(), want)
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > 16*MiB {
		t.Errorf("the image takes %d bytes on disk; its data is under 16 MiB (holes were written)", used)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dataStart := MiB + BootSize + 2*l.SlotSize
	first := make([]byte, MiB)
	if _, err := f.ReadAt(first, dataStart); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, make([]byte, MiB)) {
		t.Error("the data partition's first MiB is not zeros")
	}
	spans, err := bmap.Map(f, bmap.BlockSize)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(spans, func(s bmap.Span) bool { return s.Off <= dataStart && s.End() >= dataStart+MiB }) {
		t.Errorf("block map %v leaves out the data partition's first MiB at %d", spans, dataStart)
	}
	if mapped := bmap.Total(spans); mapped > 16*MiB {
		t.Errorf("block map covers %d bytes of %d", mapped, st.Size())
	}
}
