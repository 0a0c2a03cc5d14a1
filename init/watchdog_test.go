package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ballast-os/ballast/init/bootstep"
	"github.com/ballast-os/ballast/init/watchdog"
)

// fakeWatchdog is a watchdog device that counts what it is asked.
type fakeWatchdog struct {
	timeout, keepalives int
	disarmed            bool
}

func (d *fakeWatchdog) Identity() (string, error) { return "fake timer", nil }
func (d *fakeWatchdog) Limits() (int, int)        { return 1, 2046 }
func (d *fakeWatchdog) SetTimeout(s int) error    { d.timeout = s; return nil }
func (d *fakeWatchdog) Timeout() (int, error)     { return d.timeout, nil }
func (d *fakeWatchdog) Keepalive() error          { d.keepalives++; return nil }
func (d *fakeWatchdog) Disarm() error             { d.disarmed = true; return nil }

// A machine without a watchdog boots without one: the step is skipped
// (one line on the console), not failed, and the status has none.
func TestArmWatchdogWithoutDevice(t *testing.T) {
	s := testSystem(t)
	err := s.armWatchdog(context.Background())
	if !errors.Is(err, bootstep.ErrSkip) {
		t.Fatalf("err = %v, want a skip", err)
	}
	if st := (&handler{s}).Status(); st.Watchdog != nil {
		t.Fatalf("status reports a watchdog: %+v", st.Watchdog)
	}
	s.petWatchdog() // nothing armed: no panic
	s.watchdogForShutdown(3)
	s.disarmWatchdogForPoweroff()
}

func armFake(t *testing.T, s *system) *fakeWatchdog {
	t.Helper()
	d := &fakeWatchdog{timeout: 30}
	w, err := watchdog.Arm(d, "/dev/watchdog0", watchdogTimeout, s.log, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.wd = w
	return d
}

// The keep-alive waits for the state lock: a PID 1 deadlocked on it
// stops feeding the watchdog.
func TestPetWatchdogNeedsTheStateLock(t *testing.T) {
	s := testSystem(t)
	armFake(t, s)
	s.mu.Lock()
	done := make(chan struct{})
	go func() { s.petWatchdog(); close(done) }()
	select {
	case <-done:
		t.Fatal("petWatchdog returned while the state lock was held")
	case <-time.After(50 * time.Millisecond):
	}
	s.mu.Unlock()
	<-done
}

// The reaper's tick is what feeds the watchdog.
func TestReaperTickPetsWatchdog(t *testing.T) {
	s := testSystem(t)
	d := armFake(t, s)
	if s.reap.Tick == nil {
		t.Fatal("the reaper has no tick: nothing keeps the watchdog alive")
	}
	// Arm pinged just now: a tick within the interval sends nothing.
	s.reap.Tick()
	if d.keepalives != 1 {
		t.Fatalf("%d keep-alives, want 1", d.keepalives)
	}
}

func TestWatchdogStatusAndShutdown(t *testing.T) {
	s := testSystem(t)
	d := armFake(t, s)
	st := (&handler{s}).Status()
	if st.Watchdog == nil || st.Watchdog.TimeoutS != 60 || st.Watchdog.State != watchdog.StateArmed || st.Watchdog.Identity != "fake timer" {
		t.Fatalf("status watchdog %+v", st.Watchdog)
	}
	// Three services: 10 s each to stop, and a minute for the rest.
	s.watchdogForShutdown(3)
	if d.timeout != 90 || d.keepalives != 2 || d.disarmed {
		t.Fatalf("after the shutdown started: timeout %d, keep-alives %d, disarmed %v; want 90, 2, false", d.timeout, d.keepalives, d.disarmed)
	}
	if st := (&handler{s}).Status(); st.Watchdog.State != watchdog.StateShutdown || st.Watchdog.TimeoutS != 90 {
		t.Fatalf("status watchdog %+v", st.Watchdog)
	}
	s.disarmWatchdogForPoweroff()
	if !d.disarmed {
		t.Fatal("not disarmed before power-off")
	}
}
