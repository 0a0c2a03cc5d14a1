package imagebuild

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/boards"
	"github.com/ballast-os/ballast/imagebuild/disk"
	"github.com/ballast-os/ballast/imagebuild/filetree"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden")

// fakeKernelTree has the DTB files of Debian's linux-image-arm64 (trixie)
// that the boards pick from, and some they must not: in
// usr/lib/linux-image-<kver>, or, split, where the kernels after 6.12
// (trixie-backports') put them: usr/lib/modules/<kver>/dtb, with
// usr/lib/linux-image-<kver> a symlink to it.
func fakeKernelTree(t *testing.T, kver string, split bool) *filetree.Tree {
	t.Helper()
	kt := filetree.New(DefaultEpoch)
	dir := "usr/lib/linux-image-" + kver
	if split {
		dir = "usr/lib/modules/" + kver + "/dtb"
		if err := kt.AddSymlink("usr/lib/linux-image-"+kver, "modules/"+kver+"/dtb"); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{
		"bcm2837-rpi-3-a-plus.dtb", "bcm2837-rpi-3-b.dtb", "bcm2837-rpi-3-b-plus.dtb", "bcm2837-rpi-cm3-io3.dtb",
		"bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4-io.dtb",
		"bcm2712-rpi-5-b.dtb", "bcm2712-d-rpi-5-b.dtb", "bcm2835-rpi-zero-w.dtb",
	} {
		if err := kt.AddFile(dir+"/broadcom/"+n, 0o644, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	kt.AddFile(dir+"/rockchip/rk3399-rockpro64.dtb", 0o644, []byte("x"))
	return kt
}

// fakeFirmware has the file names of Debian's raspi-firmware under
// usr/lib/raspi-firmware.
func fakeFirmware(t *testing.T) *filetree.Tree {
	t.Helper()
	fw := filetree.New(DefaultEpoch)
	for _, n := range []string{
		"bootcode.bin", "fixup.dat", "fixup4.dat", "fixup4cd.dat", "fixup_cd.dat", "start.elf",
		"start4.elf", "start4cd.elf", "start_cd.elf", "start_x.elf", "overlays/pi4-spidev.dtbo",
	} {
		if err := fw.AddFile(n, 0o644, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	return fw
}

// TestRPiBootPartitionGolden pins, per Raspberry Pi board, what its boot
// partition holds, config.txt and cmdline.txt.
func TestRPiBootPartitionGolden(t *testing.T) {
	for _, name := range boards.Names() {
		b, err := boards.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if !b.HasBootChain("rpi") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			bt := filetree.New(time.Unix(0, 0))
			for _, p := range []string{disk.KernelPath, disk.InitrdPath, disk.BuildJSONPath, disk.UserDataPath} {
				bt.AddFile(p, 0o644, []byte(p))
			}
			// The kernel from trixie-backports has the split layout.
			kver, split := "6.12.117+deb13-arm64", b.KernelSuite != ""
			if split {
				kver = "7.3.4+deb13-arm64"
			}
			if err := addRPiBootFiles(b, bt, fakeFirmware(t), fakeKernelTree(t, kver, split), kver, 0x1234abcd); err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			fmt.Fprintf(&got, "# board %s: boot partition files\n", name)
			for _, e := range bt.Entries() {
				if e.Kind == filetree.File {
					fmt.Fprintf(&got, "/%s\n", e.Path)
				}
			}
			for _, f := range []string{ConfigTxtPath, CmdlineTxtPath} {
				rc, _ := bt.Get(f).Data.Open()
				data := make([]byte, bt.Get(f).Size())
				rc.Read(data)
				rc.Close()
				fmt.Fprintf(&got, "\n# %s\n%s", f, data)
			}
			golden := filepath.Join("testdata", "boot-"+name+".golden")
			if *updateGolden {
				os.MkdirAll("testdata", 0o755)
				if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestRPiBootPartitionGolden -update to create it)", err)
			}
			if got.String() != string(want) {
				t.Errorf("boot partition of %s differs from %s (-update rewrites it):\n--- got\n%s\n--- want\n%s", name, golden, got.String(), want)
			}
			cmdline := RPiCmdline(b, 0x1234abcd)
			for _, w := range []string{"cgroup_enable=memory", "cgroup_memory=1", "cgroup_enable=cpuset", "ballast.disk=1234abcd", "ballast.slot=A"} {
				if !strings.Contains(cmdline, w) {
					t.Errorf("cmdline %q lacks %s", cmdline, w)
				}
			}
		})
	}
}

func TestRPiBootFilesFailWhenFirmwareOrDTBIsMissing(t *testing.T) {
	b, err := boards.Get("rpi3")
	if err != nil {
		t.Fatal(err)
	}
	bt := filetree.New(DefaultEpoch)
	err = addRPiBootFiles(b, bt, filetree.New(DefaultEpoch), fakeKernelTree(t, "k", false), "k", 1)
	if err == nil || !strings.Contains(err.Error(), "bootcode.bin") {
		t.Errorf("no firmware: err = %v", err)
	}
	bt = filetree.New(DefaultEpoch)
	err = addRPiBootFiles(b, bt, fakeFirmware(t), filetree.New(DefaultEpoch), "k", 1)
	if err == nil || !strings.Contains(err.Error(), "bcm2837-rpi-3-") {
		t.Errorf("no DTB: err = %v", err)
	}
}
