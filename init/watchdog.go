package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ballast-os/ballast/init/bootstep"
	"github.com/ballast-os/ballast/init/watchdog"
)

// watchdogTimeout is how long PID 1 may go without a keep-alive before the
// hardware resets the board.
const watchdogTimeout = 60 * time.Second

// watchdogKey=off on the command line leaves the watchdog unarmed: for a
// machine whose watchdog resets it at once when armed (QEMU's raspi3b
// emulates the BCM2835 PM block's reset but not its countdown).
const watchdogKey = "ballast.watchdog"

// armWatchdog opens the board's hardware watchdog, whose driver the
// devices step loaded from its modalias (i6300esb in QEMU, bcm2835_wdt on
// a Pi, iTCO_wdt on many PCs), and arms it. From here on the zombie
// reaper keeps it alive (petWatchdog).
//
// Without one the node runs without, and says so once. softdog is not
// loaded in its place: it runs in the kernel it would watch, and a hung
// kernel is half of what a hardware watchdog is for.
func (s *system) armWatchdog(context.Context) error {
	if s.cmdline[watchdogKey] == "off" {
		return bootstep.Skip(watchdogKey + "=off: running without the hardware watchdog")
	}
	path, err := watchdog.Find(s.path("/dev"), s.path("/sys/class/watchdog"))
	if errors.Is(err, watchdog.ErrNoDevice) {
		return bootstep.Skip("no hardware watchdog on this machine: running without one")
	}
	if err != nil {
		return err
	}
	dev, err := watchdog.Open(path, s.path("/sys/class/watchdog"))
	if err != nil {
		return err
	}
	w, err := watchdog.Arm(dev, path, watchdogTimeout, s.log, time.Now())
	if err != nil {
		// Opened but not armed: the device counts down with the driver's
		// own timeout and nobody pings it. Stop it rather than reset
		// the board in the middle of the boot.
		if derr := dev.Disarm(); derr != nil {
			err = errors.Join(err, derr)
		}
		return err
	}
	s.mu.Lock()
	s.wd = w
	s.mu.Unlock()
	// One plain line on the console, like the cgroup controllers'.
	s.log.Info(fmt.Sprintf("watchdog: %s, %d s", w.Identity(), int(w.Timeout()/time.Second)), "device", path)
	return nil
}

// petWatchdog is the reaper's tick (supervise.Reaper.Tick): the watchdog
// is kept alive from the loop that reaps orphans, not from a goroutine of
// its own, so a keep-alive proves that PID 1 still does its one endless
// job. The reaper runs from before the boot steps until reboot(2), wakes
// at least every second, and stops when PID 1 is starved, crashed, or
// stuck reading /proc. The boot steps are no proof either way: an e2fsck
// or a bootcmd may rightly take minutes, so they do not drive it.
//
// It also takes the state lock every boot step and agent request takes:
// a PID 1 deadlocked on it can neither answer nor shut down, and the
// watchdog resets it.
func (s *system) petWatchdog() {
	s.mu.Lock()
	w := s.wd
	s.mu.Unlock()
	if w != nil {
		w.Tick(time.Now())
	}
}

// watchdogForShutdown stops the keep-alives at the start of a shutdown
// and gives the rest of it a final timeout: every service its stop time,
// and a minute for the kill, sync and unmounts. The watchdog stays armed
// through reboot(2): a service that ignores SIGKILL in D state, an
// unmount or a sync that never ends, still ends in a reset.
func (s *system) watchdogForShutdown(services int) {
	s.mu.Lock()
	w := s.wd
	s.mu.Unlock()
	if w == nil {
		return
	}
	final := time.Duration(services)*serviceStopTimeout + time.Minute
	got, err := w.Shutdown(final, time.Now())
	if err != nil {
		s.log.Warn("watchdog: the final timeout was not taken", "err", err, "timeout", got)
	}
	s.log.Info("watchdog: no more keep-alives; the shutdown has until it resets the board", "timeout", got)
}

// disarmWatchdogForPoweroff stops the watchdog right before a power-off's
// reboot(2), after everything is synced and unmounted. A reboot keeps it
// armed (the reset it might cause is the reboot asked for), but a
// power-off that the kernel ends as a halt, or a driver that keeps
// counting after the kernel stopped, would wake a node that was meant to
// stay off.
func (s *system) disarmWatchdogForPoweroff() {
	s.mu.Lock()
	w := s.wd
	s.mu.Unlock()
	if w == nil {
		return
	}
	if err := w.Disarm(); err != nil {
		s.log.Warn("watchdog: could not disarm before power-off; it may reset the machine", "err", err)
	}
}
