package watchdog

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeDevice records what the keeper asks of a watchdog.
type fakeDevice struct {
	identity   string
	min, max   int
	timeout    int
	refuse     bool // SetTimeout fails (EINVAL), as for a value out of range
	keepalives int
	keepErr    error
	disarmed   bool
}

func (d *fakeDevice) Identity() (string, error) { return d.identity, nil }
func (d *fakeDevice) Limits() (int, int)        { return d.min, d.max }
func (d *fakeDevice) SetTimeout(s int) error {
	if d.refuse {
		return unix.EINVAL
	}
	d.timeout = s
	return nil
}
func (d *fakeDevice) Timeout() (int, error) { return d.timeout, nil }
func (d *fakeDevice) Keepalive() error {
	if d.keepErr != nil {
		return d.keepErr
	}
	d.keepalives++
	return nil
}
func (d *fakeDevice) Disarm() error { d.disarmed = true; return nil }

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func TestArmSetsTimeoutAndPings(t *testing.T) {
	d := &fakeDevice{identity: "i6300ESB timer", timeout: 30, min: 1, max: 2046}
	w, err := Arm(d, "/dev/watchdog0", time.Minute, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if d.timeout != 60 || w.Timeout() != time.Minute {
		t.Errorf("device timeout %d s, keeper %v; want 60 s", d.timeout, w.Timeout())
	}
	if d.keepalives != 1 {
		t.Errorf("%d keep-alives at arming, want 1", d.keepalives)
	}
	st := w.Status()
	if st.Device != "/dev/watchdog0" || st.Identity != "i6300ESB timer" || st.TimeoutS != 60 || st.State != StateArmed || st.Pings != 1 || !st.LastPing.Equal(t0) {
		t.Errorf("status %+v", st)
	}
}

func TestArmClampsToDeviceLimits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max int
		want     time.Duration
		got      int
	}{
		{"above max", 1, 15, time.Minute, 15},
		{"below min", 30, 0, 10 * time.Second, 30},
		// bcm2835_wdt: 15 s in hardware, but max_timeout 0: the kernel
		// pings in between, so 60 s is taken as asked.
		{"no limit", 1, 0, time.Minute, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &fakeDevice{identity: "x", timeout: 10, min: tc.min, max: tc.max}
			w, err := Arm(d, "/dev/watchdog0", tc.want, nil, t0)
			if err != nil {
				t.Fatal(err)
			}
			if d.timeout != tc.got || w.Timeout() != time.Duration(tc.got)*time.Second {
				t.Errorf("timeout %d s (keeper %v), want %d s", d.timeout, w.Timeout(), tc.got)
			}
		})
	}
}

