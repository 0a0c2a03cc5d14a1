package qemutest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ballast-os/ballast/init/agent"
)

// Machine is a QEMU virtual machine booting a ballast image. Its disk
// (an overlay unless Options.Writable) lives as long as the Machine, so
// Reboot and Restart boot the same disk again. Close it when done.
type Machine struct {
	opts      Options
	lay       layout
	accelWhy  string
	logPath   string
	log       *os.File
	installed bool // lay.Dir was made by Start and is removed by Close

	mu     sync.Mutex
	run    *run          // the current (or last) QEMU process
	client *agent.Client // connected to run's agent socket, or nil
}

// run is one QEMU process: one boot.
type run struct {
	cmd     *exec.Cmd
	console *console
	stderr  *tailBuffer
	exited  chan struct{} // closed when QEMU has exited
	err     error         // cmd.Wait's answer, once exited
	started time.Time
	booted  atomic.Bool // a line of the kernel or the init has been seen
}

// kvmStall is how long a guest under KVM may show nothing of its kernel
// or init before it is taken for stopped: nested KVM here has also hung
// silently right after GRUB, with no "KVM internal error" to see.
const kvmStall = 60 * time.Second

// kvmStalled says whether the run has shown no line of the kernel or the
// init (a printk timestamp, "Linux version", "ballast:") for kvmStall.
func (r *run) kvmStalled() bool {
	if r.booted.Load() {
		return false
	}
	lines, _, _, _ := r.console.snapshot(0)
	for _, l := range lines {
		if strings.HasPrefix(l, "ballast:") || strings.HasPrefix(l, "[ ") || strings.Contains(l, "Linux version") {
			r.booted.Store(true)
			return false
		}
	}
	return time.Since(r.started) > kvmStall
}

func (r *run) hasExited() bool {
	select {
	case <-r.exited:
		return true
	default:
		return false
	}
}

// Start prepares a machine from opts and starts QEMU. It returns once
// QEMU runs; use the Wait methods to follow the boot.
func Start(ctx context.Context, opts Options) (*Machine, error) {
	m, err := prepare(ctx, opts, false)
	if err != nil {
		return nil, err
	}
	if err := m.start(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// prepare makes the machine's directory and files without starting it.
func prepare(ctx context.Context, opts Options, interactive bool) (m *Machine, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ what, path *string }{{ptr("Options.Disk"), &o.Disk}, {ptr("Options.ISO"), &o.ISO}, {ptr("Options.Kernel"), &o.Kernel}, {ptr("Options.Initrd"), &o.Initrd}} {
		if *f.path, err = absPath(*f.what, *f.path); err != nil {
			return nil, err
		}
	}
	if _, err := exec.LookPath(o.QEMU); err != nil {
		return nil, fmt.Errorf("qemutest: %w (install Debian's qemu-system-x86, qemu-system-arm, qemu-utils, ovmf and qemu-efi-aarch64 packages)", err)
	}
	if o.Firmware == UEFI {
		if _, err := os.Stat(o.FirmwareCode); err != nil {
			return nil, fmt.Errorf("qemutest: UEFI firmware: %w (install Debian's ovmf or qemu-efi-aarch64 package)", err)
		}
	}
	accel, why, err := SelectAccel(ctx, o.Arch, o.Accel)
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "ballast-qemu-")
	if err != nil {
		return nil, fmt.Errorf("qemutest: %w", err)
	}
	m = &Machine{opts: o, accelWhy: why, installed: true}
	m.lay = layout{
		Accel:       accel,
		Dir:         dir,
		AgentSock:   filepath.Join(dir, "agent.sock"),
		QMPSock:     filepath.Join(dir, "qmp.sock"),
		HostPorts:   map[int]int{},
		Interactive: interactive,
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()

	if o.Disk != "" {
		if o.Writable {
			m.lay.DiskPath, m.lay.DiskFmt = o.Disk, o.DiskFormat
		} else {
			m.lay.DiskPath, m.lay.DiskFmt = filepath.Join(dir, "disk.qcow2"), "qcow2"
			if err := createOverlay(ctx, o.Disk, o.DiskFormat, m.lay.DiskPath, o.DiskSize); err != nil {
				return nil, err
			}
		}
	}
	if o.Firmware == UEFI {
		m.lay.VarsPath = filepath.Join(dir, "efivars.fd")
		if err := copyFile(o.FirmwareVars, m.lay.VarsPath); err != nil {
			return nil, fmt.Errorf("qemutest: UEFI variables: %w", err)
		}
	}
	if o.UserData != nil {
		m.lay.UserData = filepath.Join(dir, "user-data")
		if err := os.WriteFile(m.lay.UserData, o.UserData, 0o600); err != nil {
			return nil, fmt.Errorf("qemutest: %w", err)
		}
	}
	for guest, host := range o.Forwards {
		if guest <= 0 || guest > 65535 || host < 0 || host > 65535 {
			return nil, fmt.Errorf("qemutest: Options.Forwards %d -> %d: not a port", guest, host)
		}
		if host == 0 {
			if host, err = freePort(); err != nil {
				return nil, err
			}
		}
		m.lay.HostPorts[guest] = host
	}
	if _, err := os.Stat("/dev/vhost-vsock"); err == nil {
		var b [4]byte
		rand.Read(b[:])
		// CIDs 0-2 are reserved; a random one keeps parallel machines apart.
		m.lay.VsockCID = 3 + binary.LittleEndian.Uint32(b[:])%(1<<30)
	}
	m.logPath = o.ConsoleLog
	if m.logPath == "" {
		m.logPath = filepath.Join(dir, "console.log")
	}
	if m.log, err = os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return nil, fmt.Errorf("qemutest: console log: %w", err)
	}
	return m, nil
}

