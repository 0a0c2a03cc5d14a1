package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/ballast-os/ballast/imagebuild/debian"
	"github.com/ballast-os/ballast/imagebuild/disk"
	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/initramfs"
	"github.com/ballast-os/ballast/imagebuild/inspect"
	"github.com/ballast-os/ballast/imagebuild/spec"
)

// rpi5Drivers is what the Pi 5 needs of its kernel to reach its root and
// its network: each option is built in, or a module that the initramfs
// carries (the board's initramfs_modules).
var rpi5Drivers = []struct{ option, module string }{
	// SD card: the controller, the block driver, and what the controller's
	// device-tree node waits for.
	{"MMC_SDHCI_BRCMSTB", "sdhci_brcmstb"},
	{"MMC_BLOCK", "mmc_block"},
	{"PINCTRL_BCM2712", "pinctrl_brcmstb_bcm2712"},
	{"GPIO_BRCMSTB", "gpio_brcmstb"},
	{"REGULATOR_GPIO", "gpio_regulator"},
	{"REGULATOR_FIXED_VOLTAGE", "fixed"},
	// RP1 on the PCIe bus.
	{"PCIE_BRCMSTB", "pcie_brcmstb"},
	{"BCM2712_MIP", "irq_bcm2712_mip"},
	{"MISC_RP1", "rp1_pci"},
	{"COMMON_CLK_RP1", "clk_rp1"},
	{"PINCTRL_RP1", "pinctrl_rp1"},
	// Ethernet, USB.
	{"MACB", "macb"},
	{"BROADCOM_PHY", "broadcom"},
	{"USB_DWC3", "dwc3"},
	{"USB_XHCI_PLATFORM", "xhci_plat_hcd"},
	{"USB_STORAGE", "usb_storage"},
	// The root's file systems.
	{"SQUASHFS", "squashfs"},
	{"EXT4_FS", "ext4"},
	{"VFAT_FS", "vfat"},
}

