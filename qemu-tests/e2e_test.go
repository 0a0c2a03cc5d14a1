package qemutest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/init/agent"
	"golang.org/x/crypto/ssh"
)

// End-to-end scenarios: the images `make image` builds, booted in QEMU
// with a cloud-config passed through fw_cfg, checked through the agent,
// the console and SSH.

// Environment variables naming the images under test.
const (
	ImageRawEnv = "BALLAST_TEST_IMAGE_RAW"
	ImageISOEnv = "BALLAST_TEST_IMAGE_ISO"
)

// bootDeadline bounds one boot to ready under TCG on a busy machine.
const bootDeadline = 10 * time.Minute

// testImage finds an image: $env, else out/<name> at the repository
// root. A missing image fails the test and says how to build one.
func testImage(t testing.TB, env, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU: not in -short (make unit)")
	}
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("$%s: %v", env, err)
		}
		return p
	}
	p, _ := filepath.Abs(filepath.Join("..", "out", name))
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no image to test: %s is missing and $%s is not set.\n"+
			"Build it with `make image` (go run ./cmd/ballast build) at the repository root, "+
			"or point $%s at an image.", p, env, env)
	}
	return p
}

// scenario is one boot configuration and what it should bring.
type scenario struct {
	hostname string
	key      ssh.Signer
	priv     ed25519.PrivateKey
	pubkey   string
	userData []byte
}

func newScenario(t testing.TB, hostname string) scenario {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " qemutest"
	ud := fmt.Sprintf(`#cloud-config
hostname: %s
ssh_authorized_keys:
  - %s
ballast:
  # These scenarios test the OS with 1 GiB; TestE2ERuntime boots the runtime.
  runtime: none
  agent:
    privileged: true
write_files:
  - path: /etc/qemutest/hello.conf
    content: |
      written by cloud-config
    permissions: "0640"
    owner: root:daemon
  - path: /root/qemutest-script
    content: "echo hi\n"
    permissions: "0755"
runcmd:
  - echo ran >> /var/lib/ballast/qemutest-runcmd
`, hostname, authorized)
	return scenario{hostname: hostname, key: signer, priv: priv, pubkey: authorized, userData: []byte(ud)}
}

func startMachine(t *testing.T, opts Options) *Machine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	accel, why := m.Accel()
	t.Logf("QEMU with %s (%s); console log %s", accel, why, m.ConsoleLog())
	return m
}

func waitReady(t *testing.T, m *Machine) *agent.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	st, err := m.WaitReady(ctx)
	if err != nil {
		t.Fatalf("%v", err)
	}
	logTimings(t, st)
	return st
}

// logTimings records the boot's stage timings in the test log.
func logTimings(t testing.TB, st *agent.Status) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "boot %d (%s): ready %d ms after kernel start", st.Boot.Number, st.Boot.ID, st.Boot.ReadyAfterMS)
	for _, s := range st.Boot.Stages {
		fmt.Fprintf(&b, "\n  %-10s %-16s start %6d ms  took %6d ms", s.Phase, s.Name, s.StartMS, s.DurationMS)
		if s.Error != "" {
			b.WriteString("  error: " + s.Error)
		}
		if s.Skipped {
			b.WriteString("  (skipped)")
		}
	}
	t.Log(b.String())
}

func nodeExec(t *testing.T, m *Machine, argv ...string) string {
	t.Helper()
	// Generous: `k3s kubectl` on an emulated node whose API server is busy
	// has taken over a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := m.Exec(ctx, argv...)
	if err != nil {
		t.Fatalf("exec %q: %v", argv, err)
	}
	if res.ExitCode != 0 {
		killed := ""
		if res.ExitCode == -1 {
			// Killed by a signal: the kernel's log says whether it was
			// the OOM killer.
			killed = "\nkilled by a signal; the guest kernel's last messages:\n" + kernelTail(m)
		}
		t.Fatalf("exec %q: exit %d\nstdout: %s\nstderr: %s%s", argv, res.ExitCode, res.Stdout, res.Stderr, killed)
	}
	return res.Stdout
}

