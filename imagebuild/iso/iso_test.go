package iso

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"github.com/ballast-os/ballast/imagebuild/disk"
	"github.com/ballast-os/ballast/imagebuild/filetree"
)

var testTime = time.Date(2024, 5, 6, 7, 8, 10, 0, time.UTC)

func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required for this test: apt-get install xorriso genisoimage mtools fdisk grub-common grub-pc-bin", tool)
		}
	}
}

func testLayout(t *testing.T, dir string) Layout {
	t.Helper()
	tr := filetree.New(testTime)
	for p, b := range map[string][]byte{
		disk.KernelPath:    randBytes(1, 200_000),
		disk.InitrdPath:    randBytes(2, 100_001),
		disk.BuildJSONPath: []byte(`{"kernel":"6.12.0-test"}`),
		disk.UserDataPath:  []byte("#cloud-config\nhostname: live\n"),
	} {
		if err := tr.AddFile(p, 0o644, b); err != nil {
			t.Fatal(err)
		}
	}
	sys := filepath.Join(dir, "system.squashfs")
	if err := os.WriteFile(sys, randBytes(3, 1<<20+5), 0o644); err != nil {
		t.Fatal(err)
	}
	return Layout{
		Files:          tr,
		System:         sys,
		Arch:           "amd64",
		Cmdline:        "console=ttyS0,115200 panic=10",
		SystemdBootEFI: []byte("MZ fake systemd-boot"),
		GrubModulesDir: disk.HostGrubModules,
		ModTime:        testTime,
		Seed:           "seed",
	}
}

func writeTest(t *testing.T) (string, Layout) {
	t.Helper()
	need(t, "grub-mkimage")
	dir := t.TempDir()
	l := testLayout(t, dir)
	p := filepath.Join(dir, "live.iso")
	if err := Write(context.Background(), p, l); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("temporary files left in %s: %v", dir, ents)
	}
	return p, l
}

func TestWriteFiles(t *testing.T) {
	p, l := writeTest(t)
	b, err := file.OpenFromPath(p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fs, err := iso9660.Read(b, 0, 0, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimRight(fs.Label(), " ") != VolumeID {
		t.Errorf("volume ID %q, want %q", fs.Label(), VolumeID)
	}
	sys, _ := os.ReadFile(l.System)
	want := map[string][]byte{"/" + SystemPath: sys}
	for _, e := range l.Files.Entries() {
		if e.Kind == filetree.File {
			r, _ := e.Data.Open()
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(r)
			r.Close()
			want["/"+e.Path] = buf.Bytes()
		}
	}
	for name, w := range want {
		got, err := fs.ReadFile(strings.TrimPrefix(name, "/"))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, w) {
			t.Errorf("%s: contents differ", name)
		}
	}
	cfg, err := fs.ReadFile(GrubCfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "linux /ballast/vmlinuz console=ttyS0,115200 panic=10 ballast.live=1") {
		t.Errorf("grub.cfg:\n%s", cfg)
	}
}

func TestXorrisoReadsBootRecords(t *testing.T) {
	need(t, "xorriso", "isoinfo", "sfdisk", "mcopy")
	p, l := writeTest(t)
	out, err := exec.Command("isoinfo", "-d", "-i", p).CombinedOutput()
	if err != nil {
		t.Fatalf("isoinfo: %v\n%s", err, out)
	}
	for _, w := range []string{"Volume id: BALLAST_LIVE", "Rock Ridge signatures version 1 found", "El Torito VD version 1 found"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("isoinfo -d lacks %q:\n%s", w, out)
		}
	}
	out, err = exec.Command("xorriso", "-indev", p, "-report_el_torito", "plain", "-report_system_area", "plain").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	s := string(out)
	for _, w := range []string{"El Torito boot img :   1  BIOS  y   none", "El Torito boot img :   2  UEFI  y   none",
		"El Torito img path :   1  /boot/grub/eltorito.img", "El Torito img opts :   1  grub2-boot-info",
		"El Torito img path :   2  /boot/efi.img", "System area summary: MBR grub2-mbr",
		"MBR partition      :   1   0x80  0x00            0", "MBR partition      :   2   0x00  0xef",
		"MBR partition path :   2  /boot/efi.img"} {
		if !strings.Contains(s, w) {
			t.Errorf("xorriso report lacks %q:\n%s", w, s)
		}
	}
	out, err = exec.Command("sfdisk", "--dump", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "type=ef") {
		t.Errorf("sfdisk --dump: %v\n%s", err, out)
	}

	// The 0xEF partition is efi.img: mtools reads systemd-boot's menu.
	f, _ := os.Open(p)
	defer f.Close()
	mbr := make([]byte, 512)
	_, _ = f.ReadAt(mbr, 0)
	start := binary.LittleEndian.Uint32(mbr[462+8:])
	out, err = exec.Command("mcopy", "-i", p+"@@"+strconv.FormatInt(int64(start)*512, 10), "::/loader/entries/ballast-a.conf", "-").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "options console=ttyS0,115200 panic=10 ballast.live=1") {
		t.Errorf("mcopy loader entry from the 0xEF partition: %v\n%s", err, out)
	}
	out, err = exec.Command("mcopy", "-i", p+"@@"+strconv.FormatInt(int64(start)*512, 10), "::/EFI/BOOT/BOOTX64.EFI", "-").CombinedOutput()
	if err != nil || !bytes.Equal(out, l.SystemdBootEFI) {
		t.Errorf("mcopy BOOTX64.EFI: %v", err)
	}
}

func TestHybridPatches(t *testing.T) {
	p, _ := writeTest(t)
	// Padded like xorriso: a file in the last block must not end the medium.
	if st, _ := os.Stat(p); st.Size()%2048 != 0 || st.Size() < 300<<10 {
		t.Errorf("ISO size %d: not padded to whole blocks", st.Size())
	}
	f, _ := os.Open(p)
	defer f.Close()
	entries, err := ReadCatalog(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Platform != 0 || entries[1].Platform != 0xef {
		t.Fatalf("catalog entries %+v", entries)
	}
	mbr := make([]byte, 512)
	_, _ = f.ReadAt(mbr, 0)
	bios := int64(entries[0].LBA)
	if got := binary.LittleEndian.Uint64(mbr[0x1b0:]); got != uint64(bios*4+4) {
		t.Errorf("MBR kernel sector %d, want %d", got, bios*4+4)
	}
	db := make([]byte, 512)
	_, _ = f.ReadAt(db, bios*2048+2048)
	if got := binary.LittleEndian.Uint64(db[500:]); got != uint64(bios*4+5) {
		t.Errorf("diskboot start %d, want %d", got, bios*4+5)
	}
	hybrid, _ := os.ReadFile(filepath.Join(disk.HostGrubModules, "boot_hybrid.img"))
	if !bytes.Equal(mbr[0x68:0x1b0], hybrid[0x68:0x1b0]) {
		t.Error("MBR code is not boot_hybrid.img")
	}
}

func TestWriteDeterministic(t *testing.T) {
	need(t, "grub-mkimage")
	dir := t.TempDir()
	l := testLayout(t, dir)
	var sums [2][32]byte
	for i := range sums {
		p := filepath.Join(dir, "x.iso")
		if err := Write(context.Background(), p, l); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		sums[i] = sha256.Sum256(b)
		// A later build must not depend on the clock.
		time.Sleep(1100 * time.Millisecond)
	}
	if sums[0] != sums[1] {
		t.Errorf("two writes differ")
	}
}
