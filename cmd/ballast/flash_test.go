package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testImageFile writes an image of n random bytes with a run of zeros in
// the middle (a sparse region, which must still be written).
func testImageFile(t *testing.T, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	clear(data[n/4 : n/2])
	p := filepath.Join(t.TempDir(), "ballast-rpi3.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// garbageDevice is a file "device" full of 0xff, larger than the image.
func garbageDevice(t *testing.T, n int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "device")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xff}, n), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLIStdin(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = Run(context.Background(), Env{Stdin: strings.NewReader(stdin), Stdout: &o, Stderr: &e}, args)
	return o.String(), e.String(), err
}

func TestFlashToFileVerifies(t *testing.T) {
	img, data := testImageFile(t, 9<<20+123)
	dev := garbageDevice(t, 16<<20)
	stdout, stderr, err := runCLIStdin(t, "", "flash", "--yes", img, dev)
	if err != nil {
		t.Fatalf("flash: %v\n%s", err, stderr)
	}
	got, _ := os.ReadFile(dev)
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatal("device content differs from the image (zeros must be written too)")
	}
	if !bytes.Equal(got[len(data):], bytes.Repeat([]byte{0xff}, len(got)-len(data))) {
		t.Fatal("bytes after the image were changed")
	}
	if !strings.Contains(stdout, "read it back") || !strings.Contains(stdout, "SHA-256 of each range checked") {
		t.Errorf("stdout %q does not report the verification", stdout)
	}
	// Not a terminal: quiet progress lines, ending at 100%.
	if !strings.Contains(stderr, "writing: 100%") || strings.Contains(stderr, "\r") || !strings.Contains(stderr, "verifying") {
		t.Errorf("progress on a non-terminal: %q", stderr)
	}
}

func TestFlashAsksFirst(t *testing.T) {
	img, data := testImageFile(t, 1<<20)
	dev := garbageDevice(t, 2<<20)
	_, stderr, err := runCLIStdin(t, "no\n", "flash", img, dev)
	if err == nil || !strings.Contains(err.Error(), "not confirmed") || !strings.Contains(stderr, "Type yes") {
		t.Fatalf("answer no: err %v, stderr %q", err, stderr)
	}
	if got, _ := os.ReadFile(dev); got[0] != 0xff {
		t.Fatal("device written without confirmation")
	}
	if _, _, err := runCLIStdin(t, "", "flash", img, dev); err == nil {
		t.Fatal("empty stdin taken as a yes")
	}
	if _, stderr, err := runCLIStdin(t, "yes\n", "flash", img, dev); err != nil {
		t.Fatalf("answer yes: %v\n%s", err, stderr)
	}
	if got, _ := os.ReadFile(dev); !bytes.Equal(got[:len(data)], data) {
		t.Fatal("not written after yes")
	}
}

func TestFlashRefusesBadArguments(t *testing.T) {
	img, _ := testImageFile(t, 4096)
	if _, _, err := runCLIStdin(t, "", "flash", img); !errors.Is(err, errUsage) {
		t.Errorf("one argument: %v", err)
	}
	if _, _, err := runCLIStdin(t, "", "flash", "--yes", img, img); err == nil || !strings.Contains(err.Error(), "same file") {
		t.Errorf("image onto itself: %v", err)
	}
	if _, _, err := runCLIStdin(t, "", "flash", "--yes", img, "/nonexistent/sdz"); err == nil {
		t.Error("missing device accepted")
	}
}

// fakeDisk is a sysfs /sys/dev/block with disk 8:0 (sda) and its
// partitions 8:1 and 8:2, and a FileInfo for /dev/sda.
func fakeDisk(t *testing.T, holder string) (*flasher, os.FileInfo, string) {
	t.Helper()
	root := t.TempDir()
	sda := filepath.Join(root, "devices/sda")
	for _, p := range []string{"sda1", "sda2"} {
		os.MkdirAll(filepath.Join(sda, p, "holders"), 0o755)
		os.WriteFile(filepath.Join(sda, p, "partition"), []byte("1\n"), 0o644)
		os.WriteFile(filepath.Join(sda, p, "dev"), []byte("8:"+p[3:]+"\n"), 0o644)
	}
	if holder != "" {
		os.MkdirAll(filepath.Join(sda, "sda2/holders", holder), 0o755)
	}
	os.MkdirAll(filepath.Join(sda, "queue"), 0o755) // not a partition
	sysDev := filepath.Join(root, "dev/block")
	os.MkdirAll(sysDev, 0o755)
	os.Symlink(sda, filepath.Join(sysDev, "8:0"))
	os.Symlink(filepath.Join(sda, "sda1"), filepath.Join(sysDev, "8:1"))
	f := &flasher{sysDev: sysDev, mountInfo: filepath.Join(root, "mountinfo"), swaps: filepath.Join(root, "swaps")}
	os.WriteFile(f.swaps, []byte("Filename Type Size Used Priority\n"), 0o644)
	return f, fakeInfo{rdev: unix.Mkdev(8, 0)}, root
}

type fakeInfo struct{ rdev uint64 }

