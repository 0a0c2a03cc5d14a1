package qemutest

import (
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Under TCG each machine keeps one host core busy for as long as it runs
// (single-threaded TCG, every vCPU on one thread), so the scenarios share
// the host's cores instead of running one after another: the long runtime
// scenario on one core while the short boot tests take turns on the next.
// Each test calls useCores with the number of machines it runs at once;
// it runs in parallel with the others (go test -parallel must be at least
// the number of tests that may wait here, hence the Makefile's
// -parallel 16) and starts once that many cores are free.
//
// $BALLAST_QEMU_CORES sets how many machines run at once (default: the
// host's CPU count). Waiting tests start lowest priority value first; one
// that does not fit lets smaller ones behind it start meanwhile, so the
// cores never idle while a wide test waits. go test releases the paused
// parallel tests together, in no set order: the first cores are granted a
// moment after the first test asks (gatherWindow), once all have asked.

// CoresEnv overrides how many machines the tests run at once.
const CoresEnv = "BALLAST_QEMU_CORES"

// Priorities: the longest scenario starts first, so the others fit around it.
const (
	prioLong  = 0 // TestE2ERuntime: ~20 minutes under TCG
	prioWide  = 1 // TestE2ECluster: two machines
	prioShort = 2 // a boot test: a minute or two
)

type coreScheduler struct {
	mu      sync.Mutex
	cond    *sync.Cond
	free    int
	total   int
	waiting []*coreWaiter
	window  time.Duration
	gather  *time.Timer // started by the first acquire
	open    bool        // the gather window has passed
}

// gatherWindow is how long the first test waits for the others to ask.
const gatherWindow = 500 * time.Millisecond

type coreWaiter struct {
	prio, n int
	seq     int
	granted bool
}

var cores = newCoreScheduler(hostCores(), gatherWindow)

func hostCores() int {
	if v, err := strconv.Atoi(os.Getenv(CoresEnv)); err == nil && v > 0 {
		return v
	}
	return max(1, runtime.NumCPU())
}

func newCoreScheduler(n int, window time.Duration) *coreScheduler {
	s := &coreScheduler{free: n, total: n, window: window, open: window <= 0}
	s.cond = sync.NewCond(&s.mu)
	return s
}

var waiterSeq int

// acquire blocks until n cores (at most all of them) are granted, and
// returns how many to give back.
func (s *coreScheduler) acquire(prio, n int) int {
	n = min(n, s.total)
	s.mu.Lock()
	defer s.mu.Unlock()
	waiterSeq++
	w := &coreWaiter{prio: prio, n: n, seq: waiterSeq}
	s.waiting = append(s.waiting, w)
	if !s.open && s.gather == nil {
		s.gather = time.AfterFunc(s.window, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.open = true
			s.grant()
		})
	}
	s.grant()
	for !w.granted {
		s.cond.Wait()
	}
	return n
}

func (s *coreScheduler) release(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free += n
	s.grant()
}

// grant starts every waiter that fits, best priority (then arrival) first.
func (s *coreScheduler) grant() {
	if !s.open {
		return
	}
	slices.SortStableFunc(s.waiting, func(a, b *coreWaiter) int {
		if a.prio != b.prio {
			return a.prio - b.prio
		}
		return a.seq - b.seq
	})
	left := s.waiting[:0]
	for _, w := range s.waiting {
		if w.n <= s.free {
			s.free -= w.n
			w.granted = true
			continue
		}
		left = append(left, w)
	}
	s.waiting = left
	s.cond.Broadcast()
}

// useCores marks t parallel and waits for n free cores at priority prio;
// they are given back when t ends.
func useCores(t *testing.T, prio, n int) {
	t.Helper()
	t.Parallel()
	got := cores.acquire(prio, n)
	t.Cleanup(func() { cores.release(got) })
}
