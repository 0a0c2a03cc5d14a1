package debian

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/dustin/go-humanize"
)

// progress reports downloads: on a terminal a single redrawn line with
// bytes done of bytes expected; elsewhere one line per download.
type progress struct {
	w   io.Writer
	tty bool

	mu          sync.Mutex
	done, total int64
	active      int
	label       string
	lastDraw    time.Time
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

// start registers one download of size bytes (-1 unknown) and returns the
// function that ends it.
func (p *progress) start(label string, size int64) func() {
	if p == nil || p.w == nil {
		return func() {}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active++
	p.label = label
	if size > 0 {
		p.total += size
	}
	if !p.tty {
		if size > 0 {
			fmt.Fprintf(p.w, "debian: fetching %s (%s)\n", label, humanize.IBytes(uint64(size)))
		} else {
			fmt.Fprintf(p.w, "debian: fetching %s\n", label)
		}
	} else {
		p.drawLocked(true)
	}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.active--
		if p.tty {
			p.drawLocked(true)
			if p.active == 0 {
				fmt.Fprintln(p.w)
				p.done, p.total = 0, 0
			}
		}
	}
}

func (p *progress) add(n int64) {
	if p == nil || p.w == nil || !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.drawLocked(false)
}

func (p *progress) drawLocked(force bool) {
	now := time.Now()
	if !force && now.Sub(p.lastDraw) < 100*time.Millisecond {
		return
	}
	p.lastDraw = now
	const width = 30
	filled := 0
	if p.total > 0 {
		filled = int(min(p.done, p.total) * width / p.total)
	}
	bar := make([]byte, width)
	for i := range bar {
		if i < filled {
			bar[i] = '='
		} else {
			bar[i] = ' '
		}
	}
	label := p.label
	if len(label) > 40 {
		label = label[:37] + "..."
	}
	fmt.Fprintf(p.w, "\r\x1b[K[%s] %s / %s  %s", bar, humanize.IBytes(uint64(p.done)), humanize.IBytes(uint64(p.total)), label)
}

type countingReader struct {
	r io.Reader
	p *progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.add(int64(n))
	return n, err
}