// kernelTail is the end of the guest's kernel log, for a failure message.
func kernelTail(m *Machine) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := m.Exec(ctx, "sh", "-c", "dmesg | tail -n 40")
	if err != nil {
		return err.Error()
	}
	return res.Stdout
}

// checkBoot asserts what every boot with the scenario's config brings.
func checkBoot(t *testing.T, m *Machine, sc scenario, st *agent.Status) {
	t.Helper()
	want := map[string]bool{}
	for _, n := range []string{"find-root", "mount-root", "handoff", "cloud-config", "hostname", "network", "users", "write-files", "services", "runcmd"} {
		want[n] = true
	}
	for _, s := range st.Boot.Stages {
		if s.Error != "" {
			t.Errorf("stage %s failed: %s", s.Name, s.Error)
		}
		if s.DurationMS < 0 || s.StartMS < 0 {
			t.Errorf("stage %s has a negative timing: start %d, took %d", s.Name, s.StartMS, s.DurationMS)
		}
		delete(want, s.Name)
	}
	for n := range want {
		t.Errorf("stage %s missing from the status", n)
	}
	if st.Boot.ReadyAfterMS <= 0 {
		t.Errorf("ReadyAfterMS = %d, want the time to ready", st.Boot.ReadyAfterMS)
	}
	if len(st.Config.Errors) > 0 {
		t.Errorf("config errors: %q", st.Config.Errors)
	}
	if st.Hostname != sc.hostname {
		t.Errorf("status hostname %q, want %q", st.Hostname, sc.hostname)
	}
	if m.opts.Arch == AMD64 {
		checkWatchdog(t, m, st)
	}
	if got := strings.TrimSpace(nodeExec(t, m, "hostname")); got != sc.hostname {
		t.Errorf("hostname on the node: %q, want %q", got, sc.hostname)
	}
	// DHCP from QEMU's user-mode network: 10.0.2.15.
	var dhcp bool
	for _, ifc := range st.Network {
		for _, a := range ifc.Addresses {
			if strings.HasPrefix(a, "10.0.2.") && ifc.Method == "dhcp" {
				dhcp = true
			}
		}
	}
	if !dhcp {
		t.Errorf("no DHCP address from 10.0.2.0/24 in %+v", st.Network)
	}
	if got := nodeExec(t, m, "stat", "-c", "%a %U:%G", "/etc/qemutest/hello.conf"); strings.TrimSpace(got) != "640 root:daemon" {
		t.Errorf("hello.conf mode and owner: %q, want 640 root:daemon", got)
	}
	if got := nodeExec(t, m, "cat", "/etc/qemutest/hello.conf"); got != "written by cloud-config\n" {
		t.Errorf("hello.conf: %q", got)
	}
	if got := nodeExec(t, m, "stat", "-c", "%a", "/root/qemutest-script"); strings.TrimSpace(got) != "755" {
		t.Errorf("qemutest-script mode %q, want 755", got)
	}
	// The configured key logs in over SSH and runs a command.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out string
	var err error
	for ctx.Err() == nil { // sshd may start a moment after ready
		if out, err = m.SSH(ctx, sc.key, "hostname && id -u"); err == nil {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		t.Errorf("SSH with the configured key: %v", err)
	} else if out != sc.hostname+"\n0\n" {
		t.Errorf("SSH command output %q, want hostname and uid 0", out)
	}
	if t.Failed() {
		t.Logf("sshd log:\n%s", nodeExec(t, m, "tail", "-n", "30", "/var/log/sshd.log"))
	}
}

// watchdogLine is the init's console line for the harness's i6300esb.
var watchdogLine = regexp.MustCompile(`^ballast: watchdog: i6300ESB timer, 60 s\b`)

// checkWatchdog asserts that the init armed QEMU's i6300esb with a 60 s
// timeout and keeps it alive: the status says so, the kernel's sysfs
// shows the timer active with that timeout, and the keep-alives go on
// (the count grows within two ping intervals).
func checkWatchdog(t *testing.T, m *Machine, st *agent.Status) {
	t.Helper()
	w := st.Watchdog
	if w == nil {
		t.Errorf("status reports no watchdog; QEMU has an i6300esb")
		return
	}
	if w.Device != "/dev/watchdog0" || w.Identity != "i6300ESB timer" || w.TimeoutS != 60 || w.State != "armed" || w.Pings < 1 {
		t.Errorf("status watchdog %+v, want /dev/watchdog0, i6300ESB timer, 60 s, armed, pinged", *w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	line, err := m.WaitConsole(ctx, watchdogLine)
	if err != nil {
		t.Errorf("console line %q: %v", watchdogLine, err)
	}
	sysfs := nodeExec(t, m, "sh", "-c", "cd /sys/class/watchdog/watchdog0 && cat identity state timeout")
	if sysfs != "i6300ESB timer\nactive\n60\n" {
		t.Errorf("guest sysfs identity, state, timeout: %q, want i6300ESB timer, active, 60", sysfs)
	}
	// Keep-alives every 15 s: within a minute the count grows.
	var last *agent.Watchdog
	err = m.WaitFor(ctx, "a watchdog keep-alive", 2*time.Second, func(ctx context.Context) (bool, error) {
		s, err := m.Status(ctx)
		if err != nil || s.Watchdog == nil {
			return false, nil
		}
		last = s.Watchdog
		return last.Pings > w.Pings && last.LastPing.After(w.LastPing), nil
	})
	if err != nil {
		t.Errorf("no keep-alive after %d at %s: %v (last: %+v)", w.Pings, w.LastPing, err, last)
		return
	}
	t.Logf("console %q; status %+v", line, *last)
}

func runcmdLines(t *testing.T, m *Machine) int {
	t.Helper()
	return strings.Count(nodeExec(t, m, "cat", "/var/lib/ballast/qemutest-runcmd"), "ran\n")
}

// persistSize is the size of the file system on /persist, in bytes.
func persistSize(t *testing.T, m *Machine) int64 {
	t.Helper()
	// df right-aligns its "1B-blocks" header: the size is the last field.
	out := nodeExec(t, m, "df", "-B1", "--output=size", "/persist")
	f := strings.Fields(out)
	var size int64
	if len(f) > 0 {
		fmt.Sscan(f[len(f)-1], &size)
	}
	if size == 0 {
		t.Fatalf("could not read the size of /persist from df: %q", out)
	}
	return size
}

func testRawDisk(t *testing.T, fw Firmware) {
	testRawDiskImage(t, AMD64, fw, testImage(t, ImageRawEnv, "ballast-x86_64.img"))
}

// testRawDiskImage boots img twice on a disk grown by 2 GiB, then powers off.
func testRawDiskImage(t *testing.T, arch Arch, fw Firmware, img string) {
	sc := newScenario(t, "e2e-"+string(arch)+"-"+string(fw))
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	const grow = 2 << 30
	m := startMachine(t, Options{
		Arch: arch, Disk: img, Firmware: fw, DiskSize: fi.Size() + grow,
		UserData: sc.userData, Forwards: map[int]int{22: 0},
	})

	// First boot.
	st := waitReady(t, m)
	checkBoot(t, m, sc, st)
	if !st.Boot.FirstBoot || st.Boot.Number != 1 {
		t.Errorf("first boot: FirstBoot %v, Number %d; want true, 1", st.Boot.FirstBoot, st.Boot.Number)
	}
	size := persistSize(t, m)
	if size < grow*8/10 {
		t.Errorf("/persist is %d bytes on a disk grown by %d: the data partition was not grown", size, int64(grow))
	}
	if n := runcmdLines(t, m); n != 1 {
		t.Errorf("runcmd ran %d times on the first boot, want 1", n)
	}
	nodeExec(t, m, "sh", "-c", "echo kept > /var/lib/ballast/qemutest-marker && sync")

	// Second boot on the same disk.
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	if err := m.Reboot(ctx); err != nil {
		t.Fatalf("Reboot: %v", err)
	}
	st = waitReady(t, m)
	checkBoot(t, m, sc, st)
	if st.Boot.FirstBoot || st.Boot.Number != 2 {
		t.Errorf("second boot: FirstBoot %v, Number %d; want false, 2", st.Boot.FirstBoot, st.Boot.Number)
	}
	if n := runcmdLines(t, m); n != 1 {
		t.Errorf("runcmd ran %d times over two boots, want exactly 1", n)
	}
	if got := nodeExec(t, m, "cat", "/var/lib/ballast/qemutest-marker"); got != "kept\n" {
		t.Errorf("data written before the reboot: %q, want \"kept\\n\"", got)
	}
	if s2 := persistSize(t, m); s2 != size {
		t.Errorf("/persist changed size across the reboot: %d -> %d", size, s2)
	}

	// Clean poweroff.
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestE2ERawBIOS(t *testing.T) { useCores(t, prioShort, 1); testRawDisk(t, BIOS) }
func TestE2ERawUEFI(t *testing.T) { useCores(t, prioShort, 1); testRawDisk(t, UEFI) }

// TestE2EISO boots the hybrid ISO live, with no disk.
func TestE2EISO(t *testing.T) {
	useCores(t, prioShort, 1)
	iso := testImage(t, ImageISOEnv, "ballast-x86_64.iso")
	bootLive(t, "e2e-live", Options{ISO: iso})
}

// bootLive boots a live system (no data partition) with a scenario's
// config, checks what every boot brings, and powers it off.
func bootLive(t *testing.T, hostname string, opts Options) {
	t.Helper()
	sc := newScenario(t, hostname)
	opts.UserData, opts.Forwards = sc.userData, map[int]int{22: 0}
	m := startMachine(t, opts)
	st := waitReady(t, m)
	checkBoot(t, m, sc, st)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestE2EBadConfig passes a cloud-config with a misspelt key and a bad
// value: the node still boots, reports both errors through the agent,
// and still powers off (through the ACPI button, as the agent is not
// privileged without a good config).
func TestE2EBadConfig(t *testing.T) {
	useCores(t, prioShort, 1)
	img := testImage(t, ImageRawEnv, "ballast-x86_64.img")
	bad := []byte("#cloud-config\nhostname: bad-config\nhostnme: typo\nwrite_files:\n  - path: /etc/x\n    permissions: \"999\"\n")
	m := startMachine(t, Options{Disk: img, UserData: bad})
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	st, err := m.WaitReady(ctx)
	if err != nil {
		t.Fatalf("a bad config must not stop the boot: %v", err)
	}
	logTimings(t, st)
	errs := strings.Join(st.Config.Errors, "\n")
	for _, want := range []string{"hostnme", "fw_cfg"} {
		if !strings.Contains(errs, want) {
			t.Errorf("config errors %q do not name %q", st.Config.Errors, want)
		}
	}
	if _, err := m.WaitConsole(ctx, regexp.MustCompile(`hostnme`)); err != nil {
		t.Errorf("the console does not report the bad key: %v", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestE2EISOAsUSBStick boots the hybrid ISO as a disk, the way it boots
// after `dd` to a USB stick: through the MBR's GRUB code under SeaBIOS,
// and through the EFI System partition entry under OVMF.
func TestE2EISOAsUSBStick(t *testing.T) {
	useCores(t, prioShort, 1)
	iso := testImage(t, ImageISOEnv, "ballast-x86_64.iso")
	for _, fw := range []Firmware{BIOS, UEFI} {
		t.Run(string(fw), func(t *testing.T) {
			bootLive(t, "e2e-usb-"+string(fw), Options{Disk: iso, Firmware: fw})
		})
	}
}

// TestE2EPowerButton presses the ACPI power button (QMP system_powerdown)
// and expects the init to stop its services and power the machine off.
func TestE2EPowerButton(t *testing.T) {
	useCores(t, prioShort, 1)
	img := testImage(t, ImageRawEnv, "ballast-x86_64.img")
	m := startMachine(t, Options{Disk: img, UserData: []byte("#cloud-config\nhostname: e2e-button\nballast:\n  runtime: none\n")})
	waitReady(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := m.PowerButton(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitConsole(ctx, regexp.MustCompile(`reboot: Power down`)); err != nil {
		t.Fatalf("no clean power-off after the power button: %v", err)
	}
	if err := m.Wait(ctx); err != nil {
		t.Fatalf("QEMU did not exit after the power-off: %v", err)
	}
}

// TestE2EPowerCommands: reboot and poweroff typed by a person logged in
// over SSH shut the node down cleanly (services stopped, data partition
// unmounted) and do what they say; before that, k3s check-config passes
// on the image.
func TestE2EPowerCommands(t *testing.T) {
	useCores(t, prioShort, 1)
	img := testImage(t, ImageRawEnv, "ballast-x86_64.img")
	sc := newScenario(t, "e2e-power")
	m := startMachine(t, Options{
		Disk:     img,
		UserData: fmt.Appendf(nil, "#cloud-config\nhostname: e2e-power\nssh_authorized_keys:\n  - %s\nballast:\n  runtime: none\n", sc.pubkey),
		Forwards: map[int]int{22: 0},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// run types cmd over SSH once sshd answers; the shutdown may close the
	// session before its output arrives, so only the console is checked.
	run := func(cmd string) {
		t.Helper()
		waitReady(t, m)
		err := m.WaitFor(ctx, "sshd", 2*time.Second, func(ctx context.Context) (bool, error) {
			_, err := m.SSH(ctx, sc.key, "true")
			return err == nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := m.SSH(ctx, sc.key, cmd)
		t.Logf("$ %s: %q (%v)", cmd, out, err)
	}
	// k3s check-config on the booted image: the runtime's binaries, cgroup
	// v2 controllers and the kernel's config (which the image carries for
	// it) are all there.
	waitReady(t, m)
	if err := m.WaitFor(ctx, "sshd", 2*time.Second, func(ctx context.Context) (bool, error) {
		_, err := m.SSH(ctx, sc.key, "true")
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := m.SSH(ctx, sc.key, "k3s check-config"); err != nil || !strings.Contains(out, "STATUS: pass") || !strings.Contains(out, "cgroups V2 mounted") {
		t.Errorf("k3s check-config: %v\n%s", err, out)
	}
	for _, c := range []struct{ cmd, action, kernel string }{
		{"reboot", "reboot", "reboot: Restarting system"},
		{"poweroff", "poweroff", "reboot: Power down"},
	} {
		run(c.cmd)
		if _, err := m.WaitConsole(ctx, regexp.MustCompile(`shutting down action=`+c.action)); err != nil {
			t.Fatalf("%s over SSH: no clean %s: %v", c.cmd, c.action, err)
		}
		if _, err := m.WaitConsole(ctx, regexp.MustCompile(regexp.QuoteMeta(c.kernel))); err != nil {
			t.Fatalf("%s over SSH: the kernel did not say %q: %v", c.cmd, c.kernel, err)
		}
		if err := m.Wait(ctx); err != nil {
			t.Fatalf("%s over SSH: QEMU did not exit: %v", c.cmd, err)
		}
		if c.cmd == "reboot" {
			if err := m.Restart(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestE2EConfigTrial: a config that parses but breaks the boot (a bootcmd
// that fails: the boot goes on, with a failed step) is on trial: it never becomes the last good config, the node
// reboots by itself when a trial boot is not healthy within its time-out,
// and after its boots the last good config is applied again.
func TestE2EConfigTrial(t *testing.T) {
	useCores(t, prioShort, 1)
	img := testImage(t, ImageRawEnv, "ballast-x86_64.img")
	const base = "#cloud-config\nballast:\n  runtime: none\n  agent: {privileged: true}\n"
	good := base + "hostname: trial-good\n"
	bad := base + "  config_trial: {boots: 2, timeout: 1m}\nhostname: trial-bad\nbootcmd: [\"exit 3\"]\n"
	m := startMachine(t, Options{Disk: img, UserData: []byte(good)})
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	// status waits for this boot's config step and the end of its steps
	// (ready, or failed by the bootcmd) and returns the status.
	status := func(what string, done func(*agent.Status) bool) *agent.Status {
		t.Helper()
		var st *agent.Status
		err := m.WaitFor(ctx, what, time.Second, func(ctx context.Context) (bool, error) {
			s, err := m.Status(ctx)
			if err != nil {
				return false, nil
			}
			st = s
			return done(s), nil
		})
		if err != nil {
			t.Fatalf("%s: %v (last status: %+v)", what, err, st)
		}
		return st
	}
	stepsDone := func(st *agent.Status) bool {
		for _, s := range st.Boot.Stages {
			if s.Name == "runcmd" {
				return true
			}
		}
		return false
	}

	bootcmdFailed := func(st *agent.Status) bool {
		return slices.ContainsFunc(st.Boot.Stages, func(s agent.Stage) bool { return s.Name == "bootcmd" && s.Error != "" })
	}

	st := status("the first config confirmed", func(st *agent.Status) bool { return st.Config.Confirmed })
	if st.Config.Generation != 1 || !st.Boot.Ready {
		t.Fatalf("first boot: config %+v, ready %v", st.Config, st.Boot.Ready)
	}

	if err := m.SetUserData([]byte(bad)); err != nil {
		t.Fatal(err)
	}
	if err := m.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	// Trial boot 1: the boot fails and, after the 1m time-out, the node
	// reboots by itself (QEMU runs with -no-reboot: it exits).
	st = status("trial boot 1", stepsDone)
	if st.Config.Generation != 2 || st.Config.Confirmed || st.Config.TrialBoots != 1 || st.Hostname != "trial-bad" || !bootcmdFailed(st) {
		t.Fatalf("trial boot 1: config %+v, hostname %q, stages %+v", st.Config, st.Hostname, st.Boot.Stages)
	}
	if err := m.Wait(ctx); err != nil {
		t.Fatalf("no reboot at the trial's time-out: %v", err)
	}
	if _, err := m.WaitConsole(ctx, regexp.MustCompile(`generation 2 is on trial \(boot 1 of 2\) and this boot is not healthy after 1m0s: rebooting to try it again`)); err != nil {
		t.Errorf("the console does not say why it rebooted: %v", err)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// Trial boot 2, rebooted by hand this time.
	st = status("trial boot 2", stepsDone)
	if st.Config.Generation != 2 || st.Config.TrialBoots != 2 || !bootcmdFailed(st) {
		t.Fatalf("trial boot 2: config %+v, stages %+v", st.Config, st.Boot.Stages)
	}
	if err := m.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	// The trial is over: the last good config, and a ready boot.
	st = waitReady(t, m)
	if st.Config.Generation != 1 || st.Config.SetAside != 2 || !st.Config.Confirmed || !st.Config.UsedLastGood || st.Hostname != "trial-good" {
		t.Fatalf("after the trial: config %+v, hostname %q", st.Config, st.Hostname)
	}
	if _, err := m.WaitConsole(ctx, regexp.MustCompile(`generation 2 did not bring this node up in 2 boots: applying the last good config \(generation 1\)`)); err != nil {
		t.Errorf("the console does not say the config was set aside: %v", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
