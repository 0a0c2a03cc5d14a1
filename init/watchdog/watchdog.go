// Package watchdog arms the board's hardware watchdog and keeps it alive
// for PID 1. Opening the device starts a timer in hardware (bcm2835_wdt on
// a Raspberry Pi, i6300esb in QEMU, iTCO_wdt on a PC); each keep-alive
// restarts it; when the keep-alives stop for Timeout (PID 1 wedged, the
// kernel hung) the hardware resets the board, and an appliance nobody
// watches comes back by itself.
//
// The package decides nothing about when PID 1 is alive: the caller ticks
// it from a loop whose progress proves that (the init's zombie reaper).
package watchdog

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ballast-os/ballast/init/agent"
)

// States of a Watchdog, as the agent reports them.
const (
	StateArmed    = "armed"    // kept alive by Tick
	StateShutdown = "shutdown" // no more keep-alives: the shutdown must end within its final timeout
	StateDisarmed = "disarmed" // stopped right before power-off
)

// Watchdog is an armed device and its keep-alive state. Its methods may
// be called from any goroutine.
type Watchdog struct {
	dev      Device
	path     string
	identity string
	log      *slog.Logger

	mu       sync.Mutex
	timeout  time.Duration
	interval time.Duration
	state    string
	pings    int
	last     time.Time
	failing  bool // the last keep-alive failed (logged once)
}

// Arm sets dev's timeout to want, clamped to what the device takes, reads
// the timeout back (a driver may round it) and pings once. path names the
// device in the status. A device that takes no timeout keeps its own.
func Arm(dev Device, path string, want time.Duration, log *slog.Logger, now time.Time) (*Watchdog, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, err := dev.Identity()
	if err != nil {
		return nil, err
	}
	w := &Watchdog{dev: dev, path: path, identity: id, log: log, state: StateArmed}
	got, err := setTimeout(dev, want)
	if got == 0 {
		return nil, err
	}
	if err != nil {
		log.Warn("watchdog keeps its own timeout", "device", path, "timeout", got, "err", err)
	}
	w.useTimeout(got)
	if err := dev.Keepalive(); err != nil {
		return nil, err
	}
	w.pings, w.last = 1, now
	return w, nil
}

// setTimeout asks for want, clamped to the device's limits, and returns
// what the device reports afterwards. When the device refuses the value
// it keeps counting with its own: that one is returned with the refusal.
// A zero duration means the device's timeout is unknown.
func setTimeout(dev Device, want time.Duration) (time.Duration, error) {
	secs := int((want + time.Second - 1) / time.Second)
	min, max := dev.Limits()
	if max > 0 && secs > max {
		secs = max
	}
	if min > 0 && secs < min {
		secs = min
	}
	setErr := dev.SetTimeout(secs)
	got, err := dev.Timeout()
	if err != nil {
		return 0, errors.Join(setErr, err)
	}
	if got <= 0 {
		return 0, fmt.Errorf("watchdog reports a timeout of %d s", got)
	}
	return time.Duration(got) * time.Second, setErr
}

func (w *Watchdog) useTimeout(t time.Duration) {
	w.timeout = t
	// Four keep-alives per timeout: one late tick (a busy emulated
	// machine, a GC pause) never costs a reset; three in a row do.
	w.interval = t / 4
}

// Timeout is the time without a keep-alive after which the board resets.
func (w *Watchdog) Timeout() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.timeout
}

// Identity is the driver's name for the device ("i6300ESB timer").
func (w *Watchdog) Identity() string { return w.identity }

// Tick pings the device when a quarter of the timeout has passed since
// the last keep-alive. Once Shutdown or Disarm ran it does nothing.
func (w *Watchdog) Tick(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != StateArmed || now.Sub(w.last) < w.interval {
		return
	}
	if err := w.dev.Keepalive(); err != nil {
		if !w.failing {
			w.log.Error("watchdog keep-alive failed: the board will reset", "device", w.path, "err", err)
		}
		w.failing = true
		return
	}
	if w.failing {
		w.log.Info("watchdog keep-alive works again", "device", w.path)
	}
	w.failing = false
	w.pings++
	w.last = now
}

// Shutdown stops the keep-alives for good: the timeout becomes final
// (clamped as in Arm) and restarts now, so a shutdown that hangs
// anywhere, in a service that ignores SIGTERM, in sync or unmount, in
// reboot(2) itself, still ends in a reset. It returns the timeout taken.
func (w *Watchdog) Shutdown(final time.Duration, now time.Time) (time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != StateArmed {
		return w.timeout, nil
	}
	w.state = StateShutdown
	got, err := setTimeout(w.dev, final)
	if got > 0 {
		w.useTimeout(got)
	}
	// Ping even when the timeout was refused: the old one restarts.
	if perr := w.dev.Keepalive(); perr != nil {
		return w.timeout, errors.Join(err, perr)
	}
	w.pings++
	w.last = now
	return w.timeout, err
}

// Disarm stops the timer and closes the device.
func (w *Watchdog) Disarm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == StateDisarmed {
		return nil
	}
	w.state = StateDisarmed
	return w.dev.Disarm()
}

// Status is the agent's view.
func (w *Watchdog) Status() agent.Watchdog {
	w.mu.Lock()
	defer w.mu.Unlock()
	return agent.Watchdog{
		Device:   w.path,
		Identity: w.identity,
		TimeoutS: int(w.timeout / time.Second),
		State:    w.state,
		Pings:    w.pings,
		LastPing: w.last,
	}
}
