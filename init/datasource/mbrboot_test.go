package datasource

import (
	"os"
	"path/filepath"
	"testing"
)

// TestGatherMBRBootPartitionByLabel: a Raspberry Pi card has an MBR, so no
// partition names; the boot partition is the FAT volume labelled
// BALLASTBOOT, and a FAT volume with another label is not it.
func TestGatherMBRBootPartitionByLabel(t *testing.T) {
	mbrDisk := func(t *testing.T, p string) {
		blank(64<<20)(t, p)
		b := make([]byte, 512)
		b[446+4], b[446+8+1] = 0x0c, 0x08 // one FAT32 entry at LBA 2048
		b[510], b[511] = 0x55, 0xaa
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteAt(b, 0)
	}
	root := fakeRoot(t,
		fakeDev{sysPath: "mmcblk0", size: "131072", image: mbrDisk},
		fakeDev{sysPath: "mmcblk0/mmcblk0p1", size: "32768", part: "1", image: vfat(BootFATLabel)},
		fakeDev{sysPath: "sda", size: "131072", image: mbrDisk},
		fakeDev{sysPath: "sda/sda1", size: "32768", part: "1", image: vfat("USBSTICK")},
	)
	m := &fakeMounter{root: root, contents: map[string]map[string]string{
		"mmcblk0p1": {"user-data": "#cloud-config\nhostname: pi\n"},
		"sda1":      {"user-data": "#cloud-config\nhostname: wrong\n"},
	}}
	got := Gather(env(root, m))
	if len(got) != 1 || got[0].Name != NameBootPartition || string(got[0].Data) != "#cloud-config\nhostname: pi\n" ||
		got[0].Path != filepath.Join(root, "dev/mmcblk0p1")+":/user-data" {
		t.Fatalf("sources %+v", got)
	}
}
