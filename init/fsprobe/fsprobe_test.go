package fsprobe

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// tool runs a formatting tool; a missing tool fails the test, it does not
// skip it.
func tool(t *testing.T, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not installed (dosfstools, e2fsprogs, genisoimage, squashfs-tools, gdisk): %v", name, err)
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func image(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func TestProbe(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "user-data"), []byte("#cloud-config\n"), 0o644)
	cases := []struct {
		name, fstype, label string
		make                func(t *testing.T) string
	}{
		{"fat32", "vfat", "BALLASTBOOT", func(t *testing.T) string {
			p := image(t, 64<<20)
			tool(t, "mkfs.vfat", "-F", "32", "-n", "BALLASTBOOT", p)
			return p
		}},
		{"fat16", "vfat", "CIDATA", func(t *testing.T) string {
			p := image(t, 16<<20)
			tool(t, "mkfs.vfat", "-F", "16", "-n", "CIDATA", p)
			return p
		}},
		{"fat-nolabel", "vfat", "", func(t *testing.T) string {
			p := image(t, 16<<20)
			tool(t, "mkfs.vfat", p)
			return p
		}},
		{"go-diskfs-fat32", "vfat", "BALLASTBOOT", func(t *testing.T) string {
			// The image builder writes the boot partition with go-diskfs.
			p := image(t, 64<<20)
			b, err := file.OpenFromPath(p, false)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if _, err := fat32.Create(b, 64<<20, 0, 512, "BALLASTBOOT", true); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"iso9660", "iso9660", "cidata", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "seed.iso")
			tool(t, "genisoimage", "-quiet", "-o", p, "-V", "cidata", "-J", "-r", src)
			return p
		}},
		{"ext4", "ext4", "BALLAST_DATA", func(t *testing.T) string {
			p := image(t, 16<<20)
			tool(t, "mkfs.ext4", "-q", "-L", "BALLAST_DATA", p)
			return p
		}},
		{"ext2", "ext2", "old", func(t *testing.T) string {
			p := image(t, 16<<20)
			tool(t, "mkfs.ext4", "-q", "-t", "ext2", "-L", "old", p)
			return p
		}},
		{"squashfs", "squashfs", "", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "sq")
			tool(t, "mksquashfs", src, p, "-quiet", "-no-progress")
			return p
		}},
		{"zeros", "", "", func(t *testing.T) string { return image(t, 1<<20) }},
		{"tiny", "", "", func(t *testing.T) string { return image(t, 100) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fstype, label, err := ProbeFile(c.make(t))
			if err != nil {
				t.Fatal(err)
			}
			if fstype != c.fstype || label != c.label {
				t.Errorf("got %q %q, want %q %q", fstype, label, c.fstype, c.label)
			}
		})
	}
}

func TestReadGPT(t *testing.T) {
	p := image(t, 64<<20)
	tool(t, "sgdisk", "-n", "1:2048:+8M", "-t", "1:ef00", "-c", "1:BALLAST_BOOT",
		"-n", "3:0:+8M", "-c", "3:BALLAST_B", "-n", "2:0:+8M", "-c", "2:Ünïcode name", p)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, err := ReadGPT(f, 512)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{1: "BALLAST_BOOT", 2: "Ünïcode name", 3: "BALLAST_B"}
	if len(parts) != 3 {
		t.Fatalf("parts %+v", parts)
	}
	for _, p := range parts {
		if want[p.Number] != p.Name {
			t.Errorf("partition %d named %q, want %q", p.Number, p.Name, want[p.Number])
		}
	}
	if parts[0].FirstLBA != 2048 || parts[0].LastLBA != 2048+8*2048-1 {
		t.Errorf("partition 1 spans %d..%d", parts[0].FirstLBA, parts[0].LastLBA)
	}
	// A corrupted header is refused.
	raw, _ := os.ReadFile(p)
	raw[512+100] ^= 0xff
	raw[512+40] ^= 0xff
	if _, err := ReadGPT(bytesReaderAt(raw), 512); err == nil {
		t.Error("corrupt header accepted")
	}
	if _, err := ReadGPT(bytesReaderAt(make([]byte, 4096)), 512); err != ErrNoGPT {
		t.Errorf("blank disk: %v", err)
	}
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func FuzzProbe(f *testing.F) {
	f.Add(make([]byte, 512))
	sb := make([]byte, 2048)
	sb[1024+56], sb[1024+57] = 0x53, 0xEF
	f.Add(sb)
	f.Fuzz(func(t *testing.T, b []byte) {
		Probe(bytesReaderAt(b))
	})
}

func FuzzReadGPT(f *testing.F) {
	f.Add(make([]byte, 1024))
	hdr := make([]byte, 2048)
	copy(hdr[512:], "EFI PART")
	f.Add(hdr)
	f.Fuzz(func(t *testing.T, b []byte) {
		ReadGPT(bytesReaderAt(b), 512)
	})
}
