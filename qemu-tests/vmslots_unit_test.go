package qemutest

import (
	"net"
	"testing"
	"time"
)

// The scheduler starts the best-priority waiter that fits and lets smaller
// ones fill the cores a wide one cannot use yet.
func TestCoreScheduler(t *testing.T) {
	s := newCoreScheduler(2, 0)
	long := s.acquire(prioLong, 1) // one core busy
	started := make(chan string, 4)
	go func() { s.acquire(prioWide, 2); started <- "wide" }()
	waitWaiting(t, s, 1)
	go func() { s.acquire(prioShort, 1); started <- "short" }()
	if got := <-started; got != "short" {
		t.Fatalf("first to start: %s; want the short test on the free core", got)
	}
	select {
	case got := <-started:
		t.Fatalf("%s started while the long test holds a core", got)
	case <-time.After(50 * time.Millisecond):
	}
	s.release(1) // the short test ends: the wide one still waits for the long one
	select {
	case got := <-started:
		t.Fatalf("%s started with one core free", got)
	case <-time.After(50 * time.Millisecond):
	}
	s.release(long)
	if got := <-started; got != "wide" {
		t.Fatalf("after the long test: %s", got)
	}
	// A request wider than the host is clamped, not stuck forever.
	s.release(2)
	if n := s.acquire(prioWide, 5); n != 2 {
		t.Errorf("acquire(5) on 2 cores granted %d", n)
	}
}

func waitWaiting(t *testing.T, s *coreScheduler, n int) {
	t.Helper()
	for range 200 {
		s.mu.Lock()
		k := len(s.waiting)
		s.mu.Unlock()
		if k == n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%d waiters never queued", n)
}

// Tests released together start by priority, not by who asked first.
func TestCoreSchedulerGathers(t *testing.T) {
	s := newCoreScheduler(1, 100*time.Millisecond)
	started := make(chan string, 2)
	go func() { s.acquire(prioShort, 1); started <- "short" }()
	waitWaiting(t, s, 1)
	go func() { s.acquire(prioLong, 1); started <- "long" }()
	if got := <-started; got != "long" {
		t.Errorf("first to start: %s; want the long scenario", got)
	}
	s.release(1)
	<-started
}

// waitListening sees a listener through /proc/net/tcp without connecting.
func TestWaitListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	waitListening(t, ln.Addr().String(), 2*time.Second)
}
