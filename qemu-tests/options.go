// Package qemutest boots ballast images in QEMU and drives them through
// the serial console and the init's control agent: the harness behind the
// end-to-end tests and `ballast run`.
package qemutest

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ballast-os/ballast/init/agent"
)

// Arch is the guest's architecture, named as Go names it.
type Arch string

// Architectures.
const (
	AMD64 Arch = "amd64"
	ARM64 Arch = "arm64"
)

// Firmware is what the machine boots with.
type Firmware string

// Firmwares.
const (
	BIOS Firmware = "bios" // SeaBIOS; amd64 only
	UEFI Firmware = "uefi" // OVMF on amd64, AAVMF on arm64
)

// Firmware files from Debian's ovmf and qemu-efi-aarch64 packages.
const (
	ovmfCode  = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars  = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	aavmfCode = "/usr/share/AAVMF/AAVMF_CODE.fd"
	aavmfVars = "/usr/share/AAVMF/AAVMF_VARS.fd"
)

// UserDataName is the fw_cfg entry that carries the cloud-config.
const UserDataName = "opt/ballast/user-data"

// Options describe a machine. The zero value of each field picks the
// default named in its comment.
type Options struct {
	Arch     Arch     // "" = AMD64
	Firmware Firmware // "" = BIOS on amd64, UEFI on arm64

	// Disk is a disk image to boot. Unless Writable, the machine runs on
	// a qcow2 overlay in its own directory, so the image is never
	// changed and a reboot (Machine.Reboot) keeps what the guest wrote.
	Disk       string
	DiskFormat string // "" = "raw"
	// DiskSize is the size of the overlay in bytes, which the guest sees
	// as the disk's size; 0 = the image's size. Larger lets the init
	// grow its data partition.
	DiskSize int64
	Writable bool // boot Disk itself, changes and all
	// HonorFlush runs the disk with cache=writeback, so what the guest
	// flushed is on the host when QEMU is killed (a power cut loses only
	// what the guest had not flushed); the default, cache=unsafe, ignores
	// flushes for speed, and a killed QEMU can lose flushed writes with
	// the qcow2 metadata it held.
	HonorFlush bool

	ISO string // a (hybrid) ISO, attached as a CD-ROM and booted first

	// Kernel, Initrd and Append boot a kernel directly (no firmware
	// boot loader): for the harness's own tests.
	Kernel, Initrd, Append string

	Memory int // MiB; 0 = 1024
	CPUs   int // 0 = 2

	// UserData is passed as a cloud-config through fw_cfg
	// (UserDataName); nil passes none.
	UserData []byte

	// Forwards maps guest TCP ports to host ports on 127.0.0.1 (user-mode
	// networking); a host port of 0 picks a free one (Machine.HostPort).
	Forwards map[int]int

	// GuestForwards are services of this machine that the guest reaches
	// in QEMU's user network, with the network otherwise closed: guest
	// address ("10.0.2.100:5000") -> host address ("127.0.0.1:5000").
	GuestForwards map[string]string

	// OpenNetwork lets the guest reach the outside through QEMU's user
	// network (`ballast run`); tests leave it false (restrict=on): their
	// traffic stays on this machine and the nodes are proved air-gapped.
	OpenNetwork bool

	// TCGThread is "single" or "multi" for this machine under TCG; ""
	// follows $BALLAST_QEMU_TCG_THREAD (see TCGThread).
	TCGThread string

	// Accel is "kvm", "tcg", or "" to choose: $BALLAST_QEMU_ACCEL, else
	// KVM when a probe boots with it in time (see SelectAccel), else TCG.
	Accel string

	// ConsoleLog is a file that gets the serial console, appended across
	// reboots; "" = console.log in the machine's directory.
	ConsoleLog string

	// FatalPatterns are console lines, beyond DefaultFatalPatterns, that
	// end every wait at once.
	FatalPatterns []string

	// FirmwareCode and FirmwareVars override the UEFI firmware files.
	FirmwareCode, FirmwareVars string

	// QEMU overrides the qemu-system binary ("" = qemu-system-x86_64 or
	// qemu-system-aarch64 on PATH).
	QEMU string

	ExtraArgs []string
}