func ptr(s string) *string { return &s }

func createOverlay(ctx context.Context, base, format, overlay string, size int64) error {
	a := []string{"create", "-q", "-f", "qcow2", "-b", base, "-F", format, overlay}
	if size > 0 {
		a = append(a, strconv.FormatInt(size, 10))
	}
	out, err := exec.CommandContext(ctx, "qemu-img", a...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemutest: overlay on %s: qemu-img: %w: %s", base, err, out)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// freePort asks the kernel for a free port on 127.0.0.1. Another process
// could take it before QEMU does; QEMU then fails to start and says so.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("qemutest: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Args is QEMU's command line for this machine, binary first.
func (m *Machine) Args() []string {
	return append([]string{m.opts.QEMU}, args(m.opts, m.lay)...)
}

// start starts a QEMU process on the machine's disk.
func (m *Machine) start() error {
	con, err := newConsole(append(append([]string(nil), DefaultFatalPatterns...), m.opts.FatalPatterns...))
	if err != nil {
		return fmt.Errorf("qemutest: Options.FatalPatterns: %w", err)
	}
	os.Remove(m.lay.AgentSock)
	os.Remove(m.lay.QMPSock)
	a := m.Args()
	cmd := exec.Command(a[0], a[1:]...)
	// QEMU must not outlive the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r := &run{cmd: cmd, console: con, stderr: &tailBuffer{max: 16 << 10}, exited: make(chan struct{}), started: time.Now()}
	cmd.Stderr = r.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("qemutest: %w", err)
	}
	fmt.Fprintf(m.log, "\n### qemutest: starting (%s: %s)\n", m.lay.Accel, m.accelWhy)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemutest: starting %s: %w", a[0], err)
	}
	go func() {
		con.copyFrom(stdout, m.log)
		r.err = cmd.Wait()
		close(r.exited)
	}()
	m.mu.Lock()
	if m.client != nil {
		m.client.Close()
		m.client = nil
	}
	m.run = r
	m.mu.Unlock()
	return nil
}

func (m *Machine) current() *run {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.run
}

// fail builds the error every wait returns: op, cause and evidence.
func (m *Machine) fail(op string, r *run, cause error) error {
	e := &MachineError{Op: op, Err: cause, LogPath: m.logPath}
	if r != nil {
		e.Fatal, _, _ = r.console.fatalReport()
		e.Console = r.console.tail(TailLines)
		e.Stderr = r.stderr.String()
		if errors.Is(cause, ErrExited) {
			e.Err = fmt.Errorf("%w (%v)", ErrExited, r.err)
			if r.err == nil {
				e.Err = fmt.Errorf("%w (status 0)", ErrExited)
			}
		}
	}
	return e
}

