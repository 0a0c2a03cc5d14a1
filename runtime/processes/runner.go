// Package processes starts, watches and restarts one process per upstream
// component (k3s calls its 6443 join listener the "supervisor": that is
// package supervisor; this one only runs processes). kube-apiserver,
// kube-scheduler and the kubelet each install a process-global signal
// handler (k8s.io/apiserver pkg/server/signal.go panics on the second), so
// they cannot share a process as k3s's patched fork lets them; the runtime
// re-executes its own binary with a component name instead
// (`k3s kube-apiserver --flags...`).
//
// Components start in order, each after the previous one reports ready;
// a component that exits is restarted with exponential back-off; on stop
// they are signalled in reverse order. A component without a global signal
// handler of its own (flannel, the image importer) can instead run in this
// process (Component.Run): every re-executed process pays the start-up
// cost of the whole binary (Kubernetes' package init, ~20 MiB each), which
// is what a small agent cannot afford.
package processes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

// Component is one supervised process.
type Component struct {
	Name string
	// Path is the program; empty means this binary (os.Executable).
	Path string
	Args []string
	// Env is added to the runner's environment.
	Env []string
	// LogFile receives stdout and stderr (appended); empty discards them.
	LogFile string
	// Ready reports readiness (e.g. HTTPReady on /readyz); nil means ready
	// once started.
	Ready func(ctx context.Context) error
	// StopTimeout is how long to wait after SIGTERM before SIGKILL (10 s).
	StopTimeout time.Duration
	// Run, when set, runs the component in this process instead of
	// starting Path: it gets a context cancelled at stop and the log file
	// (or io.Discard), and is restarted like a process when it returns or
	// panics. It must return once ctx ends.
	Run func(ctx context.Context, log io.Writer) error
}

// Status of a component.
type Status struct {
	Name     string
	PID      int // 0 when not running
	Ready    bool
	Restarts int
	LastExit string // last exit status or start error
}

// Runner runs components.
type Runner struct {
	Components []Component
	// BackoffInitial and BackoffMax bound the restart delay (1 s, 30 s). The
	// delay doubles per crash and resets once a process ran BackoffMax.
	BackoffInitial, BackoffMax time.Duration
	// MaxLogSize is the size past which a component's LogFile is rotated
	// (10 MiB); KeepLogs how many rotated copies are kept (2), checked
	// every LogCheckInterval (30 s).
	MaxLogSize       int64
	KeepLogs         int
	LogCheckInterval time.Duration
	// ReadyInterval is how often Ready is polled until the component is
	// ready (1 s); after that, ten times less often.
	ReadyInterval time.Duration
	Logger        *slog.Logger

	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	c       Component
	s       *Runner
	stop    chan struct{}
	done    chan struct{}
	restart chan struct{} // Restart asks for one (buffered: 1)

	mu     sync.Mutex
	cmd    *exec.Cmd
	status Status
	ready  chan struct{} // closed when first ready
	once   sync.Once
}

func (s *Runner) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return s.Logger
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Run starts the components in order and supervises them until ctx ends,
// then stops them in reverse order. It returns ctx's error, or an error if
// a component never became ready before ctx ended.
func (s *Runner) Run(ctx context.Context) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("processes: %w", err)
	}
	rotStop := make(chan struct{})
	defer close(rotStop)
	go s.rotateLogs(rotStop)
	var startErr error
	for _, c := range s.Components {
		if c.Path == "" {
			c.Path = self
		}
		r := &proc{c: c, s: s, stop: make(chan struct{}), done: make(chan struct{}), ready: make(chan struct{}), restart: make(chan struct{}, 1)}
		r.status.Name = c.Name
		s.mu.Lock()
		s.procs = append(s.procs, r)
		s.mu.Unlock()
		go r.loop()
		select {
		case <-r.ready:
			s.log().Info("component ready", "component", c.Name)
			continue
		case <-ctx.Done():
			startErr = fmt.Errorf("processes: %s not ready: %w", c.Name, ctx.Err())
		}
		break
	}
	<-ctx.Done()
	s.mu.Lock()
	rs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	for i := len(rs) - 1; i >= 0; i-- {
		close(rs[i].stop)
		<-rs[i].done
		s.log().Info("component stopped", "component", rs[i].c.Name)
	}
	if startErr != nil {
		return startErr
	}
	return ctx.Err()
}

// errRestarted is a component's exit that Restart asked for.
var errRestarted = errors.New("restarted on request")

// Restart stops the named component (SIGTERM, then SIGKILL after its
// StopTimeout) and starts it again at once: no back-off, and not counted
// as a crash. It is an error when no such component was started.
func (s *Runner) Restart(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.procs {
		if r.c.Name == name {
			select {
			case r.restart <- struct{}{}:
			default: // one is pending already
			}
			return nil
		}
	}
	return fmt.Errorf("processes: no component %q", name)
}

