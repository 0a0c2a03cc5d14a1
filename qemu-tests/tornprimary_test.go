package qemutest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// TestTornPrimaryGPT boots the default image in the state a power cut
// leaves between the two halves of the first boot's GPT rewrite: the disk
// is larger than the image, the backup GPT at its new end is written and
// the primary's entries too, but the primary header still has the old
// entries' CRC. Under BIOS (UEFI firmware repairs the primary itself
// before Linux runs) the kernel must take the backup, which it does only
// with the gpt parameter (without it: no partitions, find-root fails at
// every boot), and the init must rewrite the primary.
func TestTornPrimaryGPT(t *testing.T) {
	useCores(t, prioShort, 1)
	img := testImage(t, ImageRawEnv, "ballast-x86_64.img")
	disk := filepath.Join(t.TempDir(), "torn.img")
	if out, err := exec.Command("cp", "--sparse=always", img, disk).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v: %s", img, err, out)
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	oldHeader := make([]byte, 512)
	if _, err := f.ReadAt(oldHeader, 512); err != nil {
		t.Fatal(err)
	}
	size := fi.Size() + 1<<30
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	tab, err := gpt.Read(f, 512, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Repair(uint64(size)); err != nil {
		t.Fatal(err)
	}
	last := tab.Partitions[len(tab.Partitions)-1]
	last.Expand((tab.LastDataSector()+1)/2048*2048 - 1 - last.End)
	if err := tab.Write(f, size); err != nil {
		t.Fatal(err)
	}
	// The tear: the old primary header over the new entries.
	if _, err := f.WriteAt(oldHeader, 512); err != nil {
		t.Fatal(err)
	}
	if tt, err := gpt.Read(f, 512, 512); err != nil || !tt.RecoveredFromBackup {
		t.Fatalf("the torn disk's primary GPT still reads as valid (%v)", err)
	}
	f.Close()

	m := startMachine(t, Options{Disk: disk, Writable: true, Firmware: BIOS,
		UserData: []byte("#cloud-config\nhostname: torn\nballast:\n  runtime: none\n  agent: {privileged: true}\n")})
	st := waitReady(t, m)
	if st.Hostname != "torn" {
		t.Errorf("hostname %q", st.Hostname)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	f, err = os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tt, err := gpt.Read(f, 512, 512)
	if err != nil || tt.RecoveredFromBackup {
		t.Fatalf("after the boot the primary GPT is still torn (%v)", err)
	}
	if err := tt.Verify(f, uint64(size)); err != nil {
		t.Errorf("primary and backup GPT disagree after the boot: %v", err)
	}
}
