package datapart

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/imagebuild/disk"
)

// makeMBRImage writes the Raspberry Pi table exactly as the image builder
// plans it (disk.PlanMBR, 8 MiB slots, 4 MiB data) to a sparse file.
func makeMBRImage(t *testing.T, path string) int64 {
	t.Helper()
	parts, size, err := disk.PlanMBR(disk.MBRLayout{SlotSize: 8 * mib, DataSize: 4 * mib}, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(disk.MBRBytes(0xcafe0001, parts), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return size
}

func mbrEntry(t *testing.T, path string, num int) (start, length uint32) {
	t.Helper()
	b := make([]byte, 512)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	e := b[446+16*(num-1):]
	return binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])
}

func TestGrowMBRAfterImageWasFlashedToBiggerCard(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sd.img")
	size := makeMBRImage(t, p)
	start, oldLen := mbrEntry(t, p, 4)
	// "Flash" to a card of 1000 MiB + 3 sectors: the end aligns down.
	card := int64(1000*mib + 3*512)
	if err := os.Truncate(p, card); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := GrowMBR(f, card, 512, 4)
	if err != nil {
		t.Fatal(err)
	}
	wantEnd := uint64(1000*mib/512 - 1)
	if !res.Grew || res.Start != uint64(start) || res.OldEnd != uint64(start)+uint64(oldLen)-1 || res.NewEnd != wantEnd {
		t.Fatalf("res = %+v; want start %d, new end %d (image was %d bytes)", res, start, wantEnd, size)
	}
	if s, l := mbrEntry(t, p, 4); s != start || uint64(s)+uint64(l)-1 != wantEnd {
		t.Fatalf("entry 4 after grow: start %d length %d", s, l)
	}
	for i := 1; i <= 3; i++ {
		s, l := mbrEntry(t, p, i)
		if s == 0 || l == 0 {
			t.Fatalf("entry %d cleared", i)
		}
	}
	sf, err := exec.LookPath("sfdisk")
	if err != nil {
		t.Fatalf("sfdisk not installed (apt-get install fdisk): %v", err)
	}
	out, err := exec.Command(sf, "--dump", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "label-id: 0xcafe0001") ||
		!regexp.MustCompile(fmt.Sprintf(`img4 : start= *%d, size= *%d, type=83`, start, wantEnd-uint64(start)+1)).Match(out) {
		t.Fatalf("sfdisk --dump: %v\n%s", err, out)
	}
	// A second run is a no-op.
	if res, err := GrowMBR(f, card, 512, 4); err != nil || res.Grew {
		t.Fatalf("second grow: %+v, %v", res, err)
	}
}

func TestGrowMBRRefuses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sd.img")
	size := makeMBRImage(t, p)
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer f.Close()
	if _, err := GrowMBR(f, size*2, 512, 2); err == nil || !strings.Contains(err.Error(), "not the last") {
		t.Errorf("slot A: err = %v", err)
	}
	if _, err := GrowMBR(f, size*2, 512, 5); err == nil {
		t.Error("partition 5 accepted")
	}
	g := makeImage(t, 32*mib) // a GPT disk
	if _, err := GrowMBR(g, 64*mib, 512, 4); err != ErrNotMBR {
		t.Errorf("GPT disk: err = %v, want ErrNotMBR", err)
	}
}

// TestPrepareMBRCard is the first boot of a Raspberry Pi card: no
// partition names, the data partition is number 4 of the root's disk.
func TestPrepareMBRCard(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Fatalf("mkfs.ext4 missing (apt-get install e2fsprogs): %v", err)
	}
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys/class/block"), filepath.Join(root, "dev")
	os.MkdirAll(sys, 0o755)
	os.MkdirAll(dev, 0o755)
	makeMBRImage(t, filepath.Join(dev, "mmcblk0"))
	const card = 512 * mib
	os.Truncate(filepath.Join(dev, "mmcblk0"), card)
	start, length := mbrEntry(t, filepath.Join(dev, "mmcblk0"), 4)
	addDev := func(rel, size, part string) {
		dir := filepath.Join(root, "sys/devices", rel)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "uevent"), []byte("DEVNAME="+filepath.Base(rel)+"\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "size"), []byte(size), 0o644)
		if part != "" {
			os.WriteFile(filepath.Join(dir, "partition"), []byte(part), 0o644)
		}
		os.Symlink(dir, filepath.Join(sys, filepath.Base(rel)))
	}
	addDev("mmcblk0", fmt.Sprint(card/512), "")
	addDev("mmcblk0/mmcblk0p2", "16384", "2")
	addDev("mmcblk0/mmcblk0p4", fmt.Sprint(length), "4")
	os.WriteFile(filepath.Join(dev, "mmcblk0p4"), nil, 0o644)
	os.Truncate(filepath.Join(dev, "mmcblk0p4"), int64(length)*512)

	var resized []string
	mnt := &fakeMounter{}
	p := &Preparer{
		SysClassBlock: sys, DevDir: dev, Root: filepath.Join(root, "root"), Mounter: mnt,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Run: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			return exec.CommandContext(ctx, name, args...).CombinedOutput()
		},
		ResizePartition: func(_ *os.File, num int, s, l int64) error {
			resized = append(resized, fmt.Sprintf("%d %d %d", num, s, l))
			return os.Truncate(filepath.Join(dev, "mmcblk0p4"), l)
		},
	}
	res, err := p.Prepare(context.Background(), "mmcblk0", false)
	if err != nil {
		t.Fatal(err)
	}
	if !res.FirstBoot || !res.Grew || res.Device != filepath.Join(dev, "mmcblk0p4") {
		t.Fatalf("res = %+v", res)
	}
	if want := fmt.Sprintf("4 %d %d", int64(start)*512, card-int64(start)*512); len(resized) != 1 || resized[0] != want {
		t.Fatalf("resized = %q, want %q", resized, want)
	}
	if !strings.Contains(strings.Join(mnt.calls, "\n"), filepath.Join(dev, "mmcblk0p4")+" "+filepath.Join(p.Root, "persist")+" ext4") {
		t.Fatalf("mounts: %q", mnt.calls)
	}
}

// memDisk is an in-memory disk for the fuzz test.
type memDisk []byte

func (m memDisk) ReadAt(b []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(b, m[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (m memDisk) WriteAt(b []byte, off int64) (int, error) { return copy(m[off:], b), nil }

func FuzzGrowMBR(f *testing.F) {
	parts, _, _ := disk.PlanMBR(disk.MBRLayout{SlotSize: 8 * mib, DataSize: 4 * mib}, 0)
	f.Add(disk.MBRBytes(1, parts), int64(1<<30), 4)
	f.Add(make([]byte, 512), int64(1<<20), 1)
	f.Fuzz(func(t *testing.T, sector []byte, size int64, num int) {
		if len(sector) < 512 || size < 0 || size > 1<<45 {
			return
		}
		d := memDisk(append([]byte(nil), sector[:512]...))
		res, err := GrowMBR(d, size, 512, num)
		if err != nil || !res.Grew {
			return
		}
		if res.NewEnd >= uint64(size)/512 || res.NewEnd <= res.OldEnd {
			t.Fatalf("grew to %d on a disk of %d sectors (old end %d)", res.NewEnd, size/512, res.OldEnd)
		}
	})
}
