package bootstep

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeClock advances by step on each Now call.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) Now() time.Time { t := c.t; c.t = c.t.Add(c.step); return t }

func TestRunRecordsStages(t *testing.T) {
	k := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &fakeClock{t: k.Add(500 * time.Millisecond), step: 10 * time.Millisecond}
	var logbuf bytes.Buffer
	r := &Runner{Phase: PhaseSystem, Clock: clk, KernelStart: k, Log: slog.New(slog.NewTextHandler(&logbuf, nil))}
	var ran []string
	step := func(name string, err error, fatal bool) Step {
		return Step{Name: name, Fatal: fatal, Run: func(context.Context) error { ran = append(ran, name); return err }}
	}
	err := r.Run(context.Background(), []Step{
		step("mounts", nil, true),
		step("cgroups", errors.New("no memory"), false),
		step("modules", Skip("none listed"), true),
		step("datapart", errors.New("disk gone"), true),
		step("never", nil, false),
	})
	var fe *FatalError
	if !errors.As(err, &fe) || fe.Step != "datapart" {
		t.Fatalf("Run error = %v, want fatal datapart", err)
	}
	if strings.Join(ran, ",") != "mounts,cgroups,modules,datapart" {
		t.Fatalf("ran %v", ran)
	}
	st := r.Stages()
	if len(st) != 4 {
		t.Fatalf("stages = %+v", st)
	}
	if st[0].StartMS != 500 || st[0].DurationMS != 10 || st[0].Phase != PhaseSystem {
		t.Errorf("stage 0 = %+v", st[0])
	}
	if st[1].StartMS != 520 || st[1].Error != "no memory" {
		t.Errorf("stage 1 = %+v", st[1])
	}
	if !st[2].Skipped || st[2].Error != "" {
		t.Errorf("stage 2 = %+v", st[2])
	}
	if !strings.Contains(logbuf.String(), "step failed") {
		t.Errorf("log lacks failure: %s", logbuf.String())
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := &Runner{Clock: SystemClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err := r.Run(ctx, []Step{{Name: "x", Run: func(context.Context) error { t.Fatal("ran"); return nil }}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestKernelStart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "uptime")
	os.WriteFile(p, []byte("12.25 40.00\n"), 0o644)
	now := time.Date(2025, 1, 1, 0, 1, 0, 0, time.UTC)
	ks, err := KernelStart(now, p)
	if err != nil {
		t.Fatal(err)
	}
	if got := now.Sub(ks); got != 12250*time.Millisecond {
		t.Fatalf("uptime = %v", got)
	}
	os.WriteFile(p, []byte("x"), 0o644)
	if _, err := KernelStart(now, p); err == nil {
		t.Fatal("bad uptime accepted")
	}
}

func BenchmarkStepFramework(b *testing.B) {
	r := &Runner{Phase: PhaseSystem, Clock: SystemClock{}, KernelStart: time.Now(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	steps := make([]Step, 20)
	for i := range steps {
		steps[i] = Step{Name: "s", Run: func(context.Context) error { return nil }}
	}
	for b.Loop() {
		r.stages = r.stages[:0]
		r.Run(context.Background(), steps)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/20, "ns/step")
}

func TestWarnRecordsDoneWithWarning(t *testing.T) {
	r := &Runner{Phase: PhaseSystem, Clock: SystemClock{}, KernelStart: time.Now(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err := r.RunOne(context.Background(), Step{Name: "time", Run: func(context.Context) error {
		return Warn(errors.New("no NTP server answered"))
	}})
	if err != nil {
		t.Fatalf("a warning is not a failure: %v", err)
	}
	st := r.Stages()
	if len(st) != 1 || st[0].Error != "" || st[0].Skipped || st[0].Warning != "no NTP server answered" {
		t.Fatalf("stage %+v", st)
	}
}
