// Package supervise runs the node's services: restart with exponential
// back-off, logs rotated by size, stop in reverse order. It also holds the
// init's zombie reaper.
package supervise

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Reaper reaps zombies whose parent is this process (PID 1 adopts every
// orphan) without racing exec.Cmd.Wait: it only reaps a zombie that nobody
// waited for within Grace. Code in the init that starts a process waits
// for it promptly (exec.Cmd.Run, or Wait in a goroutine right after Start;
// Go waits through a pidfd), so its zombie is gone long before Grace; what
// remains is an orphan. Zombies are found by scanning /proc for state Z
// with our PID as parent, and reaped through a pidfd so a PID recycled in
// between can never be reaped by mistake.
type Reaper struct {
	Proc  string        // /proc
	Grace time.Duration // default 2s
	Log   *slog.Logger
	// Tick, when set, runs at every pass of the loop: at least every
	// Grace/2 while the reaper is alive, never once it is stuck. PID 1
	// keeps its hardware watchdog alive from here.
	Tick func()

	mu     sync.Mutex
	seen   map[zombie]time.Time
	reaped int
}

type zombie struct {
	pid   int
	start string // /proc/<pid>/stat starttime: a PID plus start time is unique
}

// Reaped returns how many orphans were reaped so far.
func (r *Reaper) Reaped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reaped
}

// Run reaps until ctx ends. It wakes on SIGCHLD, and every Grace while
// zombies wait for their grace to pass.
func (r *Reaper) Run(ctx context.Context) {
	if r.Grace == 0 {
		r.Grace = 2 * time.Second
	}
	if r.Proc == "" {
		r.Proc = "/proc"
	}
	r.mu.Lock()
	r.seen = map[zombie]time.Time{}
	r.mu.Unlock()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGCHLD)
	defer signal.Stop(sigc)
	tick := time.NewTicker(r.Grace / 2)
	defer tick.Stop()
	for {
		// Reading every /proc/<pid>/stat is costly with a hundred
		// processes (a Kubernetes node) and SIGCHLD arriving often: scan
		// only when some child is a zombie, or one seen earlier waits out
		// its grace.
		r.mu.Lock()
		pending := len(r.seen) > 0
		r.mu.Unlock()
		if pending || r.Proc != "/proc" || zombieChild() {
			r.Scan(time.Now())
		}
		if r.Tick != nil {
			r.Tick()
		}
		select {
		case <-ctx.Done():
			return
		case <-sigc:
		case <-tick.C:
		}
	}
}

// Scan looks for zombie children once and reaps those older than Grace.
func (r *Reaper) Scan(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[zombie]time.Time{}
	}
	self := os.Getpid()
	ents, err := os.ReadDir(r.Proc)
	if err != nil {
		return
	}
	current := map[zombie]bool{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid, start, ok := readStat(filepath.Join(r.Proc, e.Name(), "stat"))
		if !ok || state != 'Z' || ppid != self {
			continue
		}
		z := zombie{pid, start}
		current[z] = true
		first, known := r.seen[z]
		if !known {
			r.seen[z] = now
			continue
		}
		if now.Sub(first) >= r.Grace {
			if r.reap(z) {
				delete(r.seen, z)
			}
		}
	}
	for z := range r.seen {
		if !current[z] {
			delete(r.seen, z) // waited for by its starter
		}
	}
}

func (r *Reaper) reap(z zombie) bool {
	fd, err := unix.PidfdOpen(z.pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	// The pidfd pins a process; make sure it is still the zombie we saw.
	state, _, start, ok := readStat(filepath.Join(r.Proc, strconv.Itoa(z.pid), "stat"))
	if !ok || state != 'Z' || start != z.start {
		return false
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil); err != nil {
		return false
	}
	r.reaped++
	if r.Log != nil {
		r.Log.Debug("reaped orphan", "pid", z.pid)
	}
	return true
}

// readStat returns state, ppid and starttime from /proc/<pid>/stat.
func readStat(path string) (state byte, ppid int, start string, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, "", false
	}
	// comm may contain spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, "", false
	}
	f := bytes.Fields(b[i+2:])
	// f[0]=state f[1]=ppid ... starttime is field 22 of stat, f[19] here.
	if len(f) < 20 {
		return 0, 0, "", false
	}
	ppid, err = strconv.Atoi(string(f[1]))
	if err != nil || len(f[0]) != 1 {
		return 0, 0, "", false
	}
	return f[0][0], ppid, string(f[19]), true
}

// zombieChild reports whether any child of this process has exited and
// waits to be reaped, without reaping it (WNOWAIT). An error (no children)
// is false.
func zombieChild() bool {
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
		return false
	}
	return info.Signo != 0
}
