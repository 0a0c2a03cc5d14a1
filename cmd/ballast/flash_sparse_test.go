package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/ballast-os/ballast/imagebuild/bmap"
)

const mib = 1 << 20

// sparseImage writes a 48 MiB sparse disk image laid out like ballast's:
// a GPT, partition 1 (1..9 MiB) with 2 MiB of data at its start, and
// partitions 2 (9..25 MiB) and 3, the data placeholder (25..47 MiB), left
// as holes.
func sparseImage(t *testing.T) (string, []byte) {
	t.Helper()
	const size = 48 * mib
	p := filepath.Join(t.TempDir(), "ballast-x86_64.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: "0b4a3b7c-0000-4000-8000-000000000000"}
	for i, r := range [][2]uint64{{1, 9}, {9, 25}, {25, 47}} {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1, Start: r[0] * 2048, End: r[1]*2048 - 1, Size: (r[1] - r[0]) * mib,
			Type: gpt.LinuxFilesystem, Name: "P", GUID: "0b4a3b7c-0000-4000-8000-00000000000" + string(rune('1'+i)),
		})
	}
	if err := table.Write(f, size); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 2*mib)
	rand.Read(data)
	if _, err := f.WriteAt(data, mib); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, img
}

// checkSparseFlash checks a 64 MiB garbage device after flashing
// sparseImage: the data and the tables as in the image, the first MiB of
// each empty partition zeroed, the holes behind them left alone.
func checkSparseFlash(t *testing.T, dev string, img []byte) {
	t.Helper()
	got, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	same := func(what string, off, n int) {
		if !bytes.Equal(got[off:off+n], img[off:off+n]) {
			t.Errorf("%s (bytes %d..%d) differs from the image", what, off, off+n)
		}
	}
	garbage := func(what string, off, n int) {
		if !bytes.Equal(got[off:off+n], bytes.Repeat([]byte{0xff}, n)) {
			t.Errorf("%s (bytes %d..%d) was written: a hole must be skipped", what, off, off+n)
		}
	}
	same("MBR, GPT and partition 1's data", 0, 3*mib)
	same("partition 2's first MiB (zeros)", 9*mib, mib)
	same("the data placeholder's first MiB (zeros: the init formats only those)", 25*mib, mib)
	same("the backup GPT", 47*mib, mib)
	garbage("partition 1 after its data", 4*mib, 5*mib)
	garbage("partition 2 after its first MiB", 10*mib, 15*mib)
	garbage("the data placeholder after its first MiB", 26*mib, 21*mib)
	garbage("the device past the image", 48*mib, 16*mib)
}

func TestFlashSkipsHoles(t *testing.T) {
	img, data := sparseImage(t)
	dev := garbageDevice(t, 64*mib)
	stdout, stderr, err := runCLIStdin(t, "", "flash", "--yes", img, dev)
	if err != nil {
		t.Fatalf("flash: %v\n%s", err, stderr)
	}
	checkSparseFlash(t, dev, data)
	// 3 + 1 + 1 + 1 MiB: the tables with partition 1's data, the others'
	// first MiB, the backup GPT.
	if !strings.Contains(stderr, "writing 6.0 MiB of 48 MiB (ranges from the image's holes, no block map") || !strings.Contains(stdout, "read it back") {
		t.Errorf("stdout %q\nstderr %q", stdout, stderr)
	}
}

func TestFlashWithBlockMap(t *testing.T) {
	img, data := sparseImage(t)
	if err := bmap.WriteFor(img); err != nil {
		t.Fatal(err)
	}
	dev := garbageDevice(t, 64*mib)
	_, stderr, err := runCLIStdin(t, "", "flash", "--yes", img, dev)
	if err != nil {
		t.Fatalf("flash: %v\n%s", err, stderr)
	}
	checkSparseFlash(t, dev, data)
	if !strings.Contains(stderr, "ranges from block map "+img+".bmap") {
		t.Errorf("the block map beside the image was not used: %q", stderr)
	}
}

// A block map made elsewhere (bmaptool create maps only the data) still
// gets the partitions' first MiB written as zeros.
func TestFlashForeignBlockMapStillZeroesPartitionStarts(t *testing.T) {
	img, data := sparseImage(t)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	spans, err := bmap.DataSpans(f)
	if err != nil {
		t.Fatal(err)
	}
	b := &bmap.File{ImageSize: 48 * mib, BlockSize: bmap.BlockSize}
	for _, s := range bmap.Merge(spans, bmap.BlockSize, 48*mib) {
		sum, _ := bmap.Checksum(f, s)
		b.Ranges = append(b.Ranges, bmap.Range{First: s.Off / bmap.BlockSize, Last: (s.End() - 1) / bmap.BlockSize, SHA256: sum})
	}
	f.Close()
	mapPath := filepath.Join(t.TempDir(), "other.bmap")
	if err := os.WriteFile(mapPath, b.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := garbageDevice(t, 64*mib)
	if _, stderr, err := runCLIStdin(t, "", "flash", "--yes", "--bmap", mapPath, img, dev); err != nil {
		t.Fatalf("flash: %v\n%s", err, stderr)
	}
	checkSparseFlash(t, dev, data)
}

func TestFlashRefusesStaleBlockMap(t *testing.T) {
	img, _ := sparseImage(t)
	if err := bmap.WriteFor(img); err != nil {
		t.Fatal(err)
	}
	// The image changes after its map was written.
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("changed"), 2*mib)
	f.Close()
	dev := garbageDevice(t, 64*mib)
	if _, _, err := runCLIStdin(t, "", "flash", "--yes", img, dev); err == nil || !strings.Contains(err.Error(), "differ from its block map") {
		t.Errorf("changed image: %v", err)
	}
	// A map of another size is refused before anything is written.
	if err := os.Truncate(img, 64*mib); err != nil {
		t.Fatal(err)
	}
	dev = garbageDevice(t, 64*mib)
	if _, _, err := runCLIStdin(t, "", "flash", "--yes", img, dev); err == nil || !strings.Contains(err.Error(), "is for a 50331648-byte image") {
		t.Errorf("image of another size: %v", err)
	}
	if got, _ := os.ReadFile(dev); got[0] != 0xff {
		t.Error("the device was written although the map did not fit")
	}
}