// TestRPi5Build builds the Raspberry Pi 5 image without a runtime and
// checks what can be checked without a Pi 5 (QEMU has none): the kernel
// is trixie-backports', its config has every driver the board needs, built
// in or loaded from the initramfs, the boot partition has the kernel as a
// raw arm64 Image and the device trees, the lock says which packages came
// from trixie-backports, and an offline rebuild from that lock gives the
// same image.
func TestRPi5Build(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian's arm64 kernel from trixie-backports and writes an image: not a -short test")
	}
	out := t.TempDir()
	mutate := func(s *spec.Spec) {
		s.Board = "rpi5"
		s.Formats = []string{"raw"}
		s.Runtime.Kind = spec.RuntimeNone
	}
	var log bytes.Buffer
	b, err := newBuilder(Options{Spec: testSpec(t, out, mutate), CacheDir: testCache(t), Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.run(context.Background())
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, log.String())
	}
	if !strings.HasSuffix(res.Kernel, "-arm64") || strings.HasPrefix(res.Kernel, "6.12.") {
		t.Errorf("kernel %s: want trixie-backports' arm64 kernel, not trixie's 6.12", res.Kernel)
	}

	// The kernel's config, as the image carries it beside the modules.
	cfgEntry := b.system.Get("usr/lib/modules/" + res.Kernel + "/config")
	if cfgEntry == nil {
		t.Fatalf("the system image has no usr/lib/modules/%s/config", res.Kernel)
	}
	config := kernelConfig(t, entryBytes(t, cfgEntry))

	boot := readRPiBootFiles(t, res.Images[0].Path, disk.InitrdPath, disk.KernelPath)
	initrd := readCPIO(t, boot[disk.InitrdPath])
	loaded := map[string]bool{}
	for _, m := range strings.Fields(string(initrd[initramfs.ModulesLoadPath])) {
		loaded[m] = true
	}
	for _, d := range rpi5Drivers {
		switch v := config[d.option]; {
		case v == "y":
		case v == "m" && loaded[d.module]:
		case v == "m":
			t.Errorf("CONFIG_%s=m, but the initramfs does not load %s", d.option, d.module)
		default:
			t.Errorf("CONFIG_%s is %q: the Pi 5 needs it built in or as a module", d.option, v)
		}
		if testing.Verbose() {
			t.Logf("CONFIG_%-24s %s", d.option, config[d.option])
		}
	}
	// The console on the debug UART (ttyAMA10) must be there from the start.
	for _, o := range []string{"SERIAL_AMBA_PL011", "SERIAL_AMBA_PL011_CONSOLE"} {
		if config[o] != "y" {
			t.Errorf("CONFIG_%s is %q, want y (console=ttyAMA10)", o, config[o])
		}
	}
	// Every module the board lists that is not built in is in the
	// initramfs, in modules.load and as a file.
	paths := map[string]string{}
	for _, l := range strings.Split(string(initrd[initramfs.ModulesPathPath]), "\n") {
		if name, p, ok := strings.Cut(l, " "); ok {
			paths[name] = p
		}
	}
	builtin := map[string]bool{}
	if e := b.system.Get("usr/lib/modules/" + res.Kernel + "/modules.builtin"); e != nil {
		for _, l := range strings.Fields(string(entryBytes(t, e))) {
			builtin[initramfs.ModuleName(l)] = true
		}
	}
	for _, m := range b.board.InitramfsModules {
		name := initramfs.ModuleName(m)
		if builtin[name] {
			continue
		}
		if !loaded[name] {
			t.Errorf("initramfs_modules %s is not in the initramfs' modules.load", m)
		} else if _, ok := initrd["lib/modules/"+res.Kernel+"/"+paths[name]]; !ok {
			t.Errorf("module %s: no lib/modules/%s/%s in the initramfs", m, res.Kernel, paths[name])
		}
	}

	// The firmware loads an uncompressed arm64 Image (an EFI zboot image
	// would not start) and finds the device trees at the root.
	vm := boot[disk.KernelPath]
	if len(vm) < 64 || string(vm[56:60]) != "ARMd" || binary.LittleEndian.Uint64(vm[16:]) == 0 {
		t.Errorf("ballast/vmlinuz (%d bytes) is not an arm64 Image", len(vm))
	}
	rep, err := inspect.Inspect(res.Images[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.DeviceTrees, " ") != "bcm2712-d-rpi-5-b.dtb bcm2712-rpi-5-b.dtb" {
		t.Errorf("device trees on the boot partition: %v", rep.DeviceTrees)
	}

	// The lock names trixie-backports for the kernel's packages and for
	// linux-base (trixie's is older than the kernel needs), for nothing
	// else.
	lock, err := debian.ReadLock(res.LockPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lock.Packages {
		fromBpo := isKernelPackage(p.Name) || p.Name == "linux-base" || strings.HasPrefix(p.Name, "linux-base-")
		if got := p.Suite == "trixie-backports"; got != fromBpo {
			t.Errorf("lock: %s %s has suite %q", p.Name, p.Version, p.Suite)
		}
	}
	if k := lock.Find("linux-image-arm64"); k == nil || !strings.Contains(k.Version, "~bpo") {
		t.Errorf("lock: linux-image-arm64 = %+v, want trixie-backports' version", k)
	}

	// Offline, from the lock: the same image.
	out2 := t.TempDir()
	lockData, err := os.ReadFile(res.LockPath)
	if err != nil {
		t.Fatal(err)
	}
	s2 := testSpec(t, out2, mutate)
	if err := os.WriteFile(s2.Lock, lockData, 0o644); err != nil {
		t.Fatal(err)
	}
	r2 := buildOrFail(t, Options{Spec: s2, CacheDir: testCache(t), Offline: true})
	h1, err := res.Images[0].SHA256()
	if err != nil {
		t.Fatal(err)
	}
	h2, err := r2.Images[0].SHA256()
	if err != nil {
		t.Fatal(err)
	}
	if h1 != h2 || r2.Kernel != res.Kernel {
		t.Errorf("offline rebuild from the lock: kernel %s, image %s; first build: kernel %s, image %s", r2.Kernel, h2, res.Kernel, h1)
	}
	if got, _ := os.ReadFile(filepath.Join(out2, filepath.Base(res.LockPath))); !bytes.Equal(got, lockData) {
		t.Error("the offline rebuild changed the lock")
	}
}

// entryBytes reads a file entry of a tree.
func entryBytes(t *testing.T, e *filetree.Entry) []byte {
	t.Helper()
	rc, err := e.Data.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// kernelConfig parses a kernel .config: option (without CONFIG_) to value;
// "is not set" options are absent.
func kernelConfig(t *testing.T, data []byte) map[string]string {
	t.Helper()
	cfg := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if name, isOpt := strings.CutPrefix(k, "CONFIG_"); ok && isOpt {
			cfg[name] = v
		}
	}
	if len(cfg) < 1000 {
		t.Fatalf("kernel config has %d options: not a kernel config", len(cfg))
	}
	return cfg
}

// readRPiBootFiles reads files from the FAT boot partition (partition 1)
// of the Raspberry Pi image at img.
func readRPiBootFiles(t *testing.T, img string, names ...string) map[string][]byte {
	t.Helper()
	rep, err := inspect.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Partitions) == 0 {
		t.Fatalf("%s has no partitions", img)
	}
	p := rep.Partitions[0]
	f, err := file.OpenFromPath(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fs, err := fat32.Read(f, p.Size, p.Start, 512)
	if err != nil {
		t.Fatalf("reading the boot partition: %v", err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		data, err := fs.ReadFile("/" + n)
		if err != nil {
			t.Fatalf("boot partition: /%s: %v", n, err)
		}
		out[n] = data
	}
	return out
}

// readCPIO returns the files of a zstd-compressed newc initramfs by path.
func readCPIO(t *testing.T, initrd []byte) map[string][]byte {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(initrd))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	files := map[string][]byte{}
	rr := cpio.Newc.Reader(bytes.NewReader(raw))
	for {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("initramfs: %v", err)
		}
		if rec.Mode&cpio.S_IFMT != cpio.S_IFREG {
			continue
		}
		data, err := io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
		if err != nil {
			t.Fatal(err)
		}
		files[rec.Name] = data
	}
}
