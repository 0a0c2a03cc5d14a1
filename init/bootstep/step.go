// Package bootstep runs the boot as a table of named steps: each step is
// executed, logged with its duration and recorded as an agent.Stage whose
// start is relative to the kernel's start.
package bootstep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ballast-os/ballast/init/agent"
)

// Phases of the boot.
const (
	PhaseInitramfs = "initramfs"
	PhaseSystem    = "system"
)

// ErrSkip, returned (possibly wrapped) by a step, records the step as
// skipped rather than failed; the wrapped message says why.
var ErrSkip = errors.New("skipped")

// Skip returns an error that marks the step skipped with a reason.
func Skip(reason string) error { return fmt.Errorf("%w: %s", ErrSkip, reason) }

// ErrWarn, returned (possibly wrapped) by a step, records the step as done
// with a warning: something a person should know that does not make the
// boot worse (no NTP server reachable on an air-gapped node, a driver that
// found no device).
var ErrWarn = errors.New("warning")

// Warn returns an error that marks the step done with a warning.
func Warn(err error) error { return fmt.Errorf("%w: %w", ErrWarn, err) }

// Step is one named piece of the boot.
type Step struct {
	Name string
	Run  func(ctx context.Context) error
	// Fatal steps stop the sequence when they fail; the others are logged
	// and the boot goes on (a node that boots with a problem can report it).
	Fatal bool
}

// Clock is the time source; tests inject a fake one.
type Clock interface{ Now() time.Time }

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

// FatalError is returned by Run when a fatal step fails.
type FatalError struct {
	Step string
	Err  error
}

func (e *FatalError) Error() string { return "step " + e.Step + ": " + e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// Runner executes steps and records them. The zero value is not usable:
// set Phase, Clock, KernelStart and Log.
type Runner struct {
	Phase       string
	Clock       Clock
	KernelStart time.Time
	Log         *slog.Logger

	mu     sync.Mutex
	stages []agent.Stage
}

// Run executes steps in order. It returns a *FatalError for the first fatal
// step that fails; non-fatal failures are recorded and logged only.
func (r *Runner) Run(ctx context.Context, steps []Step) error {
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.RunOne(ctx, s); err != nil && s.Fatal {
			return &FatalError{Step: s.Name, Err: err}
		}
	}
	return nil
}

// RunOne executes one step and records it, returning its error (nil when
// skipped).
func (r *Runner) RunOne(ctx context.Context, s Step) error {
	start := r.Clock.Now()
	err := s.Run(ctx)
	took := r.Clock.Now().Sub(start)
	st := agent.Stage{
		Name:       s.Name,
		Phase:      r.Phase,
		StartMS:    start.Sub(r.KernelStart).Milliseconds(),
		DurationMS: took.Milliseconds(),
	}
	switch {
	case err == nil:
		r.Log.Info("step done", "step", s.Name, "took", took)
	case errors.Is(err, ErrSkip):
		st.Skipped = true
		r.Log.Info("step skipped", "step", s.Name, "why", err.Error())
		err = nil
	case errors.Is(err, ErrWarn):
		st.Warning = strings.TrimPrefix(err.Error(), ErrWarn.Error()+": ")
		r.Log.Warn("step done with a warning", "step", s.Name, "took", took, "warning", st.Warning)
		err = nil
	default:
		st.Error = err.Error()
		r.Log.Error("step failed", "step", s.Name, "took", took, "err", err)
	}
	r.Record(st)
	return err
}

// Record appends a stage that was measured elsewhere (the initramfs
// stages, handed over to the system phase).
func (r *Runner) Record(st ...agent.Stage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stages = append(r.stages, st...)
}

// Stages returns a copy of the stages recorded so far.
func (r *Runner) Stages() []agent.Stage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]agent.Stage(nil), r.stages...)
}

// KernelStart computes when the kernel started from /proc/uptime (its
// first field is seconds since boot) and the current time.
func KernelStart(now time.Time, uptimePath string) (time.Time, error) {
	b, err := os.ReadFile(uptimePath)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading uptime: %w", err)
	}
	f := bytes.Fields(b)
	if len(f) == 0 {
		return time.Time{}, fmt.Errorf("%s: empty", uptimePath)
	}
	secs, err := strconv.ParseFloat(string(f[0]), 64)
	if err != nil || secs < 0 {
		return time.Time{}, fmt.Errorf("%s: bad uptime %q", uptimePath, f[0])
	}
	return now.Add(-time.Duration(secs * float64(time.Second))), nil
}
