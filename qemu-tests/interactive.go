package qemutest

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"syscall"
)

// Ports `ballast run` forwards when Options.Forwards does not name them.
const (
	SSHPort        = 22
	KubernetesPort = 6443
)

// RunInteractive boots opts for a person: the serial console and QEMU's
// monitor on stdin/stdout (Ctrl-A X quits, Ctrl-A C is the monitor),
// SSH and the Kubernetes API forwarded to free host ports, which are
// printed before QEMU starts. The guest may reboot in place. It returns
// when QEMU exits or ctx ends.
func RunInteractive(ctx context.Context, opts Options, stdin io.Reader, stdout io.Writer) error {
	fw := map[int]int{}
	for g, h := range opts.Forwards {
		fw[g] = h
	}
	for _, g := range []int{SSHPort, KubernetesPort} {
		if _, ok := fw[g]; !ok {
			fw[g] = 0
		}
	}
	opts.Forwards = fw
	m, err := prepare(ctx, opts, true)
	if err != nil {
		return err
	}
	defer m.Close()

	guests := make([]int, 0, len(m.lay.HostPorts))
	for g := range m.lay.HostPorts {
		guests = append(guests, g)
	}
	sort.Ints(guests)
	fmt.Fprintf(stdout, "ballast: booting with %s (%s); console below, Ctrl-A X quits\n", m.lay.Accel, m.accelWhy)
	for _, g := range guests {
		h := m.lay.HostPorts[g]
		switch g {
		case SSHPort:
			fmt.Fprintf(stdout, "ballast: SSH:            ssh -p %d root@127.0.0.1\n", h)
		case KubernetesPort:
			fmt.Fprintf(stdout, "ballast: Kubernetes API: https://127.0.0.1:%d (guest port 6443)\n", h)
		default:
			fmt.Fprintf(stdout, "ballast: guest port %d:   127.0.0.1:%d\n", g, h)
		}
	}

	a := m.Args()
	cmd := exec.CommandContext(ctx, a[0], a[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Given the terminal's *os.File, QEMU puts it in raw mode itself.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stdout
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("qemutest: %s: %w", a[0], err)
	}
	return nil
}
