// Package console is the init's log: a compact slog handler whose lines read
// well on a serial console and in the kernel log ("ballast: msg k=v"), and
// an in-memory ring of the last lines that the control agent serves as the
// "console" log.
package console

import (
	"bytes"
	"sync"
)

// Ring keeps the last lines written to it. It is an io.Writer: partial
// lines are held until their newline arrives.
type Ring struct {
	mu      sync.Mutex
	lines   []string
	next    int
	full    bool
	partial []byte
}

// NewRing returns a ring that keeps the last n lines (n >= 1).
func NewRing(n int) *Ring {
	if n < 1 {
		n = 1
	}
	return &Ring{lines: make([]string, n)}
}

// Write splits p into lines and keeps each complete one.
func (r *Ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data := p
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			r.partial = append(r.partial, data...)
			// A writer that never sends a newline must not grow us forever.
			if len(r.partial) > 64<<10 {
				r.add(string(r.partial))
				r.partial = r.partial[:0]
			}
			return len(p), nil
		}
		line := data[:i]
		if len(r.partial) > 0 {
			line = append(r.partial, line...)
			r.partial = r.partial[:0]
		}
		r.add(string(bytes.TrimRight(line, "\r")))
		data = data[i+1:]
	}
}

func (r *Ring) add(s string) {
	r.lines[r.next] = s
	r.next++
	if r.next == len(r.lines) {
		r.next = 0
		r.full = true
	}
}

// Last returns up to n of the most recent lines, oldest first. n <= 0
// means all kept lines.
func (r *Ring) Last(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []string
	if r.full {
		all = append(all, r.lines[r.next:]...)
	}
	all = append(all, r.lines[:r.next]...)
	if n > 0 && n < len(all) {
		all = all[len(all)-n:]
	}
	return all
}
