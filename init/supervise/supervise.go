package supervise

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ballast-os/ballast/init/agent"
	"github.com/ballast-os/ballast/init/console"
)

// Service states, as the agent reports them.
const (
	StateStarting = "starting"
	StateRunning  = "running"
	StateBackoff  = "backoff"
	StateStopped  = "stopped"
	StateFailed   = "failed"
)

// Service is a long-running program to keep running.
type Service struct {
	Name string
	Argv []string
	Env  []string // the complete environment; nil inherits the init's
	Dir  string
}

// Supervisor starts services and keeps them running.
type Supervisor struct {
	LogDir     string    // /var/log
	Console    io.Writer // a failed service's last lines go here
	Log        *slog.Logger
	Backoff    Backoff // DefaultBackoff if zero
	MaxLogSize int64   // default 1 MiB
	KeepLogs   int     // rotated files kept, default 3
	TailLines  int     // lines kept in memory per service, default 200

	mu       sync.Mutex
	services []*running
}

type running struct {
	svc  Service
	log  *LogFile
	ring *console.Ring
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	state    string
	pid      int
	restarts int
	since    time.Time
	lastExit string
}

// Start begins supervising svc; it returns at once. Names are unique.
func (s *Supervisor) Start(svc Service) error {
	if len(svc.Argv) == 0 {
		return fmt.Errorf("service %q: empty command", svc.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.services {
		if r.svc.Name == svc.Name {
			return fmt.Errorf("service %q already supervised", svc.Name)
		}
	}
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		return fmt.Errorf("service %q: %w", svc.Name, err)
	}
	r := &running{
		svc:   svc,
		log:   &LogFile{Path: filepath.Join(s.LogDir, svc.Name+".log"), MaxSize: orDefault(s.MaxLogSize, 1<<20), Keep: orDefault(s.KeepLogs, 3)},
		ring:  console.NewRing(orDefault(s.TailLines, 200)),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		state: StateStarting,
		since: time.Now(),
	}
	s.services = append(s.services, r)
	go s.loop(r)
	return nil
}

func orDefault[T int | int64](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

func (s *Supervisor) backoff() Backoff {
	if s.Backoff == (Backoff{}) {
		return DefaultBackoff
	}
	return s.Backoff
}

func (r *running) set(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

func (s *Supervisor) loop(r *running) {
	defer close(r.done)
	defer r.log.Close()
	var delay time.Duration
	for {
		start := time.Now()
		err := s.runOnce(r)
		ranFor := time.Since(start)
		select {
		case <-r.stop:
			r.set(func() { r.state, r.pid, r.since = StateStopped, 0, time.Now() })
			return
		default:
		}
		exit := describeExit(err)
		delay = s.backoff().Next(delay, ranFor)
		r.set(func() {
			r.state, r.pid, r.since, r.lastExit = StateBackoff, 0, time.Now(), exit
			r.restarts++
		})
		s.Log.Error("service exited; restarting", "service", r.svc.Name, "exit", exit, "ran", ranFor.Round(time.Millisecond), "restart_in", delay)
		if s.Console != nil {
			for _, l := range r.ring.Last(10) {
				fmt.Fprintf(s.Console, "%s%s| %s\n", console.Prefix, r.svc.Name, l)
			}
		}
		select {
		case <-r.stop:
			r.set(func() { r.state, r.since = StateStopped, time.Now() })
			return
		case <-time.After(delay):
		}
	}
}

func describeExit(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		return ee.ProcessState.String()
	default:
		return err.Error()
	}
}

// runOnce starts the service and waits for it to end.
func (s *Supervisor) runOnce(r *running) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(r.svc.Argv[0], r.svc.Argv[1:]...)
	cmd.Env, cmd.Dir = r.svc.Env, r.svc.Dir
	// A file, not an io.Writer: no copying goroutines inside exec, so Wait
	// returns when the process ends even if a grandchild holds the pipe.
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.mu.Lock()
	select {
	case <-r.stop:
		r.mu.Unlock()
		pr.Close()
		pw.Close()
		return errors.New("stopped before start")
	default:
	}
	r.state, r.since = StateStarting, time.Now()
	// Start under the lock so stop never misses a PID that is being born.
	err = cmd.Start()
	if err == nil {
		r.state, r.pid, r.since = StateRunning, cmd.Process.Pid, time.Now()
	}
	r.mu.Unlock()
	pw.Close()
	if err != nil {
		pr.Close()
		fmt.Fprintf(r.log, "ballast: start failed: %v\n", err)
		r.ring.Write([]byte("start failed: " + err.Error() + "\n"))
		return err
	}
	s.Log.Info("service started", "service", r.svc.Name, "pid", cmd.Process.Pid)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text() + "\n"
			r.log.Write([]byte(line))
			r.ring.Write([]byte(line))
		}
	}()
	err = cmd.Wait()
	select {
	case <-copied:
	case <-time.After(200 * time.Millisecond): // a daemonized child keeps the pipe
	}
	return err
}

// Status reports every service, in start order.
func (s *Supervisor) Status() []agent.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]agent.Service, 0, len(s.services))
	for _, r := range s.services {
		r.mu.Lock()
		out = append(out, agent.Service{Name: r.svc.Name, State: r.state, PID: r.pid, Restarts: r.restarts, Since: r.since, LastExit: r.lastExit})
		r.mu.Unlock()
	}
	return out
}

// Logs returns the last n lines a service printed (from memory; the full
// log is in LogDir).
func (s *Supervisor) Logs(name string, n int) ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.services {
		if r.svc.Name == name {
			return r.ring.Last(n), true
		}
	}
	return nil, false
}

// StopAll stops every service in reverse start order: SIGTERM to the
// service's process group, then SIGKILL after timeout.
func (s *Supervisor) StopAll(ctx context.Context, timeout time.Duration) {
	s.mu.Lock()
	svcs := slices.Clone(s.services)
	s.mu.Unlock()
	slices.Reverse(svcs)
	for _, r := range svcs {
		s.stop(r, timeout)
	}
}

func (s *Supervisor) stop(r *running, timeout time.Duration) {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	signalled := 0
	deadline := time.After(timeout)
	sig := syscall.SIGTERM
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		// Re-read the PID each time: the service may be between starts.
		r.mu.Lock()
		pid := r.pid
		r.mu.Unlock()
		if pid > 0 && pid != signalled {
			syscall.Kill(-pid, sig)
			signalled = pid
		}
		select {
		case <-r.done:
			s.Log.Info("service stopped", "service", r.svc.Name)
			return
		case <-deadline:
			s.Log.Warn("service did not stop; killing", "service", r.svc.Name, "pid", pid)
			sig, signalled = syscall.SIGKILL, 0
		case <-tick.C:
		}
	}
}

// String lists services for logs.
func (s *Supervisor) String() string {
	var names []string
	for _, st := range s.Status() {
		names = append(names, st.Name+"="+st.State)
	}
	return strings.Join(names, " ")
}