// wait calls check until it is done, the console shows a fatal line,
// QEMU exits or ctx ends, checking again at every console line and every
// poll.
func (m *Machine) wait(ctx context.Context, op string, poll time.Duration, check func(ctx context.Context, r *run) (bool, error)) error {
	for {
		r := m.current()
		if r == nil {
			return m.fail(op, nil, errors.New("machine not started"))
		}
		_, settled, settleIn := r.console.fatalReport()
		if settled {
			return m.fail(op, r, ErrConsoleFatal)
		}
		_, _, changed, _ := r.console.snapshot(0)
		exited := r.hasExited()
		if done, err := check(ctx, r); done {
			if err != nil {
				return m.fail(op, r, err)
			}
			return nil
		}
		if exited {
			return m.fail(op, r, ErrExited)
		}
		if ctx.Err() != nil {
			return m.fail(op, r, ctx.Err())
		}
		stalled := m.lay.Accel == "kvm" && r.kvmStalled()
		if strings.Contains(r.stderr.String(), "KVM internal error") || stalled {
			// The VM is stopped and will never get further. When the
			// probe chose KVM, it was wrong: boot again with TCG, and
			// remember that for this process.
			if m.lay.Accel != "kvm" || m.accelWhy == "Options.Accel" || m.accelWhy == "$"+AccelEnv {
				return m.fail(op, r, fmt.Errorf("KVM failed to run the guest: set %s=tcg", AccelEnv))
			}
			why := "KVM internal error while booting; the probe had said: " + m.accelWhy
			if stalled {
				why = fmt.Sprintf("under KVM nothing after the boot loader in %v; the probe had said: %s", kvmStall, m.accelWhy)
			}
			probes.Lock()
			probes.m[string(m.opts.Arch)] = probeResult{"tcg", why}
			probes.Unlock()
			m.Kill()
			m.lay.Accel, m.accelWhy = "tcg", why
			if err := m.start(); err != nil {
				return m.fail(op, r, err)
			}
			continue
		}
		// QEMU's stderr does not signal: look at least every second.
		next := time.Second
		if poll > 0 && poll < next {
			next = poll
		}
		if settleIn > 0 && settleIn < next {
			next = settleIn
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
		case <-changed:
		case <-r.exited:
		case <-t.C:
		}
		t.Stop()
	}
}

// WaitFor calls check every poll until it reports done, and fails at once,
// with the console lines, when the console shows a kernel panic or another
// fatal line or QEMU exits: a long wait on something inside the guest
// (an API, a service) must not turn a crash into a time-out. check's
// error, returned with done, ends the wait with that error.
func (m *Machine) WaitFor(ctx context.Context, op string, poll time.Duration, check func(ctx context.Context) (done bool, err error)) error {
	var last time.Time
	return m.wait(ctx, op, poll, func(ctx context.Context, r *run) (bool, error) {
		if !last.IsZero() && time.Since(last) < poll {
			return false, nil
		}
		last = time.Now()
		return check(ctx)
	})
}

// WaitConsole waits for a console line of this boot matching re and
// returns it.
func (m *Machine) WaitConsole(ctx context.Context, re *regexp.Regexp) (string, error) {
	var found string
	var last *run
	from := 0
	err := m.wait(ctx, "WaitConsole "+re.String(), 0, func(_ context.Context, r *run) (bool, error) {
		if r != last {
			last, from = r, 0
		}
		lines, next, _, _ := r.console.snapshot(from)
		from = next
		for _, l := range lines {
			if re.MatchString(l) {
				found = l
				return true, nil
			}
		}
		return false, nil
	})
	return found, err
}

// agentAttempt bounds one connection attempt or ping of the agent.
const agentAttempt = 3 * time.Second

// WaitAgent waits until the init's agent answers a ping on the
// virtio-serial port and returns the client, which stays the machine's
// until QEMU exits.
func (m *Machine) WaitAgent(ctx context.Context) (*agent.Client, error) {
	var c *agent.Client
	err := m.wait(ctx, "WaitAgent", 500*time.Millisecond, func(ctx context.Context, r *run) (bool, error) {
		var err error
		c, err = m.agentAttempt(ctx, r)
		return err == nil, nil
	})
	return c, err
}

