package qemutest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These boot real QEMU (TCG is fine) with images that cannot boot, and
// check that the harness fails within its deadline with the console
// lines that say why.

// brokenDeadline is the deadline each test gives its wait; a broken
// boot must be reported well within it, not at it.
const brokenDeadline = 3 * time.Minute

func expectBootFailure(t *testing.T, opts Options, wantLines ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU: not in -short (make unit)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), brokenDeadline)
	defer cancel()
	opts.Memory = 512
	opts.CPUs = 1
	m, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer m.Close()
	start := time.Now()
	_, err = m.WaitReady(ctx)
	took := time.Since(start)
	if err == nil {
		t.Fatal("WaitReady succeeded on a broken image")
	}
	t.Logf("failed after %v (%s):\n%v", took.Round(time.Millisecond), m.lay.Accel, err)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the failure was the deadline, not the console's evidence")
	}
	if !errors.Is(err, ErrConsoleFatal) && !errors.Is(err, ErrExited) {
		t.Errorf("err = %v, want ErrConsoleFatal or ErrExited", err)
	}
	for _, w := range wantLines {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not show %q", w)
		}
	}
}

// TestBrokenDiskBIOS: a disk with no boot loader at all.
func TestBrokenDiskBIOS(t *testing.T) {
	useCores(t, prioShort, 1)
	disk := filepath.Join(t.TempDir(), "empty.img")
	if err := os.WriteFile(disk, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	expectBootFailure(t, Options{Disk: disk, Firmware: BIOS}, "Boot failed: not a bootable disk")
}

// TestBrokenDiskUEFI: OVMF finds nothing to boot.
func TestBrokenDiskUEFI(t *testing.T) {
	useCores(t, prioShort, 1)
	disk := filepath.Join(t.TempDir(), "garbage.img")
	garbage := []byte(strings.Repeat("not a disk image ", 1<<18))
	if err := os.WriteFile(disk, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	expectBootFailure(t, Options{Disk: disk, Firmware: UEFI}, "UEFI Interactive Shell")
}

// TestBrokenRootLabel: a real Debian kernel told to boot from a root
// label no disk has panics; the panic is the failure, with its reason.
func TestBrokenRootLabel(t *testing.T) {
	useCores(t, prioShort, 1)
	if testing.Short() {
		t.Skip("boots QEMU: not in -short (make unit)")
	}
	kernel := testKernel(t)
	expectBootFailure(t, Options{
		Kernel: kernel,
		Append: "console=ttyS0,115200 root=LABEL=BALLAST_NOPE panic=10",
	}, "Kernel panic - not syncing", `VFS: Cannot open root device "LABEL=BALLAST_NOPE"`)
}