func (o Options) withDefaults() (Options, error) {
	if o.Arch == "" {
		o.Arch = AMD64
	}
	if o.Arch != AMD64 && o.Arch != ARM64 {
		return o, fmt.Errorf("qemutest: Options.Arch %q: want %q or %q", o.Arch, AMD64, ARM64)
	}
	if o.Firmware == "" {
		o.Firmware = BIOS
		if o.Arch == ARM64 {
			o.Firmware = UEFI
		}
	}
	if o.Firmware != BIOS && o.Firmware != UEFI {
		return o, fmt.Errorf("qemutest: Options.Firmware %q: want %q or %q", o.Firmware, BIOS, UEFI)
	}
	if o.Arch == ARM64 && o.Firmware == BIOS {
		return o, fmt.Errorf("qemutest: arm64 has no BIOS firmware: use UEFI")
	}
	if o.Disk == "" && o.ISO == "" && o.Kernel == "" {
		return o, fmt.Errorf("qemutest: Options has nothing to boot: set Disk, ISO or Kernel")
	}
	if o.DiskFormat == "" {
		o.DiskFormat = "raw"
	}
	if o.Memory == 0 {
		o.Memory = 1024
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.Accel != "" && o.Accel != "kvm" && o.Accel != "tcg" {
		return o, fmt.Errorf("qemutest: Options.Accel %q: want \"kvm\", \"tcg\" or \"\"", o.Accel)
	}
	if o.FirmwareCode == "" {
		o.FirmwareCode, o.FirmwareVars = ovmfCode, ovmfVars
		if o.Arch == ARM64 {
			o.FirmwareCode, o.FirmwareVars = aavmfCode, aavmfVars
		}
	}
	if o.QEMU == "" {
		o.QEMU = "qemu-system-x86_64"
		if o.Arch == ARM64 {
			o.QEMU = "qemu-system-aarch64"
		}
	}
	return o, nil
}

// layout is where one machine's files are, and what was chosen for it.
type layout struct {
	Accel     string
	Dir       string      // the machine's own directory
	DiskPath  string      // the overlay, or Disk when Writable
	DiskFmt   string      // its format
	VarsPath  string      // the machine's copy of the UEFI variables
	UserData  string      // the cloud-config file, "" when none
	AgentSock string      // the virtio-serial port's socket
	QMPSock   string      // QEMU's QMP socket
	HostPorts map[int]int // guest port -> host port, all chosen
	VsockCID  uint32      // 0 = no vsock device
	// Interactive puts the console and QEMU's monitor on stdio and lets
	// the guest reboot in place.
	Interactive bool
}

// args builds QEMU's command line (without the binary).
func args(o Options, l layout) []string {
	a := []string{"-name", "ballast", "-nodefaults"}
	cpu := "max"
	if l.Accel == "kvm" {
		cpu = "host"
	}
	machine := "q35"
	if o.Arch == ARM64 {
		machine = "virt"
	}
	if l.Accel == "tcg" {
		a = append(a, "-machine", machine, "-accel", "tcg,thread="+o.tcgThread())
	} else {
		a = append(a, "-machine", machine+",accel="+l.Accel)
	}
	switch o.Arch {
	case ARM64:
		if l.Accel == "tcg" {
			// The Raspberry Pi 4's core; much faster to emulate than
			// "max" with pointer authentication.
			cpu = "cortex-a72"
		}
	}
	a = append(a, "-cpu", cpu,
		"-m", strconv.Itoa(o.Memory),
		"-smp", strconv.Itoa(o.CPUs),
		// -nographic (not just -display none) makes SeaBIOS print to
		// the serial port, so "no bootable disk" shows on the console.
		"-nographic",
	)
	if l.Interactive {
		a = append(a, "-serial", "mon:stdio")
	} else {
		a = append(a, "-no-reboot", "-monitor", "none",
			"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
			"-qmp", "unix:"+l.QMPSock+",server=on,wait=off")
	}
	if o.Firmware == UEFI {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+o.FirmwareCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+l.VarsPath)
	}
	if o.Kernel != "" {
		a = append(a, "-kernel", o.Kernel)
		if o.Initrd != "" {
			a = append(a, "-initrd", o.Initrd)
		}
		if o.Append != "" {
			a = append(a, "-append", o.Append)
		}
	}
	if l.DiskPath != "" {
		a = append(a,
			"-drive", "file="+l.DiskPath+",format="+l.DiskFmt+",if=none,id=disk0,cache="+cacheMode(o.HonorFlush),
			"-device", "virtio-blk-pci,drive=disk0,bootindex=1")
	}
	if o.ISO != "" {
		a = append(a, "-drive", "file="+o.ISO+",format=raw,media=cdrom,readonly=on,if=none,id=cd0")
		if o.Arch == AMD64 {
			// The AHCI CD-ROM a PC has.
			a = append(a, "-device", "ide-cd,drive=cd0,bootindex=0")
		} else {
			a = append(a, "-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-cd,drive=cd0,bus=scsi0.0,bootindex=0")
		}
	}

	// restrict=on: the guest reaches nothing beyond QEMU's own user
	// network (DHCP, the forwards).
	netdev := "user,id=net0,restrict=on"
	if o.OpenNetwork {
		netdev = "user,id=net0"
	}
	guests := make([]int, 0, len(l.HostPorts))
	for g := range l.HostPorts {
		guests = append(guests, g)
	}
	sort.Ints(guests)
	for _, g := range guests {
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", l.HostPorts[g], g)
	}
	for _, g := range slices.Sorted(maps.Keys(o.GuestForwards)) {
		netdev += fmt.Sprintf(",guestfwd=tcp:%s-tcp:%s", g, o.GuestForwards[g])
	}
	// romfile= drops iPXE: a machine that cannot boot its disk should
	// say so, not try the network for a minute.
	a = append(a, "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile=")

	a = append(a, "-device", "virtio-rng-pci")
	if o.Arch == AMD64 {
		// A hardware watchdog, as on a Pi: the image arms it, so every
		// boot runs with it. One that fires resets the machine, which
		// under -no-reboot ends QEMU with no "Restarting system" on the
		// console: a test's Reboot or Wait then fails.
		a = append(a, "-device", "i6300esb")
	}
	a = append(a, "-action", "watchdog=reset")
	a = append(a,
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", "socket,id=agent,path="+l.AgentSock+",server=on,wait=off",
		"-device", "virtserialport,bus=vser0.0,chardev=agent,name="+agent.PortName)
	if l.VsockCID != 0 {
		a = append(a, "-device", fmt.Sprintf("vhost-vsock-pci,guest-cid=%d", l.VsockCID))
	}
	if l.UserData != "" {
		a = append(a, "-fw_cfg", "name="+UserDataName+",file="+l.UserData)
	}
	return append(a, o.ExtraArgs...)
}

