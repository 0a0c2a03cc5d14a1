package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/init/datapart"
)

// A command that starts a daemon with & returns when the command does, not
// when the daemon does; the daemon's later output goes to the same log.
func TestRunLoggedBackground(t *testing.T) {
	log := filepath.Join(t.TempDir(), "var", "log", "runcmd.log")
	begin := time.Now()
	out, err := runLogged(context.Background(), []string{"/bin/sh", "-c", "(sleep 1; echo daemon still here) & echo started"}, os.Environ(), log, time.Minute)
	if err != nil || strings.TrimSpace(out) != "started" {
		t.Fatalf("runLogged: %q, %v", out, err)
	}
	if el := time.Since(begin); el > 900*time.Millisecond {
		t.Errorf("took %v: waited for the background job", el)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(log)
		if strings.Contains(string(data), "daemon still here") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's output never reached the log: %q", data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// At the time-out the whole process group is killed and the error says so.
func TestRunLoggedTimeout(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	_, err := runLogged(context.Background(), []string{"/bin/sh", "-c", "sleep 60 & echo $! > " + pidFile + "; wait"}, os.Environ(), filepath.Join(dir, "bootcmd.log"), 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v", err)
	}
	data, _ := os.ReadFile(pidFile)
	pid := strings.TrimSpace(string(data))
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat("/proc/" + pid); pid == "" || err == nil {
		stat, _ := os.ReadFile("/proc/" + pid + "/stat")
		if !strings.Contains(string(stat), ") Z ") {
			t.Errorf("the background sleep (pid %q) survived the time-out", pid)
		}
	}
}

// A failing command's output is returned with its error.
func TestRunLoggedFailure(t *testing.T) {
	out, err := runLogged(context.Background(), []string{"/bin/sh", "-c", "echo nope >&2; exit 3"}, os.Environ(), filepath.Join(t.TempDir(), "bootcmd.log"), time.Minute)
	if err == nil || strings.TrimSpace(out) != "nope" {
		t.Errorf("out %q, err %v", out, err)
	}
}

// A disk boot without its data partition runs neither k3s nor runcmd; a
// live boot (the ISO) runs both on tmpfs by design.
func TestPersistent(t *testing.T) {
	for _, tc := range []struct {
		data datapart.Result
		live bool
		ok   bool
	}{
		{datapart.Result{Device: "/dev/vda4"}, false, true},
		{datapart.Result{TmpFS: true}, false, false},
		{datapart.Result{TmpFS: true}, true, true},
	} {
		s := &system{data: tc.data, rootInfo: rootInfo{Live: tc.live}}
		if err := s.persistent(); (err == nil) != tc.ok {
			t.Errorf("data %+v live %v: %v", tc.data, tc.live, err)
		}
	}
}

// A shutdown request during the boot steps cancels them and is returned;
// without one the steps run to their end and the request channel is left
// for later.
func TestRunUntilShutdown(t *testing.T) {
	ch := make(chan shutdownRequest, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		ch <- shutdownRequest{poweroff: true, why: "power button"}
	}()
	req, err := runUntilShutdown(context.Background(), ch, func(ctx context.Context) error {
		<-ctx.Done() // a long bootcmd
		return ctx.Err()
	})
	if req == nil || req.why != "power button" || err == nil {
		t.Fatalf("req %+v, err %v", req, err)
	}

	var stepCtx context.Context
	req, err = runUntilShutdown(context.Background(), ch, func(ctx context.Context) error { stepCtx = ctx; return nil })
	if req != nil || err != nil {
		t.Fatalf("no request: req %+v, err %v", req, err)
	}
	// What the steps started (the node watch) lives on after them.
	if stepCtx.Err() != nil {
		t.Fatalf("the steps' context was cancelled when they ended: %v", stepCtx.Err())
	}
	ch <- shutdownRequest{why: "later"}
	if r := <-ch; r.why != "later" {
		t.Errorf("a request after the boot went to %q", r.why)
	}
}

func TestClockFloor(t *testing.T) {
	build := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	saved := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	epoch := time.Unix(0, 0)
	if got, set := floorTime(epoch, build, time.Time{}); !set || !got.Equal(build) {
		t.Errorf("1970 without a saved time: %v %v, want the build epoch", got, set)
	}
	if got, set := floorTime(epoch, build, saved); !set || !got.Equal(saved) {
		t.Errorf("1970 with a saved time: %v %v, want the saved time", got, set)
	}
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	if got, set := floorTime(now, build, saved); set || !got.Equal(now) {
		t.Errorf("a sane clock: %v %v", got, set)
	}

	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/lib/ballast"), 0o755)
	os.MkdirAll(filepath.Join(root, "var/lib/ballast"), 0o755)
	os.WriteFile(filepath.Join(root, buildManifest), []byte(`{"ballast":"dev","source_date_epoch":1767225600}`), 0o644)
	os.WriteFile(filepath.Join(root, clockFile), []byte(saved.Format(time.RFC3339)+"\n"), 0o644)
	b, s := clockFloor(root)
	if !b.Equal(build) || !s.Equal(saved) {
		t.Errorf("clockFloor: build %v, saved %v", b, s)
	}
	// k3s is held while the clock is below the floor (setting it failed).
	if err := checkClockSane(root, epoch); err == nil || !strings.Contains(err.Error(), "1970-01-01T00:00:00Z, before 2026-11-30T12:00:00Z") {
		t.Errorf("a clock in 1970: %v", err)
	}
	if err := checkClockSane(root, now); err != nil {
		t.Errorf("a sane clock: %v", err)
	}
}
