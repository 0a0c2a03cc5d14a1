package blockdev

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// mbrSector returns a DOS partition table with signature sig and the
// given partition types.
func mbrSector(sig uint32, types ...byte) []byte {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint32(b[440:], sig)
	for i, ty := range types {
		e := b[446+16*i:]
		e[4] = ty
		binary.LittleEndian.PutUint32(e[8:], uint32(2048*(i+1)))
		binary.LittleEndian.PutUint32(e[12:], 2048)
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

func TestMBRSignature(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		sig  uint32
		ok   bool
	}{
		{"ballast rpi", mbrSector(0x1234abcd, 0x0c, 0x83, 0x83, 0x83), 0x1234abcd, true},
		{"gpt protective", mbrSector(0x1234abcd, 0xee), 0, false},
		{"no marker", make([]byte, 512), 0, false},
		{"short", []byte{1, 2, 3}, 0, false},
	} {
		sig, ok := MBRSignature(bytes.NewReader(tc.data))
		if sig != tc.sig || ok != tc.ok {
			t.Errorf("%s: got %08x %v, want %08x %v", tc.name, sig, ok, tc.sig, tc.ok)
		}
	}
}

func TestParseDiskSignature(t *testing.T) {
	for in, want := range map[string]uint32{"1234abcd": 0x1234abcd, "0x0000BEEF": 0xbeef} {
		got, err := ParseDiskSignature(in)
		if err != nil || got != want {
			t.Errorf("%q: got %08x, %v; want %08x", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "123", "00000000", "zzzzzzzz", "1234abcd0"} {
		if _, err := ParseDiskSignature(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestDiskBySignatureAndPartition(t *testing.T) {
	root := t.TempDir()
	class := filepath.Join(root, "class/block")
	dev := filepath.Join(root, "dev")
	os.MkdirAll(class, 0o755)
	os.MkdirAll(dev, 0o755)
	add := func(rel, size, part string) {
		dir := filepath.Join(root, "devices", rel)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "uevent"), []byte("DEVNAME="+filepath.Base(rel)+"\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "size"), []byte(size), 0o644)
		if part != "" {
			os.WriteFile(filepath.Join(dir, "partition"), []byte(part), 0o644)
		}
		os.Symlink(dir, filepath.Join(class, filepath.Base(rel)))
	}
	// Two SD-card-like disks: another MBR disk and the ballast one.
	add("mmcblk0", "4096", "")
	add("sda", "4096", "")
	for i := 1; i <= 4; i++ {
		add("mmcblk0/mmcblk0p"+string(rune('0'+i)), "2048", string(rune('0'+i)))
	}
	os.WriteFile(filepath.Join(dev, "sda"), mbrSector(0x11111111, 0x83), 0o644)
	os.WriteFile(filepath.Join(dev, "mmcblk0"), mbrSector(0xcafe0001, 0x0c, 0x83, 0x83, 0x83), 0o644)

	devs, err := Scan(class)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := DiskBySignature(devs, dev, 0xcafe0001)
	if !ok || d.Name != "mmcblk0" {
		t.Fatalf("DiskBySignature = %+v, %v; want mmcblk0", d, ok)
	}
	if _, ok := DiskBySignature(devs, dev, 0x22222222); ok {
		t.Fatal("found a disk for a signature no disk has")
	}
	p, ok := Partition(devs, d.Name, 3)
	if !ok || p.Name != "mmcblk0p3" || p.Disk != "mmcblk0" {
		t.Fatalf("Partition(mmcblk0, 3) = %+v, %v", p, ok)
	}
}

func FuzzMBRSignature(f *testing.F) {
	f.Add(mbrSector(0x1234abcd, 0x0c, 0x83))
	f.Add(mbrSector(1, 0xee))
	f.Fuzz(func(t *testing.T, b []byte) {
		sig, ok := MBRSignature(bytes.NewReader(b))
		if !ok && sig != 0 {
			t.Fatalf("signature %08x without ok", sig)
		}
	})
}

func FuzzParseDiskSignature(f *testing.F) {
	f.Add("1234abcd")
	f.Add("0x00000001")
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseDiskSignature(s); err == nil && n == 0 {
			t.Fatal("zero signature accepted")
		}
	})
}
