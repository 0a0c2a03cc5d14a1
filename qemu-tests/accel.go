package qemutest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// AccelEnv names the environment variable that chooses the accelerator
// ("kvm" or "tcg") over the probe.
const AccelEnv = "BALLAST_QEMU_ACCEL"

// ProbeKernelEnv names a Linux kernel (bzImage) for the KVM probe.
const ProbeKernelEnv = "BALLAST_KVM_PROBE_KERNEL"

// ProbeTimeout bounds the KVM probe. Nested KVM can hang, or stop with
// "KVM internal error" as soon as the kernel's decompressor runs, so the
// probe boots a kernel where it can and gives up quickly.
const ProbeTimeout = 10 * time.Second

// probes caches each probe's answer for the life of the process: the
// host does not change under a test run.
var probes = struct {
	sync.Mutex
	m map[string]probeResult
}{m: map[string]probeResult{}}

type probeResult struct {
	accel, why string
}

// SelectAccel says which accelerator a machine for arch gets, and why:
// want when it is set, else $BALLAST_QEMU_ACCEL, else "kvm" when /dev/kvm
// is usable for arch and a probe run boots with it within ProbeTimeout,
// else "tcg".
func SelectAccel(ctx context.Context, arch Arch, want string) (accel, why string, err error) {
	if want != "" {
		return want, "Options.Accel", nil
	}
	if env := os.Getenv(AccelEnv); env != "" {
		if env != "kvm" && env != "tcg" {
			return "", "", fmt.Errorf("qemutest: $%s is %q: want \"kvm\" or \"tcg\"", AccelEnv, env)
		}
		return env, "$" + AccelEnv, nil
	}
	if string(arch) != runtime.GOARCH {
		return "tcg", fmt.Sprintf("%s guest on a %s host", arch, runtime.GOARCH), nil
	}
	if err := unix.Access("/dev/kvm", unix.R_OK|unix.W_OK); err != nil {
		return "tcg", "/dev/kvm: " + err.Error(), nil
	}
	probes.Lock()
	defer probes.Unlock()
	key := string(arch)
	if r, ok := probes.m[key]; ok {
		return r.accel, r.why, nil
	}
	r := probeKVM(ctx, arch)
	if ctx.Err() != nil {
		// Not an answer about the host: do not cache it.
		return "", "", fmt.Errorf("qemutest: probing KVM: %w", ctx.Err())
	}
	probes.m[key] = r
	return r.accel, r.why, nil
}

// probeKernel finds a kernel to probe with: $BALLAST_KVM_PROBE_KERNEL,
// the kernel the test helpers cache, or the host's own.
func probeKernel() string {
	if k := os.Getenv(ProbeKernelEnv); k != "" {
		return k
	}
	var candidates []string
	if home, err := os.UserHomeDir(); err == nil {
		m, _ := filepath.Glob(filepath.Join(home, ".cache", "ballast", "test-debs", "vmlinuz-*"))
		candidates = append(candidates, m...)
	}
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	candidates = append(candidates, m...)
	for _, c := range candidates {
		if f, err := os.Open(c); err == nil {
			f.Close()
			return c
		}
	}
	return ""
}

// probeKVM runs QEMU with KVM. With a kernel, it must boot far enough to
// panic on its missing root and end QEMU (-no-reboot); without one,
// SeaBIOS must print to its debug port.
func probeKVM(ctx context.Context, arch Arch) probeResult {
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	qemu := "qemu-system-x86_64"
	machine := "q35,accel=kvm"
	if arch == ARM64 {
		qemu, machine = "qemu-system-aarch64", "virt,accel=kvm"
	}
	a := []string{"-nodefaults", "-display", "none", "-no-reboot", "-machine", machine, "-cpu", "host", "-m", "256"}
	kernel := probeKernel()
	var want string
	if kernel != "" {
		console := "ttyS0"
		if arch == ARM64 {
			console = "ttyAMA0"
		}
		a = append(a, "-serial", "stdio", "-kernel", kernel,
			"-append", "console="+console+" panic=-1 root=/dev/ballast-kvm-probe")
		want = "Kernel panic"
	} else if arch == AMD64 {
		a = append(a, "-chardev", "stdio,id=dbg", "-device", "isa-debugcon,iobase=0x402,chardev=dbg")
		want = "SeaBIOS"
	} else {
		return probeResult{"tcg", "no kernel to probe KVM with (set $" + ProbeKernelEnv + ")"}
	}
	cmd := exec.CommandContext(ctx, qemu, a...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	got := out.String()
	switch {
	case strings.Contains(got, "KVM internal error"):
		return probeResult{"tcg", "KVM probe: KVM internal error"}
	case ctx.Err() != nil && kernel != "":
		return probeResult{"tcg", fmt.Sprintf("KVM probe: %s did not panic within %v", kernel, ProbeTimeout)}
	case kernel != "" && err == nil && strings.Contains(got, want):
		return probeResult{"kvm", "KVM probe booted " + kernel}
	case kernel == "" && strings.Contains(got, want):
		return probeResult{"kvm", "KVM probe ran SeaBIOS (no kernel to probe with)"}
	default:
		return probeResult{"tcg", fmt.Sprintf("KVM probe failed: %v: %s", err, lastLine(got))}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