// A device that refuses the timeout keeps counting with its own, and
// the keeper pings by that one, read back from the device.
func TestArmKeepsDeviceTimeoutWhenRefused(t *testing.T) {
	d := &fakeDevice{identity: "x", timeout: 20, refuse: true}
	w, err := Arm(d, "/dev/watchdog", time.Minute, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if w.Timeout() != 20*time.Second {
		t.Fatalf("timeout %v, want the device's 20s", w.Timeout())
	}
	w.Tick(t0.Add(4 * time.Second))
	w.Tick(t0.Add(5 * time.Second))
	if d.keepalives != 2 {
		t.Fatalf("%d keep-alives, want 2 (arming, then after 5 s)", d.keepalives)
	}
}

// The keep-alive goes out only when the caller ticks: a PID 1 whose loop
// stops ticking lets the device run out, however long it waits.
func TestKeepaliveOnlyWhenTicked(t *testing.T) {
	d := &fakeDevice{identity: "x", timeout: 60}
	w, err := Arm(d, "/dev/watchdog0", time.Minute, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	// Ticks every second for a minute: a keep-alive every 15 s.
	for s := 1; s <= 60; s++ {
		w.Tick(t0.Add(time.Duration(s) * time.Second))
	}
	if d.keepalives != 1+4 {
		t.Fatalf("%d keep-alives over a minute of ticks, want 5 (arming + every 15 s)", d.keepalives)
	}
	// A tick before the interval is up sends nothing; the keeper has no
	// timer or goroutine that could ping on a stopped loop's behalf.
	w.Tick(t0.Add(74 * time.Second))
	if d.keepalives != 5 {
		t.Fatalf("a keep-alive went out before the interval")
	}
	if st := w.Status(); st.Pings != 5 || !st.LastPing.Equal(t0.Add(60*time.Second)) {
		t.Fatalf("status %+v", st)
	}
}

func TestKeepaliveFailureIsReportedOnce(t *testing.T) {
	d := &fakeDevice{identity: "x", timeout: 60}
	var log strings.Builder
	w, err := Arm(d, "/dev/watchdog0", time.Minute, testLogger(&log), t0)
	if err != nil {
		t.Fatal(err)
	}
	d.keepErr = unix.EIO
	for s := 15; s <= 60; s += 15 {
		w.Tick(t0.Add(time.Duration(s) * time.Second))
	}
	if n := strings.Count(log.String(), "keep-alive failed"); n != 1 {
		t.Fatalf("failure logged %d times, want once:\n%s", n, log.String())
	}
	d.keepErr = nil
	w.Tick(t0.Add(61 * time.Second))
	if d.keepalives != 2 || !strings.Contains(log.String(), "works again") {
		t.Fatalf("keep-alives %d after recovery; log:\n%s", d.keepalives, log.String())
	}
}

// Shutdown sets the final timeout, pings once, and no tick pings after
// it: a shutdown that hangs ends in a reset.
func TestShutdownStopsKeepalives(t *testing.T) {
	d := &fakeDevice{identity: "x", timeout: 60, max: 2046}
	w, err := Arm(d, "/dev/watchdog0", time.Minute, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := w.Shutdown(3*time.Minute, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got != 3*time.Minute || d.timeout != 180 || d.keepalives != 2 {
		t.Fatalf("final timeout %v, device %d s, keep-alives %d; want 3m, 180, 2", got, d.timeout, d.keepalives)
	}
	for s := 2; s < 600; s++ {
		w.Tick(t0.Add(time.Duration(s) * time.Second))
	}
	if d.keepalives != 2 {
		t.Fatalf("%d keep-alives after Shutdown, want none after its own", d.keepalives-2)
	}
	if st := w.Status(); st.State != StateShutdown || st.TimeoutS != 180 {
		t.Fatalf("status %+v", st)
	}
	if d.disarmed {
		t.Fatal("Shutdown disarmed the device")
	}
	// A second Shutdown (say, a second request) changes nothing.
	if _, err := w.Shutdown(time.Hour, t0.Add(10*time.Second)); err != nil || d.timeout != 180 || d.keepalives != 2 {
		t.Fatalf("second Shutdown: err %v, timeout %d, keep-alives %d", err, d.timeout, d.keepalives)
	}
	if err := w.Disarm(); err != nil || !d.disarmed || w.Status().State != StateDisarmed {
		t.Fatalf("Disarm: err %v, disarmed %v, state %s", err, d.disarmed, w.Status().State)
	}
}

// A final timeout the device refuses leaves its armed one, restarted.
func TestShutdownWithRefusedTimeoutStillPings(t *testing.T) {
	d := &fakeDevice{identity: "x", timeout: 60}
	w, err := Arm(d, "/dev/watchdog0", time.Minute, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	d.refuse = true
	got, err := w.Shutdown(3*time.Minute, t0.Add(time.Second))
	if !errors.Is(err, unix.EINVAL) || got != time.Minute || d.keepalives != 2 {
		t.Fatalf("err %v, timeout %v, keep-alives %d; want EINVAL, 1m, 2", err, got, d.keepalives)
	}
}

func TestFind(t *testing.T) {
	dev, sys := t.TempDir(), t.TempDir()
	if _, err := Find(dev, sys); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("empty: err %v, want ErrNoDevice", err)
	}
	// A legacy driver without the watchdog core: /dev/watchdog alone.
	touch(t, filepath.Join(dev, "watchdog"))
	if p, err := Find(dev, sys); err != nil || p != filepath.Join(dev, "watchdog") {
		t.Fatalf("legacy: %q, %v", p, err)
	}
	// The core's devices: the lowest number, the one /dev/watchdog is.
	for _, n := range []string{"watchdog1", "watchdog0", "watchdog10"} {
		os.MkdirAll(filepath.Join(sys, n), 0o755)
		touch(t, filepath.Join(dev, n))
	}
	if p, err := Find(dev, sys); err != nil || p != filepath.Join(dev, "watchdog0") {
		t.Fatalf("core: %q, %v", p, err)
	}
}

// A file that is not a watchdog (the fake device file a test or a
// mistake provides) is refused when opened, by its failed ioctl.
func TestOpenRefusesNonWatchdog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "watchdog0")
	touch(t, p)
	_, err := Open(p, t.TempDir())
	if !errors.Is(err, unix.ENOTTY) || !strings.Contains(err.Error(), "WDIOC_GETSUPPORT") {
		t.Fatalf("err = %v, want ENOTTY from WDIOC_GETSUPPORT", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "none"), ""); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing device: err = %v", err)
	}
}

func TestFileLimitsFromSysfs(t *testing.T) {
	sys := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "watchdog0"), 0o755)
	os.WriteFile(filepath.Join(sys, "watchdog0/min_timeout"), []byte("1\n"), 0o644)
	os.WriteFile(filepath.Join(sys, "watchdog0/max_timeout"), []byte("2046\n"), 0o644)
	d := &File{sysClass: filepath.Join(sys, "watchdog0")}
	if min, max := d.Limits(); min != 1 || max != 2046 {
		t.Fatalf("limits %d, %d", min, max)
	}
	d = &File{sysClass: filepath.Join(sys, "watchdog1")}
	if min, max := d.Limits(); min != 0 || max != 0 {
		t.Fatalf("limits without sysfs %d, %d; want unknown", min, max)
	}
}

func testLogger(w *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil))
}

func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}
