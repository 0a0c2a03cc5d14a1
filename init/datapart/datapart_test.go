package datapart

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type fakeMounter struct{ calls []string }

func (m *fakeMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	m.calls = append(m.calls, fmt.Sprintf("%s %s %s", source, target, fstype))
	return nil
}
func (m *fakeMounter) Unmount(string, int) error { return nil }

// testbed is a disk image at dev/vda whose 4th GPT partition is also
// exposed, as a separate file, at dev/vda4, with the matching sysfs.
type testbed struct {
	root, sys, dev string
	mnt            *fakeMounter
	ran            []string
	resized        []string
	p              *Preparer
}

func newTestbed(t *testing.T, diskSize int64, withData bool) *testbed {
	tb := &testbed{root: t.TempDir(), mnt: &fakeMounter{}}
	tb.sys = filepath.Join(tb.root, "sys/class/block")
	tb.dev = filepath.Join(tb.root, "dev")
	os.MkdirAll(tb.sys, 0o755)
	os.MkdirAll(tb.dev, 0o755)
	img := makeImage(t, 32*mib)
	img.Truncate(diskSize)
	os.Rename(img.Name(), filepath.Join(tb.dev, "vda"))
	addDev := func(rel, uevent, size, part, start string) {
		dir := filepath.Join(tb.root, "sys/devices", rel)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "uevent"), []byte(uevent), 0o644)
		os.WriteFile(filepath.Join(dir, "size"), []byte(size), 0o644)
		if part != "" {
			os.WriteFile(filepath.Join(dir, "partition"), []byte(part), 0o644)
			os.WriteFile(filepath.Join(dir, "start"), []byte(start), 0o644)
		}
		os.Symlink(dir, filepath.Join(tb.sys, filepath.Base(rel)))
	}
	addDev("vda", "DEVNAME=vda\n", fmt.Sprint(diskSize/512), "", "")
	addDev("vda/vda2", "DEVNAME=vda2\nPARTNAME=BALLAST_A\n", "16384", "2", "18432")
	if withData {
		addDev("vda/vda4", "DEVNAME=vda4\nPARTNAME=BALLAST_DATA\n", "8192", "4", "51200")
		f, _ := os.Create(filepath.Join(tb.dev, "vda4"))
		f.Truncate(4 * mib)
		f.Close()
	}
	tb.p = &Preparer{
		SysClassBlock: tb.sys, DevDir: tb.dev, Root: filepath.Join(tb.root, "root"),
		Mounter: tb.mnt,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Run: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			tb.ran = append(tb.ran, name+" "+strings.Join(args, " "))
			if name == "mkfs.ext4" {
				return exec.CommandContext(ctx, name, args...).CombinedOutput()
			}
			return nil, nil
		},
		ResizePartition: func(disk *os.File, num int, start, length int64) error {
			tb.resized = append(tb.resized, fmt.Sprintf("%d %d %d", num, start, length))
			// What the kernel would do: the partition node grows.
			return os.Truncate(filepath.Join(tb.dev, "vda4"), length)
		},
	}
	return tb
}

func TestPrepareFirstBootGrowsFormatsMountsAndBinds(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Fatalf("mkfs.ext4 missing (apt-get install e2fsprogs): %v", err)
	}
	tb := newTestbed(t, 100*mib, true)
	res, err := tb.p.Prepare(context.Background(), "vda", false)
	if err != nil {
		t.Fatal(err)
	}
	if !res.FirstBoot || !res.Grew || res.TmpFS || res.Device != filepath.Join(tb.dev, "vda4") {
		t.Fatalf("res = %+v", res)
	}
	// 100 MiB disk, data from 25 MiB to the last MiB boundary before the backup GPT.
	if want := fmt.Sprintf("4 %d %d", 25*mib, 74*mib); len(tb.resized) != 1 || tb.resized[0] != want {
		t.Fatalf("resized = %q, want %q", tb.resized, want)
	}
	if len(tb.ran) != 1 || !strings.HasPrefix(tb.ran[0], "mkfs.ext4 -q -F -E nodiscard -L BALLAST_DATA ") {
		t.Fatalf("ran = %q", tb.ran)
	}
	mounts := strings.Join(tb.mnt.calls, "\n")
	for _, w := range []string{
		filepath.Join(tb.dev, "vda4") + " " + filepath.Join(tb.p.Root, "persist") + " ext4",
		filepath.Join(tb.p.Root, "persist/var-lib-rancher") + " " + filepath.Join(tb.p.Root, "var/lib/rancher"),
		filepath.Join(tb.p.Root, "persist/root") + " " + filepath.Join(tb.p.Root, "root"),
	} {
		if !strings.Contains(mounts, w) {
			t.Errorf("mounts lack %q:\n%s", w, mounts)
		}
	}
	if fi, err := os.Stat(filepath.Join(tb.p.Root, "persist/var-lib-ballast")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("var-lib-ballast: %v %v", fi, err)
	}
	sfdiskVerify(t, filepath.Join(tb.dev, "vda"))

	// Second boot: nothing to grow or format; the ext4 fills its
	// partition; e2fsck -p checks it before the mount.
	tb.ran, tb.resized, tb.mnt.calls = nil, nil, nil
	res, err = tb.p.Prepare(context.Background(), "vda", false)
	if err != nil {
		t.Fatal(err)
	}
	if res.FirstBoot || res.Grew || len(tb.resized) != 0 || len(tb.ran) != 1 || tb.ran[0] != "e2fsck -p "+filepath.Join(tb.dev, "vda4") {
		t.Fatalf("second boot: res=%+v resized=%q ran=%q", res, tb.resized, tb.ran)
	}
}