func (fakeInfo) Name() string       { return "sda" }
func (fakeInfo) Size() int64        { return 0 }
func (fakeInfo) Mode() os.FileMode  { return os.ModeDevice }
func (fakeInfo) ModTime() time.Time { return time.Time{} }
func (fakeInfo) IsDir() bool        { return false }
func (i fakeInfo) Sys() any         { return &syscall.Stat_t{Rdev: i.rdev} }

const mountinfoBase = `22 1 0:21 / /proc rw,nosuid - proc proc rw
25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
`

func TestFlashRefusesMountedPartition(t *testing.T) {
	f, st, _ := fakeDisk(t, "")
	os.WriteFile(f.mountInfo, []byte(mountinfoBase+`40 25 8:2 / /media/me/BALLAST\040BOOT rw - vfat /dev/sda2 rw
`), 0o644)
	err := f.checkUnused("/dev/sda", st)
	if !errors.Is(err, ErrDeviceInUse) || !strings.Contains(err.Error(), "sda2 is mounted on /media/me/BALLAST BOOT") {
		t.Fatalf("err = %v", err)
	}
}

// btrfs (and ZFS) report an anonymous 0:NN device in mountinfo: the
// mount's source names the partition.
func TestFlashRefusesBtrfsRoot(t *testing.T) {
	f, st, _ := fakeDisk(t, "")
	os.WriteFile(f.mountInfo, []byte(`22 1 0:21 / /proc rw,nosuid - proc proc rw
25 1 0:45 /@ / rw,relatime - btrfs /dev/sda2 rw,subvol=/@
`), 0o644)
	err := f.checkUnused("/dev/sda", st)
	if !errors.Is(err, ErrDeviceInUse) || !strings.Contains(err.Error(), "the disk this computer runs from") {
		t.Fatalf("err = %v", err)
	}
}

func TestFlashRefusesHostDisk(t *testing.T) {
	f, st, _ := fakeDisk(t, "")
	os.WriteFile(f.mountInfo, []byte(`25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
`), 0o644)
	err := f.checkUnused("/dev/sda", st)
	if !errors.Is(err, ErrDeviceInUse) || !strings.Contains(err.Error(), "the disk this computer runs from") {
		t.Fatalf("err = %v", err)
	}
}

func TestFlashRefusesHeldOrSwapDevice(t *testing.T) {
	f, st, _ := fakeDisk(t, "dm-0")
	os.WriteFile(f.mountInfo, []byte(mountinfoBase), 0o644)
	if err := f.checkUnused("/dev/sda", st); !errors.Is(err, ErrDeviceInUse) || !strings.Contains(err.Error(), "dm-0") {
		t.Fatalf("held by dm-0: err = %v", err)
	}
	f, st, _ = fakeDisk(t, "")
	os.WriteFile(f.mountInfo, []byte(mountinfoBase), 0o644)
	os.WriteFile(f.swaps, []byte("Filename Type Size Used Priority\n/dev/sda1 partition 100 0 -2\n"), 0o644)
	if err := f.checkUnused("/dev/sda", st); !errors.Is(err, ErrDeviceInUse) || !strings.Contains(err.Error(), "swap") {
		t.Fatalf("swap: err = %v", err)
	}
	os.WriteFile(f.swaps, []byte("Filename Type Size Used Priority\n"), 0o644)
	if err := f.checkUnused("/dev/sda", st); err != nil {
		t.Fatalf("an unused disk refused: %v", err)
	}
}

// TestFlashLoopDevice writes to a real block device: a loop device over a
// file, attached with losetup and detached at the end.
func TestFlashLoopDevice(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches a loop device: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("attaching a loop device needs root")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Fatalf("losetup missing (apt-get install mount): %v", err)
	}
	img, data := testImageFile(t, 6<<20)
	backing := garbageDevice(t, 8<<20)
	out, err := exec.Command(losetup, "--find", "--show", backing).Output()
	if err != nil {
		t.Fatalf("losetup --find --show: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", loop, err, out)
		}
	})
	stdout, stderr, err := runCLIStdin(t, "", "flash", "--yes", img, loop)
	if err != nil {
		t.Fatalf("flash to %s: %v\n%s", loop, err, stderr)
	}
	if !strings.Contains(stdout, "read it back") {
		t.Errorf("stdout %q", stdout)
	}
	got, _ := os.ReadFile(backing)
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatal("the loop device's backing file does not hold the image")
	}
	// Too small a device is refused before anything is written.
	big, _ := testImageFile(t, 9<<20)
	if _, _, err := runCLIStdin(t, "", "flash", "--yes", big, loop); err == nil || !strings.Contains(err.Error(), "the image needs") {
		t.Fatalf("image larger than the device: %v", err)
	}
}

func FuzzParseMountInfo(f *testing.F) {
	f.Add([]byte(mountinfoBase))
	f.Add([]byte("1 2 3\n"))
	f.Add([]byte(`40 25 8:2 / /a\040b rw - vfat /dev/sda2 rw` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "mi")
		os.WriteFile(p, b, 0o644)
		ms, err := parseMountInfo(p)
		if err == nil {
			for _, m := range ms {
				if m.dev == "" {
					t.Fatalf("entry without a device: %+v", m)
				}
			}
		}
	})
}
