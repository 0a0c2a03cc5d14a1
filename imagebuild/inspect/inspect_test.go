package inspect

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/disk"
	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/iso"
)

var testTime = time.Date(2024, 5, 6, 7, 8, 10, 0, time.UTC)

const banner = "6.12.48+deb13-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.12.48-1 (2025-09-20)"

// fakeBzImage has just the setup header fields KernelBanner reads.
func fakeBzImage() []byte {
	b := make([]byte, 40_000)
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x020f)
	binary.LittleEndian.PutUint16(b[0x20e:], 0x3000-0x200)
	copy(b[0x3000:], banner+"\x00")
	return b
}

const buildJSON = `{"board":"x86_64","version":"0.1.0","kernel":"6.12.48+deb13-amd64","lock":{"packages":42,"sha256":"abc"}}`

func boot(t testing.TB) *filetree.Tree {
	tr := filetree.New(testTime)
	for p, b := range map[string][]byte{
		disk.KernelPath:    fakeBzImage(),
		disk.InitrdPath:    []byte("initrd"),
		disk.BuildJSONPath: []byte(buildJSON),
		disk.UserDataPath:  []byte("#cloud-config\nhostname: inspected\n"),
	} {
		if err := tr.AddFile(p, 0o644, b); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func needGrub(t *testing.T) {
	if _, err := exec.LookPath("grub-mkimage"); err != nil {
		t.Fatal("grub-mkimage is required: apt-get install grub-common grub-pc-bin")
	}
}

func TestInspectDisk(t *testing.T) {
	needGrub(t)
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys.squashfs")
	os.WriteFile(sys, []byte("hsqs fake"), 0o644)
	img := filepath.Join(dir, "d.img")
	err := disk.Write(context.Background(), img, disk.Layout{
		Boot: boot(t), SystemA: sys, SlotSize: 4 << 20, DataSize: 1 << 20, Arch: "amd64",
		Cmdline: "console=ttyS0,115200 panic=10", SystemdBootEFI: []byte("MZ"),
		GrubModulesDir: disk.HostGrubModules, ModTime: testTime, Seed: "s",
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if r.Format != "disk" || r.Scheme != "gpt" || len(r.Partitions) != 4 {
		t.Fatalf("report %+v", r)
	}
	wantParts := []Partition{
		{1, disk.BootName, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System", 1 << 20, disk.BootSize},
		{2, disk.SlotAName, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem", 129 << 20, 4 << 20},
		{3, disk.SlotBName, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem", 133 << 20, 4 << 20},
		{4, disk.DataName, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem", 137 << 20, 1 << 20},
	}
	for i, w := range wantParts {
		if r.Partitions[i] != w {
			t.Errorf("partition %d: %+v, want %+v", i+1, r.Partitions[i], w)
		}
	}
	if r.DiskGUID == "" {
		t.Fatal("no GPT disk GUID in the report")
	}
	check(t, r, "console=ttyS0,115200 panic=10 gpt ballast.disk="+r.DiskGUID+" ballast.slot=A")
	if r.BootLabel != disk.BootLabel {
		t.Errorf("boot label %q", r.BootLabel)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"kernel:   6.12.48+deb13-amd64", "BALLAST_DATA", "/EFI/BOOT/BOOTX64.EFI", "hostname: inspected", `"packages": 42`} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("text lacks %q:\n%s", w, text.String())
		}
	}
}

func check(t *testing.T, r *Report, cmdline string) {
	t.Helper()
	if r.KernelVersion != "6.12.48+deb13-amd64" || r.KernelBanner != banner {
		t.Errorf("kernel %q banner %q", r.KernelVersion, r.KernelBanner)
	}
	if r.Cmdline != cmdline || r.GrubCmdline != cmdline {
		t.Errorf("cmdline %q grub %q, want %q", r.Cmdline, r.GrubCmdline, cmdline)
	}
	if r.UserData != "#cloud-config\nhostname: inspected\n" {
		t.Errorf("user-data %q", r.UserData)
	}
	if string(r.Build) != buildJSON {
		t.Errorf("build %s", r.Build)
	}
	found := map[string]int64{}
	for _, f := range r.BootFiles {
		found[f.Path] = f.Size
	}
	if found[disk.KernelPath] != int64(len(fakeBzImage())) || found["EFI/BOOT/BOOTX64.EFI"] != 2 {
		t.Errorf("boot files %v", r.BootFiles)
	}
}

func TestInspectISO(t *testing.T) {
	needGrub(t)
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys.squashfs")
	os.WriteFile(sys, []byte("hsqs fake"), 0o644)
	p := filepath.Join(dir, "x.iso")
	err := iso.Write(context.Background(), p, iso.Layout{
		Files: boot(t), System: sys, Arch: "amd64", Cmdline: "console=ttyS0,115200",
		SystemdBootEFI: []byte("MZ"), GrubModulesDir: disk.HostGrubModules, ModTime: testTime, Seed: "s",
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.Format != "iso" || r.Scheme != "mbr" || len(r.Partitions) != 2 || r.Partitions[1].Type != "0xef" {
		t.Errorf("report %+v", r)
	}
	check(t, r, "console=ttyS0,115200 ballast.live=1")
	var isoFiles []string
	for _, f := range r.ISOFiles {
		isoFiles = append(isoFiles, f.Path)
	}
	got := strings.Join(isoFiles, " ")
	for _, w := range []string{iso.SystemPath, iso.EFIImagePath, "user-data", disk.BuildJSONPath} {
		if !strings.Contains(got, w) {
			t.Errorf("ISO files lack %s: %s", w, got)
		}
	}
}

func TestInspectGarbage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(p, bytes.Repeat([]byte{0xab}, 1<<20), 0o644)
	if _, err := Inspect(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("err = %v, want an error naming %s", err, p)
	}
}

func FuzzKernelBanner(f *testing.F) {
	f.Add(fakeBzImage()[:0x3100])
	f.Add([]byte("HdrS"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := KernelBanner(b)
		if err == nil && (s == "" || strings.ContainsRune(s, 0)) {
			t.Errorf("banner %q without error", s)
		}
	})
}

func FuzzLoaderEntryOptions(f *testing.F) {
	f.Add([]byte("title x\nlinux /a\noptions a=b c\noptions d\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := LoaderEntryOptions(b)
		if strings.Contains(s, "\n") {
			t.Errorf("options %q hold a newline", s)
		}
	})
}

func FuzzGrubLinuxArgs(f *testing.F) {
	f.Add([]byte("menuentry x {\n\tlinux /ballast/vmlinuz a=b\n}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s := GrubLinuxArgs(b); strings.Contains(s, "\n") {
			t.Errorf("args %q hold a newline", s)
		}
	})
}