// agentAttempt connects (if need be) and pings once.
func (m *Machine) agentAttempt(ctx context.Context, r *run) (*agent.Client, error) {
	m.mu.Lock()
	c := m.client
	if c != nil && c.Err() != nil {
		c, m.client = nil, nil
	}
	m.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, agentAttempt)
	defer cancel()
	if c == nil {
		var err error
		c, err = agent.Dial(actx, "unix", m.lay.AgentSock)
		if err != nil {
			return nil, err
		}
		m.mu.Lock()
		if m.run != r {
			m.mu.Unlock()
			c.Close()
			return nil, ErrExited
		}
		m.client = c
		m.mu.Unlock()
	}
	if err := c.Ping(actx); err != nil {
		return nil, err
	}
	return c, nil
}

// WaitReady waits until the agent reports the boot ready and returns
// that status.
func (m *Machine) WaitReady(ctx context.Context) (*agent.Status, error) {
	var st *agent.Status
	err := m.wait(ctx, "WaitReady", time.Second, func(ctx context.Context, r *run) (bool, error) {
		c, err := m.agentAttempt(ctx, r)
		if err != nil {
			return false, nil
		}
		actx, cancel := context.WithTimeout(ctx, agentAttempt)
		defer cancel()
		s, err := c.Status(actx)
		if err == nil && s.Boot.Ready {
			st = s
			return true, nil
		}
		return false, nil
	})
	return st, err
}

// Agent returns a client for the agent, waiting for it as WaitAgent.
func (m *Machine) Agent(ctx context.Context) (*agent.Client, error) {
	return m.WaitAgent(ctx)
}

// Status asks the agent for the node's status.
func (m *Machine) Status(ctx context.Context) (*agent.Status, error) {
	c, err := m.WaitAgent(ctx)
	if err != nil {
		return nil, err
	}
	s, err := c.Status(ctx)
	if err != nil {
		return nil, m.fail("Status", m.current(), err)
	}
	return s, nil
}

// Exec runs argv on the node through the agent (privileged). A non-zero
// exit is not an error; see ExecResult.ExitCode.
func (m *Machine) Exec(ctx context.Context, argv ...string) (*agent.ExecResult, error) {
	c, err := m.WaitAgent(ctx)
	if err != nil {
		return nil, err
	}
	p := agent.ExecParams{Argv: argv}
	if dl, ok := ctx.Deadline(); ok {
		// The guest's own limit (60 s unless told) follows the caller's.
		p.Timeout = max(1, int(time.Until(dl).Seconds()))
	}
	res, err := c.Exec(ctx, p)
	if err != nil {
		return nil, m.fail(fmt.Sprintf("Exec %q", argv), m.current(), err)
	}
	return res, nil
}

var (
	powerDown = regexp.MustCompile(`reboot: Power down`)
	restarted = regexp.MustCompile(`reboot: Restarting system`)
)

// Shutdown powers the node off, through the agent, or the ACPI power
// button when the agent does not answer, and waits for QEMU to exit. At
// ctx's end QEMU is killed and Shutdown fails: a node that does not
// power off cleanly is a bug.
func (m *Machine) Shutdown(ctx context.Context) error {
	r := m.current()
	if r == nil || r.hasExited() {
		return m.checkExit("Shutdown", r, powerDown)
	}
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	c, err := m.agentAttempt(actx, r)
	if err == nil {
		err = c.Poweroff(actx)
	}
	cancel()
	if err != nil {
		if qerr := qmpPowerdown(ctx, m.lay.QMPSock); qerr != nil {
			m.Kill()
			return m.fail("Shutdown", r, fmt.Errorf("agent: %v; ACPI power button: %w", err, qerr))
		}
	}
	return m.waitExit(ctx, "Shutdown", r, powerDown)
}