func TestPrepareGrowsFileSystemLeftSmall(t *testing.T) {
	tb := newTestbed(t, 32*mib, true)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", filepath.Join(tb.dev, "vda4")).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	// The partition grew in an earlier boot that crashed before resize2fs.
	os.Truncate(filepath.Join(tb.dev, "vda4"), 16*mib)
	res, err := tb.p.Prepare(context.Background(), "vda", false)
	if err != nil || res.FirstBoot {
		t.Fatalf("res = %+v, %v", res, err)
	}
	if len(tb.ran) != 2 || tb.ran[0] != "e2fsck -p "+filepath.Join(tb.dev, "vda4") || tb.ran[1] != "resize2fs "+filepath.Join(tb.dev, "vda4") {
		t.Fatalf("ran = %q", tb.ran)
	}
}

// A data partition that is neither the builder's zeroed placeholder nor a
// readable ext4 (a flaky card, a torn write) is never formatted: e2fsck
// repairs it from a backup superblock when it can, and otherwise the node
// runs on tmpfs and says why.
func TestPrepareNeverFormatsData(t *testing.T) {
	if _, err := exec.LookPath("e2fsck"); err != nil {
		t.Fatalf("e2fsck missing (apt-get install e2fsprogs): %v", err)
	}
	dev := func(tb *testbed) string { return filepath.Join(tb.dev, "vda4") }
	realRun := func(tb *testbed) {
		tb.p.Run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
			tb.ran = append(tb.ran, name+" "+strings.Join(args, " "))
			return exec.CommandContext(ctx, name, args...).CombinedOutput()
		}
	}

	// The primary superblock is gone; a backup is not (1 KiB blocks: a
	// 16 MiB file system has its first backup at block 8193).
	tb := newTestbed(t, 64*mib, true)
	realRun(tb)
	os.Truncate(dev(tb), 16*mib)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "1024", "-L", Label, dev(tb)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	f, _ := os.OpenFile(dev(tb), os.O_WRONLY, 0)
	f.WriteAt(make([]byte, 1024), 1024)
	f.Close()
	res, err := tb.p.Prepare(context.Background(), "vda", false)
	if err != nil || res.TmpFS || res.FirstBoot {
		t.Fatalf("torn superblock: res = %+v, %v (ran %q)", res, err, tb.ran)
	}
	for _, r := range tb.ran {
		if strings.HasPrefix(r, "mkfs") {
			t.Errorf("formatted: %q", tb.ran)
		}
	}
	if len(tb.ran) < 2 || !strings.HasPrefix(tb.ran[0], "e2fsck -y -b 32768 -B 4096 ") || !strings.HasPrefix(tb.ran[1], "e2fsck -y -b 8193 -B 1024 ") {
		t.Errorf("ran = %q; want e2fsck from the backup superblocks", tb.ran)
	}

	// A first boot's mkfs cut short by a power cut (the start written,
	// no superblock yet, the marker at the end): formatted again.
	tb = newTestbed(t, 64*mib, true)
	tb.p.Run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		// The cut: the real mkfs has done all it does (zeroed the start
		// and the last blocks, written its tables) but the superblock.
		if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", name, err, out)
		}
		f, _ := os.OpenFile(dev(tb), os.O_WRONLY, 0)
		f.WriteAt(make([]byte, 1024), 1024)
		f.WriteAt([]byte("half-written inode tables"), 8192)
		f.Close()
		return nil, errors.New("power cut")
	}
	if _, err := tb.p.Prepare(context.Background(), "vda", false); err == nil {
		t.Fatal("the cut format succeeded")
	}
	realRun(tb)
	res, err = tb.p.Prepare(context.Background(), "vda", false)
	if err != nil || res.TmpFS || !res.FirstBoot {
		t.Fatalf("torn first format: res = %+v, %v (ran %q)", res, err, tb.ran)
	}
	if formatting(dev(tb)) {
		t.Error("the formatting marker is still there after mkfs")
	}

	// Nothing an e2fsck can use: left alone, tmpfs, an error that says so.
	tb = newTestbed(t, 32*mib, true)
	realRun(tb)
	garbage := []byte(strings.Repeat("not a file system ", 1<<16))
	os.WriteFile(dev(tb), garbage, 0o644)
	res, err = tb.p.Prepare(context.Background(), "vda", false)
	if err == nil || !strings.Contains(err.Error(), "NOT formatting it") || !res.TmpFS {
		t.Fatalf("garbage: res = %+v, err = %v", res, err)
	}
	if got, _ := os.ReadFile(dev(tb)); string(got[:len(garbage)]) != string(garbage) {
		t.Error("the partition's contents changed")
	}
	for _, r := range tb.ran {
		if strings.HasPrefix(r, "mkfs") {
			t.Errorf("formatted: %q", tb.ran)
		}
	}
}

func TestPrepareWithoutDataPartition(t *testing.T) {
	tb := newTestbed(t, 32*mib, false)
	res, err := tb.p.Prepare(context.Background(), "", true)
	if err != nil || !res.TmpFS || !res.FirstBoot {
		t.Fatalf("live: res = %+v, %v", res, err)
	}
	if !strings.HasPrefix(tb.mnt.calls[0], "tmpfs "+filepath.Join(tb.p.Root, "persist")+" tmpfs") || len(tb.mnt.calls) != 1+len(PersistentDirs) {
		t.Fatalf("mounts = %q", tb.mnt.calls)
	}
	res, err = tb.p.Prepare(context.Background(), "vda", false)
	if err == nil || !strings.Contains(err.Error(), "vda2 [BALLAST_A]") || !res.TmpFS {
		t.Fatalf("disk boot without data partition: res = %+v, err = %v", res, err)
	}
}
