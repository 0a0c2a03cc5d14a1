package qemutest

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func testLayout(accel string) layout {
	return layout{
		Accel: accel, Dir: "/m", DiskPath: "/m/disk.qcow2", DiskFmt: "qcow2",
		VarsPath: "/m/efivars.fd", UserData: "/m/user-data", AgentSock: "/m/agent.sock",
		QMPSock: "/m/qmp.sock", HostPorts: map[int]int{22: 2222, 6443: 16443},
	}
}

// hasSeq reports whether want appears in a as consecutive elements.
func hasSeq(a []string, want ...string) bool {
	for i := range a {
		if i+len(want) <= len(a) && slices.Equal(a[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

func TestArgs(t *testing.T) {
	type check struct {
		seq  []string
		want bool
	}
	for _, tc := range []struct {
		name   string
		opts   Options
		accel  string
		checks []check
	}{
		{"amd64 bios tcg", Options{Disk: "/img", UserData: []byte("#cloud-config\n")}, "tcg", []check{
			{[]string{"-machine", "q35", "-accel", "tcg,thread=single"}, true},
			{[]string{"-cpu", "max"}, true},
			{[]string{"-no-reboot"}, true},
			{[]string{"-nographic"}, true},
			{[]string{"-m", "1024", "-smp", "2"}, true},
			{[]string{"-drive", "file=/m/disk.qcow2,format=qcow2,if=none,id=disk0,cache=unsafe"}, true},
			{[]string{"-fw_cfg", "name=opt/ballast/user-data,file=/m/user-data"}, true},
			{[]string{"-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:16443-:6443"}, true},
			{[]string{"-chardev", "socket,id=agent,path=/m/agent.sock,server=on,wait=off"}, true},
			{[]string{"-device", "virtserialport,bus=vser0.0,chardev=agent,name=org.ballast.agent.0"}, true},
			{[]string{"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"}, true},
			{[]string{"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + ovmfCode}, false},
			{[]string{"-device", "i6300esb"}, true},
			{[]string{"-action", "watchdog=reset"}, true},
		}},
		{"amd64 uefi kvm iso", Options{Firmware: UEFI, ISO: "/live.iso", Memory: 2048, CPUs: 1}, "kvm", []check{
			{[]string{"-machine", "q35,accel=kvm"}, true},
			{[]string{"-cpu", "host"}, true},
			{[]string{"-m", "2048", "-smp", "1"}, true},
			{[]string{"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + ovmfCode}, true},
			{[]string{"-drive", "if=pflash,format=raw,unit=1,file=/m/efivars.fd"}, true},
			{[]string{"-drive", "file=/live.iso,format=raw,media=cdrom,readonly=on,if=none,id=cd0"}, true},
			{[]string{"-device", "ide-cd,drive=cd0,bootindex=0"}, true},
		}},
		{"arm64 uefi tcg", Options{Arch: ARM64, Disk: "/img"}, "tcg", []check{
			{[]string{"-machine", "virt", "-accel", "tcg,thread=single"}, true},
			{[]string{"-cpu", "cortex-a72"}, true},
			{[]string{"-device", "i6300esb"}, false},
			{[]string{"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + aavmfCode}, true},
		}},
		{"guest forward", Options{Disk: "/img", GuestForwards: map[string]string{"10.0.2.100:5000": "127.0.0.1:40123"}}, "tcg", []check{
			{[]string{"-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:16443-:6443,guestfwd=tcp:10.0.2.100:5000-tcp:127.0.0.1:40123"}, true},
		}},
		{"direct kernel", Options{Kernel: "/vmlinuz", Initrd: "/initrd", Append: "console=ttyS0", ExtraArgs: []string{"-s"}}, "tcg", []check{
			{[]string{"-kernel", "/vmlinuz", "-initrd", "/initrd", "-append", "console=ttyS0"}, true},
			{[]string{"-s"}, true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.opts.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			l := testLayout(tc.accel)
			if o.ISO != "" {
				l.DiskPath = ""
			}
			a := args(o, l)
			for _, c := range tc.checks {
				if hasSeq(a, c.seq...) != c.want {
					t.Errorf("args contain %q: %v, want %v\nargs: %q", c.seq, !c.want, c.want, a)
				}
			}
			if got := a[len(a)-1]; len(o.ExtraArgs) > 0 && got != o.ExtraArgs[len(o.ExtraArgs)-1] {
				t.Errorf("ExtraArgs not last: %q", a)
			}
		})
	}
}

func TestArgsInteractive(t *testing.T) {
	o, _ := Options{Disk: "/img"}.withDefaults()
	l := testLayout("tcg")
	l.Interactive = true
	a := args(o, l)
	if !hasSeq(a, "-serial", "mon:stdio") || slices.Contains(a, "-no-reboot") {
		t.Errorf("interactive args: %q; want -serial mon:stdio and no -no-reboot", a)
	}
}

func TestOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "nothing to boot"},
		{Options{Disk: "/x", Arch: "riscv64"}, `Arch "riscv64"`},
		{Options{Disk: "/x", Arch: ARM64, Firmware: BIOS}, "no BIOS"},
		{Options{Disk: "/x", Accel: "hvf"}, `Accel "hvf"`},
	} {
		if _, err := tc.opts.withDefaults(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want one saying %q", tc.opts, err, tc.want)
		}
	}
}

func TestSelectAccel(t *testing.T) {
	ctx := context.Background()
	t.Setenv(AccelEnv, "tcg")
	if a, why, err := SelectAccel(ctx, AMD64, ""); err != nil || a != "tcg" || why != "$"+AccelEnv {
		t.Errorf("with $%s=tcg: %q, %q, %v", AccelEnv, a, why, err)
	}
	if a, _, err := SelectAccel(ctx, AMD64, "kvm"); err != nil || a != "kvm" {
		t.Errorf("Options.Accel wins over the environment: got %q, %v", a, err)
	}
	t.Setenv(AccelEnv, "xen")
	if _, _, err := SelectAccel(ctx, AMD64, ""); err == nil || !strings.Contains(err.Error(), "xen") {
		t.Errorf("bad $%s: err = %v", AccelEnv, err)
	}
	t.Setenv(AccelEnv, "")
	if a, why, err := SelectAccel(ctx, ARM64, ""); err != nil || a != "tcg" || !strings.Contains(why, "host") {
		t.Errorf("arm64 guest on amd64: %q, %q, %v; want tcg", a, why, err)
	}
}

// TestProbeKVM runs the real probe: whatever it decides, it must decide
// within ProbeTimeout (nested KVM here hangs or stops the guest) and
// the answer is cached.
func TestProbeKVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU: not in -short (make unit)")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm: SelectAccel answers tcg without probing (checked by TestSelectAccel)")
	}
	t.Setenv(AccelEnv, "")
	start := time.Now()
	a, why, err := SelectAccel(context.Background(), AMD64, "")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > ProbeTimeout+5*time.Second {
		t.Errorf("probe took %v, longer than %v", d, ProbeTimeout)
	}
	t.Logf("probe chose %s: %s", a, why)
	start = time.Now()
	a2, _, _ := SelectAccel(context.Background(), AMD64, "")
	if a2 != a || time.Since(start) > time.Second {
		t.Errorf("second call: %q after %v; want the cached %q at once", a2, time.Since(start), a)
	}
}

func feed(t *testing.T, c *console, text string) {
	t.Helper()
	for _, l := range strings.SplitAfter(text, "\n") {
		if l != "" {
			c.add(l)
		}
	}
}

func TestConsoleFatal(t *testing.T) {
	rec, err := os.ReadFile("testdata/oops-console.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, text, fatal string
	}{
		{"oops", string(rec), "int3: 0000 [#1] PREEMPT SMP NOPTI"},
		{"panic", "[    3.5] VFS: Cannot open root device \"LABEL=NOPE\"\n[    3.6] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n[    3.7] ---[ end Kernel panic - not syncing ]---\n", "Kernel panic - not syncing: VFS"},
		{"ballast fatal", "ballast: mounting /sysroot\r\nballast: FATAL: no partition labelled BALLAST_A\r\n", "ballast: FATAL: no partition"},
		{"seabios", "\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\nBooting from Hard Disk...\r\nBoot failed: not a bootable disk\r\n", "Boot failed: not a bootable disk"},
		{"ovmf", "BdsDxe: No bootable option or device was found.\r\n", "No bootable option"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newConsole(DefaultFatalPatterns)
			if err != nil {
				t.Fatal(err)
			}
			feed(t, c, tc.text)
			line, _, _ := c.fatalReport()
			if !strings.Contains(line, tc.fatal) {
				t.Errorf("fatal line = %q, want one containing %q", line, tc.fatal)
			}
			for _, l := range c.tail(100) {
				if strings.ContainsAny(l, "\r\x1b") {
					t.Errorf("line kept control characters: %q", l)
				}
			}
		})
	}
	// A normal boot is not fatal, user-space errors included.
	c, _ := newConsole(DefaultFatalPatterns)
	feed(t, c, "[    1.0] Linux version 6.12\n[    2.0] traps: sh[123] general protection fault ip:7f\nballast: error: write_files[0]: permission denied\nballast: ready in 2.1s\n")
	if line, _, _ := c.fatalReport(); line != "" {
		t.Errorf("normal boot reported fatal line %q", line)
	}
}

// TestConsoleFatalSettles checks the wait after a fatal line: the report
// is held for the rest of the oops, then released.
func TestConsoleFatalSettles(t *testing.T) {
	c, _ := newConsole(DefaultFatalPatterns)
	feed(t, c, "[ 2.0] int3: 0000 [#1] PREEMPT SMP NOPTI\n[ 2.1] RIP: 0010:foo\n")
	if _, settled, wait := c.fatalReport(); settled || wait <= 0 {
		t.Errorf("report settled at once (%v, %v); want it to wait for the trace", settled, wait)
	}
	feed(t, c, "[ 2.2] ---[ end trace 0000000000000000 ]---\n")
	if _, settled, _ := c.fatalReport(); !settled {
		t.Error("report not settled after the end of the trace")
	}
}

// TestWaitFailsOnRecordedPanic runs a fake QEMU that prints a recorded
// oops and hangs: WaitReady must fail at once with the oops in the error.
func TestWaitFailsOnRecordedPanic(t *testing.T) {
	fake := t.TempDir() + "/fake-qemu"
	os.WriteFile(fake, []byte("#!/bin/sh\ncat "+mustAbs(t, "testdata/oops-console.txt")+"\nexec sleep 600\n"), 0o755)
	t.Setenv(AccelEnv, "tcg")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, Options{Kernel: fake, QEMU: fake})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	start := time.Now()
	_, err = m.WaitReady(ctx)
	if !errors.Is(err, ErrConsoleFatal) {
		t.Fatalf("WaitReady: err = %v, want ErrConsoleFatal", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failing took %v; a panic should fail at once, not at the deadline", d)
	}
	for _, want := range []string{"int3: 0000 [#1] PREEMPT SMP NOPTI", "Kernel panic - not syncing: Attempted to kill init", "squashfs_read_data"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	var me *MachineError
	if !errors.As(err, &me) || len(me.Console) == 0 || len(me.Console) > TailLines {
		t.Errorf("error carries %d console lines, want 1..%d", len(me.Console), TailLines)
	}
}

// TestWaitFailsOnExit: QEMU exiting early fails the wait with its stderr.
func TestWaitFailsOnExit(t *testing.T) {
	fake := t.TempDir() + "/fake-qemu"
	os.WriteFile(fake, []byte("#!/bin/sh\necho 'SeaBIOS (version 1.16.2)'\necho 'qemu-system-x86_64: -drive file=x: Could not open x' >&2\nexit 1\n"), 0o755)
	t.Setenv(AccelEnv, "tcg")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, Options{Kernel: fake, QEMU: fake})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = m.WaitConsole(ctx, regexp.MustCompile(`never`))
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "Could not open x") || !strings.Contains(err.Error(), "SeaBIOS") {
		t.Errorf("err = %v; want ErrExited with QEMU's stderr and the console", err)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := absPath("test file", p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A guest under KVM that shows nothing after the boot loader for
// kvmStall is taken for stopped (nested KVM has hung so, silently); one
// that printed a line of its init is not, however long it then runs.
func TestKVMStalled(t *testing.T) {
	c, err := newConsole(DefaultFatalPatterns)
	if err != nil {
		t.Fatal(err)
	}
	c.add("GRUB loading...\r\n")
	c.add("   Booting `ballast (slot A)'\r\n")
	r := &run{console: c, started: time.Now()}
	if r.kvmStalled() {
		t.Error("stalled at once")
	}
	r.started = time.Now().Add(-kvmStall - time.Second)
	if !r.kvmStalled() {
		t.Error("nothing after GRUB for longer than kvmStall, and not stalled")
	}
	c.add("ballast: mounting /sysroot\r\n")
	if r.kvmStalled() || !r.booted.Load() {
		t.Error("the init printed, and still stalled")
	}
}