// absPath makes p absolute, so that a qcow2 overlay's backing file and
// QEMU's arguments do not depend on the working directory.
func absPath(what, p string) (string, error) {
	if p == "" {
		return "", nil
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("qemutest: %s %s: %w", what, p, err)
	}
	if _, err := os.Stat(a); err != nil {
		return "", fmt.Errorf("qemutest: %s: %w", what, err)
	}
	if strings.Contains(a, ",") {
		// QEMU's option syntax would split the path.
		return "", fmt.Errorf("qemutest: %s %s: QEMU cannot take a path with a comma", what, a)
	}
	return a, nil
}

func (o Options) tcgThread() string {
	if o.TCGThread == "single" || o.TCGThread == "multi" {
		return o.TCGThread
	}
	return TCGThread()
}

// TCGThreadEnv chooses QEMU's TCG threading: "single" (the default) or
// "multi".
const TCGThreadEnv = "BALLAST_QEMU_TCG_THREAD"

// TCGThread is the TCG threading mode. Single-threaded TCG is the default:
// with one host thread per vCPU, Debian's 6.12 kernel has been seen to
// oops while patching its own text (an int3 left by text_poke_bp hit on
// another vCPU, in sched_clock_cpu) on a loaded host, and on a two-core
// host the threads gain little anyway.
func TCGThread() string {
	if v := os.Getenv(TCGThreadEnv); v == "multi" {
		return v
	}
	return "single"
}

func cacheMode(honorFlush bool) string {
	if honorFlush {
		return "writeback"
	}
	return "unsafe"
}
