package processes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary play fake components when re-executed.
func TestMain(m *testing.M) {
	switch os.Getenv("FAKE_COMPONENT") {
	case "":
		os.Exit(m.Run())
	case "serve":
		// Ready once it wrote its marker; on SIGTERM record the stop order.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		fmt.Println("hello from", os.Getenv("NAME"))
		os.WriteFile(os.Getenv("MARKER"), []byte("up"), 0o644)
		<-sig
		f, _ := os.OpenFile(os.Getenv("STOPLOG"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		fmt.Fprintln(f, os.Getenv("NAME"))
		f.Close()
		os.Exit(0)
	case "crash":
		f, _ := os.OpenFile(os.Getenv("STARTLOG"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		fmt.Fprintln(f, "start")
		f.Close()
		os.Exit(3)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		os.WriteFile(os.Getenv("MARKER"), []byte("up"), 0o644)
		time.Sleep(time.Hour)
	}
	os.Exit(99)
}

func fileReady(path string) func(context.Context) error {
	return func(context.Context) error { _, err := os.Stat(path); return err }
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOrderedStartAndStop(t *testing.T) {
	dir := t.TempDir()
	stoplog := filepath.Join(dir, "stop.log")
	var comps []Component
	for _, n := range []string{"datastore", "apiserver", "scheduler"} {
		marker := filepath.Join(dir, n+".up")
		comps = append(comps, Component{
			Name:    n,
			Env:     []string{"FAKE_COMPONENT=serve", "NAME=" + n, "MARKER=" + marker, "STOPLOG=" + stoplog},
			LogFile: filepath.Join(dir, n+".log"),
			Ready:   fileReady(marker),
		})
	}
	s := &Runner{Components: comps, ReadyInterval: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, "all ready", func() bool {
		st := s.Status()
		return len(st) == 3 && st[0].Ready && st[1].Ready && st[2].Ready
	})
	for _, st := range s.Status() {
		if st.PID == 0 {
			t.Errorf("%s has no pid", st.Name)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	got, _ := os.ReadFile(stoplog)
	if string(got) != "scheduler\napiserver\ndatastore\n" {
		t.Errorf("stop order %q, want reverse start order", got)
	}
	out, _ := os.ReadFile(filepath.Join(dir, "apiserver.log"))
	if !strings.Contains(string(out), "hello from apiserver") {
		t.Errorf("log file %q", out)
	}
}

func TestRestartWithBackoff(t *testing.T) {
	dir := t.TempDir()
	startlog := filepath.Join(dir, "starts")
	s := &Runner{
		Components:     []Component{{Name: "crashy", Env: []string{"FAKE_COMPONENT=crash", "STARTLOG=" + startlog}}},
		BackoffInitial: 20 * time.Millisecond,
		BackoffMax:     80 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	begin := time.Now()
	waitFor(t, "4 starts", func() bool {
		data, _ := os.ReadFile(startlog)
		return strings.Count(string(data), "start") >= 4
	})
	// Delays 20+40+80 ms at least between the first and fourth start.
	if el := time.Since(begin); el < 140*time.Millisecond {
		t.Errorf("4 starts in %v: back-off not applied", el)
	}
	// The crashes are in the status: read before the stop, whose SIGTERM
	// may end a fifth start and be the last exit after it.
	waitFor(t, "3 restarts after exit status 3", func() bool {
		st := s.Status()[0]
		return st.Restarts >= 3 && strings.Contains(st.LastExit, "exit status 3")
	})
	cancel()
	<-done
}

func TestKillAfterStopTimeout(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "up")
	s := &Runner{Components: []Component{{Name: "stubborn", Env: []string{"FAKE_COMPONENT=stubborn", "MARKER=" + marker}, Ready: fileReady(marker), StopTimeout: 100 * time.Millisecond}}, ReadyInterval: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, "ready", func() bool { st := s.Status(); return len(st) == 1 && st[0].Ready })
	pid := s.Status()[0].PID
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not kill the stubborn component")
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("pid %d still alive", pid)
	}
}

func TestHTTPReady(t *testing.T) {
	ok := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ok {
			http.Error(w, "no", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	check := HTTPReady(srv.URL+"/readyz", srv.Client())
	if err := check(context.Background()); err != nil {
		t.Error(err)
	}
	ok = false
	if err := check(context.Background()); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("err = %v", err)
	}
}

// An in-process component logs to its file, is restarted with back-off
// when it returns or panics, and is stopped by cancelling its context.
func TestInProcess(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "flannel.log")
	var runs atomic.Int32
	stopped := make(chan struct{})
	s := &Runner{
		Components: []Component{{
			Name:    "flannel",
			LogFile: logFile,
			Run: func(ctx context.Context, log io.Writer) error {
				n := runs.Add(1)
				fmt.Fprintf(log, "run %d\n", n)
				switch n {
				case 1:
					return errors.New("lost the subnet lease")
				case 2:
					panic("nil map")
				}
				<-ctx.Done()
				close(stopped)
				return ctx.Err()
			},
		}},
		BackoffInitial: 10 * time.Millisecond,
		ReadyInterval:  10 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, "the third run, ready", func() bool {
		st := s.Status()
		return runs.Load() == 3 && len(st) == 1 && st[0].Ready
	})
	st := s.Status()[0]
	if st.PID != os.Getpid() || st.Restarts != 2 || !strings.Contains(st.LastExit, "panic: nil map") {
		t.Errorf("status %+v", st)
	}
	cancel()
	<-done
	select {
	case <-stopped:
	default:
		t.Error("the component's context was not cancelled at stop")
	}
	out, _ := os.ReadFile(logFile)
	if !strings.Contains(string(out), "run 1\nrun 2\npanic: nil map") || !strings.Contains(string(out), "run 3") {
		t.Errorf("log file %q", out)
	}
}

// TestRestartOnRequest: Restart stops a component with SIGTERM and starts
// it again at once, without a back-off and without counting a crash.
func TestRestartOnRequest(t *testing.T) {
	dir := t.TempDir()
	stoplog, marker := filepath.Join(dir, "stop.log"), filepath.Join(dir, "up")
	s := &Runner{
		Components:     []Component{{Name: "apiserver", Env: []string{"FAKE_COMPONENT=serve", "NAME=apiserver", "MARKER=" + marker, "STOPLOG=" + stoplog}, Ready: fileReady(marker)}},
		BackoffInitial: time.Hour, // a crash would stall the test
		ReadyInterval:  10 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, "ready", func() bool { st := s.Status(); return len(st) == 1 && st[0].Ready })
	pid := s.Status()[0].PID
	os.Remove(marker)
	if err := s.Restart("apiserver"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new process, ready", func() bool {
		st := s.Status()[0]
		_, err := os.Stat(marker)
		return st.PID != 0 && st.PID != pid && err == nil
	})
	if got, _ := os.ReadFile(stoplog); string(got) != "apiserver\n" {
		t.Errorf("stop log %q: want the old process stopped with SIGTERM", got)
	}
	if st := s.Status()[0]; st.Restarts != 0 {
		t.Errorf("restarts %d: a requested restart is not a crash", st.Restarts)
	}
	if err := s.Restart("nope"); err == nil {
		t.Error("Restart of an unknown component: no error")
	}
	cancel()
	<-done
}
