package initramfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// TestBootDebianKernel boots the real Debian kernel in QEMU with an
// initramfs from Write whose /init (testdata/modinit) loads every module
// in modules.load: the kernel must accept the zstd cpio, and every module
// must load in the order given.
func TestBootDebianKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped with -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 is needed (apt-get install qemu-system-x86)")
	}
	deb := debianKernelDeb(t)
	kernel, kver := unpackKernel(t, deb)
	img, err := KernelImage(kernel, kver)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	build := exec.Command("go", "build", "-o", initBin, "./testdata/modinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building testdata/modinit: %v\n%s", err, out)
	}
	initSrc, err := filetree.NewHostFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.img")
	mods, err := WriteFile(context.Background(), initrd, Spec{
		ModTime: time.Unix(1700000000, 0),
		Init:    initSrc,
		Kernel:  kernel,
		Modules: rootModules,
	})
	if err != nil {
		t.Fatal(err)
	}

	args := []string{"-machine", "q35", "-m", "512", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", img.Data.(filetree.HostFile).Path, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet"}
	// TCG unless asked: nested KVM on the build hosts fails to emulate
	// an instruction in this kernel's decompressor ("emulation failure").
	if os.Getenv("BALLAST_TEST_KVM") == "1" {
		args = append(args, "-enable-kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg", "-cpu", "max")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, qemu, args...).CombinedOutput()
	console := string(bytes.ReplaceAll(out, []byte("\r"), nil))
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, console)
	}
	want := fmt.Sprintf("modinit: loaded %d modules, 0 failures", len(mods))
	if !strings.Contains(console, want) {
		t.Fatalf("console lacks %q:\n%s", want, console)
	}
	t.Logf("booted %s and loaded %d modules in %v", kver, len(mods), time.Since(start).Round(time.Millisecond))
}