// PowerButton presses the ACPI power button, as a person would.
func (m *Machine) PowerButton(ctx context.Context) error {
	if err := qmpPowerdown(ctx, m.lay.QMPSock); err != nil {
		return m.fail("PowerButton", m.current(), err)
	}
	return nil
}

// waitExit waits for QEMU to exit, killing it at ctx's end, and checks
// the console for want ("reboot: Power down" or "Restarting system").
func (m *Machine) waitExit(ctx context.Context, op string, r *run, want *regexp.Regexp) error {
	select {
	case <-r.exited:
	case <-ctx.Done():
		m.Kill()
		return m.fail(op, r, fmt.Errorf("QEMU still running, killed: %w", ctx.Err()))
	}
	return m.checkExit(op, r, want)
}

func (m *Machine) checkExit(op string, r *run, want *regexp.Regexp) error {
	if r == nil {
		return m.fail(op, nil, errors.New("machine not started"))
	}
	if r.err != nil {
		return m.fail(op, r, ErrExited)
	}
	if !r.console.contains(want) {
		return m.fail(op, r, fmt.Errorf("QEMU exited but the console never said %q", want))
	}
	return nil
}

// Reboot asks the agent to reboot the node, waits for QEMU to exit (it
// runs with -no-reboot) and starts it again on the same disk.
func (m *Machine) Reboot(ctx context.Context) error {
	r := m.current()
	c, err := m.WaitAgent(ctx)
	if err != nil {
		return err
	}
	if err := c.Reboot(ctx); err != nil {
		return m.fail("Reboot", r, err)
	}
	if err := m.waitExit(ctx, "Reboot", r, restarted); err != nil {
		return err
	}
	return m.start()
}

// SetUserData replaces the cloud-config passed through fw_cfg from the
// next start of QEMU on (Reboot, Restart); the machine must have been
// started with Options.UserData.
func (m *Machine) SetUserData(doc []byte) error {
	if m.lay.UserData == "" {
		return errors.New("qemutest: SetUserData on a machine started without Options.UserData")
	}
	return os.WriteFile(m.lay.UserData, doc, 0o600)
}

// Restart starts QEMU again on the same disk after it exited (after
// Shutdown, say).
func (m *Machine) Restart(ctx context.Context) error {
	r := m.current()
	if r != nil && !r.hasExited() {
		return m.fail("Restart", r, errors.New("QEMU is still running"))
	}
	return m.start()
}

// Wait waits for QEMU to exit by itself.
func (m *Machine) Wait(ctx context.Context) error {
	r := m.current()
	select {
	case <-r.exited:
		if r.err != nil {
			return m.fail("Wait", r, ErrExited)
		}
		return nil
	case <-ctx.Done():
		return m.fail("Wait", r, ctx.Err())
	}
}

// Kill ends QEMU at once and waits for it.
func (m *Machine) Kill() {
	r := m.current()
	if r == nil {
		return
	}
	if !r.hasExited() {
		r.cmd.Process.Kill()
	}
	<-r.exited
}

// Close kills QEMU if it still runs and removes the machine's directory
// (overlay, sockets, and the console log unless Options.ConsoleLog).
func (m *Machine) Close() error {
	m.Kill()
	m.mu.Lock()
	if m.client != nil {
		m.client.Close()
		m.client = nil
	}
	m.mu.Unlock()
	if m.log != nil {
		m.log.Close()
	}
	if m.installed && m.lay.Dir != "" {
		return os.RemoveAll(m.lay.Dir)
	}
	return nil
}

// HostPort is the host port forwarded to the guest's port, 0 if none.
func (m *Machine) HostPort(guest int) int { return m.lay.HostPorts[guest] }

// Accel is the accelerator QEMU runs with, and why it was chosen.
func (m *Machine) Accel() (accel, why string) { return m.lay.Accel, m.accelWhy }

// ConsoleLog is the path of the console log file.
func (m *Machine) ConsoleLog() string { return m.logPath }

// Console returns the last n console lines of the current boot.
func (m *Machine) Console(n int) []string {
	if r := m.current(); r != nil {
		return r.console.tail(n)
	}
	return nil
}

// Dir is the machine's own directory: overlay, sockets, firmware vars.
func (m *Machine) Dir() string { return m.lay.Dir }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
