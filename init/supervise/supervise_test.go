package supervise

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 5 * time.Second, Stable: 30 * time.Second}
	var d time.Duration
	var got []time.Duration
	for range 5 {
		d = b.Next(d, time.Second)
		got = append(got, d)
	}
	if fmt.Sprint(got) != "[1s 2s 4s 5s 5s]" {
		t.Fatalf("delays = %v", got)
	}
	if d := b.Next(5*time.Second, time.Minute); d != time.Second {
		t.Fatalf("after a stable run = %v", d)
	}
}

func TestLogFileRotates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "svc.log")
	l := &LogFile{Path: p, MaxSize: 100, Keep: 2}
	line := strings.Repeat("x", 39) + "\n" // 40 bytes: two per file
	for i := range 7 {
		if _, err := fmt.Fprintf(l, "%d%s", i, line[1:]); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	read := func(s string) string { b, _ := os.ReadFile(s); return string(b) }
	first := func(s string) string {
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			out = append(out, l[:1])
		}
		return strings.Join(out, ",")
	}
	if got := first(read(p)); got != "6" {
		t.Errorf("current = %s", got)
	}
	if got := first(read(p + ".1")); got != "4,5" {
		t.Errorf(".1 = %s", got)
	}
	if got := first(read(p + ".2")); got != "2,3" {
		t.Errorf(".2 = %s", got)
	}
	if _, err := os.Stat(p + ".3"); !os.IsNotExist(err) {
		t.Errorf(".3 kept: %v", err)
	}
	// Reopening appends to the existing file and honours its size.
	l2 := &LogFile{Path: p, MaxSize: 100, Keep: 2}
	fmt.Fprint(l2, "7"+line[1:])
	fmt.Fprint(l2, "8"+line[1:])
	l2.Close()
	if got := first(read(p)); got != "8" {
		t.Errorf("after reopen current = %s", got)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newSupervisor(t *testing.T) (*Supervisor, *syncBuf, *syncBuf) {
	con, logs := &syncBuf{}, &syncBuf{}
	return &Supervisor{
		LogDir:  t.TempDir(),
		Console: con,
		Log:     slog.New(slog.NewTextHandler(logs, nil)),
		Backoff: Backoff{Min: 20 * time.Millisecond, Max: 80 * time.Millisecond, Stable: time.Hour},
	}, con, logs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestSupervisorRestartsWithBackoffAndLogs(t *testing.T) {
	s, con, _ := newSupervisor(t)
	if err := s.Start(Service{Name: "flaky", Argv: []string{"/bin/sh", "-c", "echo out-line; echo err-line >&2; exit 3"}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "4 restarts", func() bool { return s.Status()[0].Restarts >= 4 })
	// The 4th restart is counted after delays of 20+40+80 ms.
	if el := time.Since(start); el < 140*time.Millisecond {
		t.Errorf("4 restarts took only %v: back-off not applied", el)
	}
	st := s.Status()[0]
	if st.LastExit != "exit status 3" || st.Name != "flaky" {
		t.Errorf("status = %+v", st)
	}
	lines, ok := s.Logs("flaky", 2)
	if !ok || len(lines) != 2 || lines[0] != "out-line" || lines[1] != "err-line" {
		t.Errorf("Logs = %q %v", lines, ok)
	}
	if !strings.Contains(con.String(), "ballast: flaky| err-line") {
		t.Errorf("console lacks the failed service's tail:\n%s", con.String())
	}
	s.StopAll(context.Background(), time.Second)
	b, _ := os.ReadFile(filepath.Join(s.LogDir, "flaky.log"))
	if strings.Count(string(b), "out-line\n") < 4 {
		t.Errorf("log file:\n%s", b)
	}
	if st := s.Status()[0]; st.State != StateStopped {
		t.Errorf("after stop: %+v", st)
	}
	if err := s.Start(Service{Name: "flaky", Argv: []string{"true"}}); err == nil {
		t.Error("duplicate name accepted")
	}
}

func TestStopAllReverseOrderAndKill(t *testing.T) {
	s, _, logs := newSupervisor(t)
	s.Start(Service{Name: "first", Argv: []string{"/bin/sleep", "100"}})
	// Ignores SIGTERM: must be killed after the timeout.
	s.Start(Service{Name: "stubborn", Argv: []string{"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"}})
	waitFor(t, "both running", func() bool {
		st := s.Status()
		l, _ := s.Logs("stubborn", 1)
		return st[0].State == StateRunning && st[1].State == StateRunning && len(l) == 1
	})
	pids := []int{s.Status()[0].PID, s.Status()[1].PID}
	start := time.Now()
	s.StopAll(context.Background(), 300*time.Millisecond)
	if el := time.Since(start); el < 300*time.Millisecond || el > 5*time.Second {
		t.Errorf("StopAll took %v", el)
	}
	out := logs.String()
	i, j := strings.Index(out, "service=stubborn"), strings.Index(out, "msg=\"service stopped\" service=first")
	if !strings.Contains(out, "did not stop; killing\" service=stubborn") || j < 0 || j < strings.LastIndex(out, "service=stubborn") || i < 0 {
		t.Errorf("stop order/kill not as expected:\n%s", out)
	}
	for _, st := range s.Status() {
		if st.State != StateStopped {
			t.Errorf("%s: %s", st.Name, st.State)
		}
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, 0); err == nil {
			t.Errorf("pid %d still alive", pid)
		}
	}
}

func TestReaperReapsOrphansWithoutRacingWait(t *testing.T) {
	// Become a subreaper so orphans are re-parented to the test process,
	// as they are to PID 1.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &Reaper{Grace: 100 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go r.Run(ctx)

	// Orphans: the shell exits at once, its background children finish later.
	for range 3 {
		if err := exec.Command("/bin/sh", "-c", "sleep 0.1 & sleep 0.15 & exit 0").Run(); err != nil {
			t.Fatal(err)
		}
	}
	// Meanwhile, ordinary exec.Cmd users must never see ECHILD.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				out, err := exec.Command("/bin/sh", "-c", "echo ok; exit 7").Output()
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 || string(out) != "ok\n" {
					errs <- fmt.Errorf("exec.Cmd: out=%q err=%v", out, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "6 orphans reaped", func() bool { return r.Reaped() >= 6 })
	// No zombie of ours left behind.
	time.Sleep(300 * time.Millisecond)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if st, ppid, _, ok := readStat("/proc/" + e.Name() + "/stat"); ok && st == 'Z' && ppid == os.Getpid() {
			t.Errorf("zombie %s left", e.Name())
		}
	}
	if n := r.Reaped(); n != 6 {
		t.Errorf("reaped %d, want exactly the 6 orphans", n)
	}
}

// Tick runs at every pass of the reaper's loop, at least every Grace/2
// (PID 1's watchdog keep-alive rides on it), and not once the loop ended.
func TestReaperTicks(t *testing.T) {
	var mu sync.Mutex
	ticks := 0
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reaper{Proc: t.TempDir(), Grace: 100 * time.Millisecond, Tick: func() { mu.Lock(); ticks++; mu.Unlock() }}
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	time.Sleep(520 * time.Millisecond)
	cancel()
	<-done
	mu.Lock()
	n := ticks
	mu.Unlock()
	// One at the start, then one per 50 ms tick: about 11; a loaded
	// machine may lose some.
	if n < 5 {
		t.Fatalf("%d ticks in 520 ms with Grace 100 ms, want about 11", n)
	}
	time.Sleep(150 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if ticks != n {
		t.Fatalf("Tick ran %d more times after Run returned", ticks-n)
	}
}

func TestReadStatParsesCommWithSpaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "stat")
	os.WriteFile(p, []byte("42 (a) b (c) Z 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0\n"), 0o644)
	st, ppid, start, ok := readStat(p)
	if !ok || st != 'Z' || ppid != 1 || start != "98765" {
		t.Fatalf("readStat = %c %d %s %v", st, ppid, start, ok)
	}
}

// zombieChild sees an exited child before anyone reaps it, and leaves it
// for its waiter (WNOWAIT).
func TestZombieChild(t *testing.T) {
	if zombieChild() {
		t.Skip("this test process already has an unreaped child")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !zombieChild() {
		if time.Now().After(deadline) {
			t.Fatal("an exited child was not seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the child's own Wait failed after the peek: %v", err)
	}
	if zombieChild() {
		t.Error("still a zombie after Wait")
	}
}
