package qemutest

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// ImageRPi3Env names the rpi3 SD card image under test (default
// out/ballast-rpi3.img, from `ballast build --board rpi3`).
const ImageRPi3Env = "BALLAST_TEST_IMAGE_RPI3"

// rpiBootDeadline bounds a raspi3b boot: TCG only, one emulated SD card,
// and mkfs.ext4 of the grown data partition on the first boot.
const rpiBootDeadline = 6 * time.Minute

// sdCard is a copy of an SD card image, grown to a power of two as QEMU's
// SD card model requires, with its FAT boot partition open.
type sdCard struct {
	path string
	fs   *fat32.FileSystem
}

// newSDCard copies img (sparse) into dir and opens its first MBR partition.
func newSDCard(t *testing.T, img, dir string) *sdCard {
	t.Helper()
	p := filepath.Join(dir, "sd.img")
	if out, err := exec.Command("cp", "--sparse=always", img, p).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v: %s", img, err, out)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(1)
	for size < st.Size()+1<<20 { // leave room for the data partition to grow
		size <<= 1
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	mbr := make([]byte, 512)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(mbr, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa || mbr[446+4] != 0x0c {
		t.Fatalf("%s: partition 1 is not a FAT32 (0x0c) MBR partition: type %#x", img, mbr[446+4])
	}
	start := int64(binary.LittleEndian.Uint32(mbr[446+8:])) * 512
	length := int64(binary.LittleEndian.Uint32(mbr[446+12:])) * 512
	b, err := file.OpenFromPath(p, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	fs, err := fat32.Read(b, length, start, 512)
	if err != nil {
		t.Fatalf("%s: boot partition: %v", img, err)
	}
	return &sdCard{path: p, fs: fs}
}

func (c *sdCard) read(t *testing.T, name string) []byte {
	t.Helper()
	data, err := c.fs.ReadFile(name)
	if err != nil {
		t.Fatalf("boot partition: reading %s: %v", name, err)
	}
	return data
}

// extract copies a file from the boot partition to dir.
func (c *sdCard) extract(t *testing.T, name, dir string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(name))
	if err := os.WriteFile(out, c.read(t, name), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// write replaces a file on the boot partition, as a person editing the
// card on a laptop would.
func (c *sdCard) write(t *testing.T, name string, data []byte) {
	t.Helper()
	f, err := c.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		t.Fatalf("boot partition: opening %s: %v", name, err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatalf("boot partition: writing %s: %v", name, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// configTxt reads the kernel= and initramfs lines of config.txt, as the
// Raspberry Pi firmware does.
func configTxt(t *testing.T, data []byte) (kernel, initramfs string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, ok := strings.CutPrefix(line, "kernel="); ok {
			kernel = k
		}
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "initramfs" {
			initramfs = f[1]
		}
	}
	if kernel == "" || initramfs == "" {
		t.Fatalf("config.txt names no kernel= or initramfs:\n%s", data)
	}
	return kernel, initramfs
}

// TestRPi3Boot boots the rpi3 SD card image in QEMU's raspi3b from its own
// boot partition: config.txt says which kernel and initramfs, the DTB is
// the one the Pi 3 B firmware would pick, the command line is cmdline.txt.
// raspi3b has no virtio, so the agent cannot run: the test reads the
// serial console (the mini UART, ttyS1, QEMU's second serial port).
func TestRPi3Boot(t *testing.T) {
	useCores(t, prioShort, 1)
	img := testImage(t, ImageRPi3Env, "ballast-rpi3.img")
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Fatalf("qemu-system-aarch64 missing (apt-get install qemu-system-arm): %v", err)
	}
	dir := t.TempDir()
	card := newSDCard(t, img, dir)
	kernelName, initrdName := configTxt(t, card.read(t, "config.txt"))
	kernel := card.extract(t, kernelName, dir)
	initrd := card.extract(t, initrdName, dir)
	dtb := card.extract(t, "bcm2837-rpi-3-b.dtb", dir)
	cmdline := strings.TrimSpace(string(card.read(t, "cmdline.txt")))
	for _, want := range []string{"cgroup_enable=memory", "cgroup_memory=1", "ballast.disk=", "console=ttyS1,115200"} {
		if !strings.Contains(cmdline, want) {
			t.Errorf("cmdline.txt %q lacks %s", cmdline, want)
		}
	}
	// QEMU's raspi3b resets the board the moment Linux's bcm2835_wdt arms
	// the watchdog (it emulates the PM block's reset, not its countdown):
	// on real hardware the init arms it, here it must not.
	cmdline += " ballast.watchdog=off"
	// user-data edited after flashing: a misspelt key the init must report,
	// which shows it read the boot partition's user-data.
	card.write(t, "user-data", []byte("#cloud-config\nhostname: pi-e2e\nhostnme: typo\n"))

	console := filepath.Join(dir, "console.log")
	ctx, cancel := context.WithTimeout(context.Background(), rpiBootDeadline+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-aarch64",
		"-M", "raspi3b", "-m", "1G", "-display", "none", "-monitor", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-dtb", dtb, "-append", cmdline,
		"-drive", "file="+card.path+",if=sd,format=raw",
		"-serial", "null", // the PL011: Bluetooth on a Pi 3
		"-serial", "file:"+console)
	qlog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer qlog.Close()
	cmd.Stdout, cmd.Stderr = qlog, qlog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	// In boot order; each must appear.
	want := []*regexp.Regexp{
		regexp.MustCompile(`ballast: found root device=/dev/mmcblk0p2`),
		regexp.MustCompile(`ballast: grew data partition disk=/dev/mmcblk0 partition=4`),
		regexp.MustCompile(`ballast: cgroup controllers: cpu cpuset memory pids`),
		regexp.MustCompile(`boot-partition: /dev/mmcblk0p1:/user-data:3:1: hostnme: unknown key`),
		regexp.MustCompile(`ballast: ready`),
	}
	deadline := time.Now().Add(rpiBootDeadline)
	for {
		log, _ := os.ReadFile(console)
		var missing []string
		for _, re := range want {
			if !re.Match(log) {
				missing = append(missing, re.String())
			}
		}
		if len(missing) == 0 {
			t.Logf("console:\n%s", grepBallast(log))
			break
		}
		if fatal := regexp.MustCompile(`ballast: FATAL: .*|Kernel panic.*`).Find(log); fatal != nil {
			t.Fatalf("boot failed: %s\nconsole tail:\n%s", fatal, tail(log, 4000))
		}
		select {
		case err := <-exited:
			exited <- err
			ql, _ := os.ReadFile(qlog.Name())
			t.Fatalf("QEMU exited (%v) before the console showed %q\nQEMU: %s\nconsole tail:\n%s", err, missing, ql, tail(log, 4000))
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the console still lacks %q\nconsole tail:\n%s", rpiBootDeadline, missing, tail(log, 4000))
		}
	}
}

func grepBallast(log []byte) string {
	var b strings.Builder
	for _, l := range strings.Split(string(log), "\n") {
		if strings.HasPrefix(l, "ballast: ") && !strings.Contains(l, "step done") {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
