package blockdev

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// fakeSys builds a /sys/class/block look-alike: real directories under
// devices/, symlinks in class/block, as the kernel lays them out.
func fakeSys(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	class := filepath.Join(root, "class/block")
	os.MkdirAll(class, 0o755)
	add := func(rel, uevent string, size, part, start string) {
		dir := filepath.Join(root, "devices", rel)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "uevent"), []byte(uevent), 0o644)
		os.WriteFile(filepath.Join(dir, "size"), []byte(size+"\n"), 0o644)
		if part != "" {
			os.WriteFile(filepath.Join(dir, "partition"), []byte(part+"\n"), 0o644)
			os.WriteFile(filepath.Join(dir, "start"), []byte(start+"\n"), 0o644)
		}
		os.Symlink(dir, filepath.Join(class, filepath.Base(rel)))
	}
	add("vda", "MAJOR=253\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n", "20971520", "", "")
	add("vda/vda2", "MAJOR=253\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=BALLAST_A\n", "1048576", "2", "264192")
	add("vda/vda4", "MAJOR=253\nMINOR=4\nDEVNAME=vda4\nPARTNAME=BALLAST_DATA\n", "131072", "4", "2361344")
	add("sr0", "MAJOR=11\nMINOR=0\nDEVNAME=sr0\n", "0", "", "")
	return class
}

func TestScan(t *testing.T) {
	devs, err := Scan(fakeSys(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 4 {
		t.Fatalf("devs = %+v", devs)
	}
	a := ByPartName(devs, "BALLAST_A")
	if len(a) != 1 || a[0].Disk != "vda" || a[0].PartNum != 2 || a[0].Start != 264192 || a[0].Major != 253 || a[0].Minor != 2 {
		t.Fatalf("BALLAST_A = %+v", a)
	}
	if d := devs[0]; d.Name != "sr0" || d.IsPartition() {
		t.Fatalf("sr0 = %+v", d)
	}
	desc := Describe(devs)
	for _, w := range []string{"vda2 [BALLAST_A]", "vda (10.0 GiB)", "vda4 [BALLAST_DATA]"} {
		if !strings.Contains(desc, w) {
			t.Errorf("Describe = %q lacks %q", desc, w)
		}
	}
}

func TestWait(t *testing.T) {
	n := 0
	d, err := Wait(context.Background(), time.Second, time.Millisecond, func() (Device, bool, error) {
		n++
		return Device{Name: "vda2"}, n == 3, nil
	})
	if err != nil || d.Name != "vda2" || n != 3 {
		t.Fatalf("Wait = %+v, %v after %d", d, err, n)
	}
	_, err = Wait(context.Background(), 20*time.Millisecond, time.Millisecond, func() (Device, bool, error) { return Device{}, false, nil })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
}

func TestISOVolumeID(t *testing.T) {
	img := make([]byte, 40000)
	pvd := img[32768:]
	pvd[0] = 1
	copy(pvd[1:], "CD001")
	copy(pvd[40:72], "BALLAST_LIVE                    ")
	id, ok := ISOVolumeID(bytes.NewReader(img))
	if !ok || id != "BALLAST_LIVE" {
		t.Fatalf("id = %q %v", id, ok)
	}
	if _, ok := ISOVolumeID(bytes.NewReader(make([]byte, 100))); ok {
		t.Fatal("short device taken for ISO")
	}
}

func TestHasExt4(t *testing.T) {
	img := make([]byte, 4096)
	if ok, err := HasExt4(bytes.NewReader(img)); ok || err != nil {
		t.Fatalf("zeroes: %v %v", ok, err)
	}
	img[1024+56], img[1024+57] = 0x53, 0xEF
	if ok, err := HasExt4(bytes.NewReader(img)); !ok || err != nil {
		t.Fatalf("magic: %v %v", ok, err)
	}
}

// The disk GUID read from the GPT header is the one go-diskfs (the image
// builder) wrote, and survives a torn primary header's CRC.
func TestGPTDiskGUID(t *testing.T) {
	const guid = "2b4cac32-fb74-5b91-9611-bb8d3dfc2afc"
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 8 << 20
	f.Truncate(size)
	tab := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: guid,
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: 4095, Type: gpt.LinuxFilesystem, Name: "BALLAST_A"}}}
	if err := tab.Write(f, size); err != nil {
		t.Fatal(err)
	}
	got, ok := GPTDiskGUID(f)
	if !ok || got != guid {
		t.Fatalf("GPTDiskGUID = %q %v, want %s", got, ok, guid)
	}
	if _, err := ParseDiskGUID(strings.ToUpper(guid)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"1234abcd", "2b4cac32fb745b919611bb8d3dfc2afc", "zb4cac32-fb74-5b91-9611-bb8d3dfc2afc"} {
		if _, err := ParseDiskGUID(bad); err == nil {
			t.Errorf("ParseDiskGUID(%q) accepted", bad)
		}
	}
	// An MBR disk has no GPT GUID.
	z := make([]byte, 4096)
	if _, ok := GPTDiskGUID(bytes.NewReader(z)); ok {
		t.Error("a GUID from zeros")
	}
}