// Status returns every started component's status, in start order.
func (s *Runner) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.procs))
	for _, r := range s.procs {
		r.mu.Lock()
		out = append(out, r.status)
		r.mu.Unlock()
	}
	return out
}

func (r *proc) setReady(ok bool) {
	r.mu.Lock()
	r.status.Ready = ok
	r.mu.Unlock()
	if ok {
		r.once.Do(func() { close(r.ready) })
	}
}

func (r *proc) loop() {
	defer close(r.done)
	log := r.s.log().With("component", r.c.Name)
	backoff := orDefault(r.s.BackoffInitial, time.Second)
	maxBackoff := orDefault(r.s.BackoffMax, 30*time.Second)
	for {
		started := time.Now()
		err := r.runOnce(log)
		r.setReady(false)
		r.mu.Lock()
		r.status.PID = 0
		if err != nil {
			r.status.LastExit = err.Error()
		}
		r.mu.Unlock()
		select {
		case <-r.stop:
			return
		default:
		}
		if errors.Is(err, errRestarted) {
			log.Info("component restarting on request")
			continue
		}
		if time.Since(started) >= maxBackoff {
			backoff = orDefault(r.s.BackoffInitial, time.Second)
		}
		log.Warn("component exited; restarting", "err", err, "in", backoff)
		select {
		case <-r.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
		r.mu.Lock()
		r.status.Restarts++
		r.mu.Unlock()
	}
}

// runOnce starts the process and waits for it to exit or for stop.
func (r *proc) runOnce(log *slog.Logger) error {
	logFile, err := r.openLog()
	if err != nil {
		return err
	}
	if logFile != nil {
		defer logFile.Close()
	}
	if r.c.Run != nil {
		return r.runInProcess(log, logFile)
	}
	cmd := exec.Command(r.c.Path, r.c.Args...)
	cmd.Env = append(os.Environ(), r.c.Env...)
	// A component must not outlive the runner (e.g. when it is killed).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if logFile != nil {
		cmd.Stdout, cmd.Stderr = logFile, logFile
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.status.PID = cmd.Process.Pid
	r.mu.Unlock()
	log.Info("component started", "pid", cmd.Process.Pid)

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return r.await(exited, func() { _ = cmd.Process.Signal(syscall.SIGTERM) }, func() error {
		log.Warn("component did not stop; killing")
		_ = cmd.Process.Kill()
		return exitError(<-exited)
	})
}

// openLog opens the component's log file for appending; nil without one.
func (r *proc) openLog() (*os.File, error) {
	if r.c.LogFile == "" {
		return nil, nil
	}
	f, err := os.OpenFile(r.c.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return f, nil
}

// runInProcess runs Component.Run in a goroutine and waits for it to
// return or for stop, then cancels it and waits StopTimeout for it.
func (r *proc) runInProcess(log *slog.Logger, logFile *os.File) error {
	var w io.Writer = io.Discard
	if logFile != nil {
		w = logFile
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exited := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				fmt.Fprintf(w, "panic: %v\n%s", p, debug.Stack())
				exited <- fmt.Errorf("panic: %v", p)
			}
		}()
		exited <- r.c.Run(ctx, w)
	}()
	r.mu.Lock()
	r.status.PID = os.Getpid()
	r.mu.Unlock()
	log.Info("component started in this process")
	return r.await(exited, cancel, func() error {
		log.Warn("component did not stop; leaving it")
		return errors.New("did not stop")
	})
}

// await polls readiness while the component runs and returns when it
// exits; at stop it asks it to end (term) and, if it has not within
// StopTimeout, returns what kill does.
func (r *proc) await(exited <-chan error, term func(), kill func() error) error {
	pollCtx, cancelPoll := context.WithCancel(context.Background())
	defer cancelPoll()
	go r.pollReady(pollCtx)
	stopping := func() error {
		term()
		select {
		case err := <-exited:
			return exitError(err)
		case <-time.After(orDefault(r.c.StopTimeout, 10*time.Second)):
			return kill()
		}
	}
	select {
	case err := <-exited:
		return exitError(err)
	case <-r.stop:
		return stopping()
	case <-r.restart:
		stopping()
		return errRestarted
	}
}

func exitError(err error) error {
	if err == nil {
		return errors.New("exited with status 0")
	}
	return err
}

func (r *proc) pollReady(ctx context.Context) {
	if r.c.Ready == nil {
		r.setReady(true)
		return
	}
	interval := orDefault(r.s.ReadyInterval, time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, interval*5)
		err := r.c.Ready(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.setReady(err == nil)
		next := interval
		if err == nil {
			// Ready: a slower pace (an apiserver /readyz is a datastore
			// query; every second of it is CPU a small node lacks).
			next = interval * 10
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// HTTPReady returns a readiness check that GETs url (e.g.
// https://127.0.0.1:6444/readyz) and wants a 200.
func HTTPReady(url string, client *http.Client) func(ctx context.Context) error {
	if client == nil {
		client = http.DefaultClient
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}
