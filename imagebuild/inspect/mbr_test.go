package inspect

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/imagebuild/disk"
)

// TestInspectRPiCard reads back a Raspberry Pi SD card image as
// disk.WriteMBR writes it: partitions named by role, firmware files,
// device trees, config.txt and cmdline.txt with the cgroup flags.
func TestInspectRPiCard(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys.squashfs")
	os.WriteFile(sys, []byte("hsqs fake"), 0o644)
	const cmdline = "console=ttyS1,115200 cgroup_enable=memory cgroup_memory=1 ballast.disk=0badcafe ballast.slot=A"
	bt := boot(t)
	for p, data := range map[string]string{
		"bootcode.bin": "b", "start.elf": "s", "fixup.dat": "f", "bcm2837-rpi-3-b.dtb": "d",
		"config.txt": "arm_64bit=1\nkernel=ballast/vmlinuz\n", "cmdline.txt": cmdline + "\n",
	} {
		if err := bt.AddFile(p, 0o644, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "rpi.img")
	err := disk.WriteMBR(context.Background(), img, disk.MBRLayout{
		Boot: bt, SystemA: sys, SlotSize: 8 << 20, DataSize: 4 << 20, Signature: 0x0badcafe, ModTime: testTime, Seed: "t",
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if r.Scheme != "mbr" || r.DiskSignature != "0badcafe" || r.Cmdline != cmdline || r.BootLabel != disk.BootLabel {
		t.Fatalf("report: scheme %q signature %q cmdline %q label %q", r.Scheme, r.DiskSignature, r.Cmdline, r.BootLabel)
	}
	if strings.Join(r.Firmware, " ") != "bootcode.bin fixup.dat start.elf" || strings.Join(r.DeviceTrees, " ") != "bcm2837-rpi-3-b.dtb" {
		t.Errorf("firmware %q, device trees %q", r.Firmware, r.DeviceTrees)
	}
	if !strings.Contains(r.ConfigTxt, "arm_64bit=1") || r.UserData == "" || r.KernelVersion != "6.12.48+deb13-amd64" {
		t.Errorf("config.txt %q, user-data %q, kernel %q", r.ConfigTxt, r.UserData, r.KernelVersion)
	}
	var names, types []string
	for _, p := range r.Partitions {
		names, types = append(names, p.Name), append(types, p.Type)
	}
	if strings.Join(names, ",") != "BALLAST_BOOT,BALLAST_A,BALLAST_B,BALLAST_DATA" || strings.Join(types, ",") != "0x0c,0x83,0x83,0x83" {
		t.Errorf("partitions %q types %q", names, types)
	}
	if r.Partitions[0].Start != 1<<20 || r.Partitions[0].Size != disk.BootSize {
		t.Errorf("boot partition at %d, %d bytes", r.Partitions[0].Start, r.Partitions[0].Size)
	}
	var out bytes.Buffer
	if err := r.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"disk id:  0badcafe", "cgroup_memory=1", "firmware: bootcode.bin", "dtbs:     bcm2837-rpi-3-b.dtb", "config.txt:\n  arm_64bit=1"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("text report lacks %q:\n%s", w, out.String())
		}
	}
	// sfdisk agrees on the table the builder wrote.
	if out, err := exec.Command("sfdisk", "--dump", img).CombinedOutput(); err != nil || !strings.Contains(string(out), "label-id: 0x0badcafe") {
		t.Errorf("sfdisk --dump: %v\n%s", err, out)
	}
}
