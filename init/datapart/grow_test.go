package datapart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

const mib = 1 << 20

// makeImage writes a ballast-like GPT (boot, A, B, small DATA) to a sparse
// file of size bytes, the way the image builder does.
func makeImage(t *testing.T, size int64) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	s := uint64(512)
	mb := uint64(mib) / s
	tab := &gpt.Table{
		LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{
			{Start: 1 * mb, End: 9*mb - 1, Type: gpt.EFISystemPartition, Name: "BALLAST_BOOT", Index: 1},
			{Start: 9 * mb, End: 17*mb - 1, Type: gpt.LinuxFilesystem, Name: "BALLAST_A", Index: 2},
			{Start: 17 * mb, End: 25*mb - 1, Type: gpt.LinuxFilesystem, Name: "BALLAST_B", Index: 3},
			{Start: 25 * mb, End: 29*mb - 1, Type: gpt.LinuxFilesystem, Name: "BALLAST_DATA", Index: 4},
		},
	}
	if err := tab.Write(f, size); err != nil {
		t.Fatal(err)
	}
	return f
}

func sfdiskVerify(t *testing.T, path string) {
	t.Helper()
	sf, err := exec.LookPath("sfdisk")
	if err != nil {
		t.Fatalf("sfdisk not installed (apt-get install fdisk): %v", err)
	}
	out, err := exec.Command(sf, "--verify", path).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("No errors detected")) || bytes.Contains(out, []byte("backup GPT")) {
		t.Fatalf("sfdisk --verify: %v\n%s", err, out)
	}
}

func TestGrowGPTAfterImageWasFlashedToBiggerDisk(t *testing.T) {
	f := makeImage(t, 32*mib)
	// "Flash" it to a 200 MiB card: the backup GPT is now mid-disk.
	if err := f.Truncate(200 * mib); err != nil {
		t.Fatal(err)
	}
	size, _ := DiskSize(f)
	res, err := GrowGPT(f, size, 512, "BALLAST_DATA")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Grew || res.Index != 4 || res.OldEnd != 29*2048-1 {
		t.Fatalf("res = %+v", res)
	}
	// Last usable LBA is size/512 - 34; aligned down to a MiB boundary.
	if want := uint64(199*2048 - 1); res.NewEnd != want {
		t.Fatalf("NewEnd = %d, want %d", res.NewEnd, want)
	}

	tab, err := gpt.Read(f, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	if tab.RecoveredFromBackup {
		t.Fatal("primary GPT invalid after grow")
	}
	if err := tab.Verify(f, uint64(size)); err != nil {
		t.Fatalf("go-diskfs Verify: %v", err)
	}
	byName := map[string]*gpt.Partition{}
	for _, p := range tab.Partitions {
		byName[p.Name] = p
	}
	if p := byName["BALLAST_DATA"]; p == nil || p.End != res.NewEnd || p.Start != 25*2048 {
		t.Fatalf("data partition after grow: %+v", p)
	}
	if p := byName["BALLAST_A"]; p == nil || p.Start != 9*2048 || p.End != 17*2048-1 {
		t.Fatalf("slot A moved: %+v", p)
	}
	sfdiskVerify(t, f.Name())
	out, _ := exec.Command("sfdisk", "--dump", f.Name()).Output()
	if !strings.Contains(string(out), `name="BALLAST_DATA"`) {
		t.Fatalf("sfdisk dump lacks data partition:\n%s", out)
	}

	// A second run is a no-op.
	res2, err := GrowGPT(f, size, 512, "BALLAST_DATA")
	if err != nil || res2.Grew {
		t.Fatalf("second grow: %+v %v", res2, err)
	}
}

func TestGrowGPTAlreadyFull(t *testing.T) {
	f := makeImage(t, 30*mib)
	res, err := GrowGPT(f, 30*mib, 512, "BALLAST_DATA")
	if err != nil || res.Grew {
		t.Fatalf("res = %+v, %v", res, err)
	}
}

func TestGrowGPTRefusesNonLastPartition(t *testing.T) {
	f := makeImage(t, 64*mib)
	if _, err := GrowGPT(f, 64*mib, 512, "BALLAST_A"); err == nil || !strings.Contains(err.Error(), "not the last") {
		t.Fatalf("err = %v", err)
	}
	if _, err := GrowGPT(f, 64*mib, 512, "NOPE"); err == nil {
		t.Fatal("missing partition accepted")
	}
}
