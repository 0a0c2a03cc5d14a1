package qemutest

import (
	"bufio"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"
)

// DefaultFatalPatterns are console lines that mean the boot has failed
// for good: waits end at once with the lines around them rather than at
// their deadline.
var DefaultFatalPatterns = []string{
	`Kernel panic - not syncing`,
	`\b[0-9a-f]{4} \[#\d+\]`, // an oops header: "int3: 0000 [#1] PREEMPT SMP NOPTI"
	`BUG: kernel NULL pointer dereference`,
	`BUG: unable to handle`,
	`ballast: FATAL`,
	// Firmware and boot loaders that found nothing to boot.
	`Boot failed: not a bootable disk`,
	`No bootable device`,
	`No bootable option or device was found`,
	`UEFI Interactive Shell v`,          // OVMF fell through to its shell
	`you need to load the kernel first`, // GRUB, after a failed "linux"
}

// endPatterns close a fatal report: once seen, nothing more is waited for.
var endPatterns = regexp.MustCompile(`---\[ end (Kernel panic|trace)|Kernel Offset:|Rebooting in|reboot: Restarting`)

// fatalSettle is how long the console may go on after a fatal line (the
// rest of an oops) before waits report it.
const fatalSettle = 3 * time.Second

// TailLines is how many console lines an error carries.
const TailLines = 40

// maxLines bounds the lines kept in memory for one boot; the log file
// has them all.
const maxLines = 50000

var ansi = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>c])`)

// console collects one boot's serial console: every line, and the first
// line that matched a fatal pattern.
type console struct {
	fatal *regexp.Regexp

	mu      sync.Mutex
	lines   []string
	dropped int           // lines dropped from the front (maxLines)
	changed chan struct{} // closed and replaced at every line and at the end
	closed  bool          // the stream ended (QEMU exited)

	fatalLine  string    // the first fatal line, "" when none
	fatalIndex int       // its index, counting dropped lines
	fatalTime  time.Time // when it came
	fatalEnded bool      // an end pattern followed it
}

func newConsole(patterns []string) (*console, error) {
	re, err := regexp.Compile(strings.Join(patterns, "|"))
	if err != nil {
		return nil, err
	}
	return &console{fatal: re, changed: make(chan struct{})}, nil
}

// copyFrom reads the console stream to its end, copying it raw to log.
func (c *console) copyFrom(r io.Reader, log io.Writer) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 {
			if log != nil {
				log.Write([]byte(line))
			}
			c.add(line)
		}
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	c.closed = true
	c.notifyLocked()
	c.mu.Unlock()
}

func (c *console) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// add takes one raw line (a last line may lack its newline).
func (c *console) add(raw string) {
	line := strings.TrimRight(ansi.ReplaceAllString(raw, ""), "\r\n")
	// Firmware redraws lines with bare carriage returns: keep what is
	// left on the screen.
	if i := strings.LastIndexByte(strings.TrimRight(line, "\r "), '\r'); i >= 0 {
		line = line[i+1:]
	}
	line = strings.Map(func(r rune) rune {
		if r < ' ' && r != '\t' {
			return -1
		}
		return r
	}, line)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, line)
	if len(c.lines) > maxLines {
		n := len(c.lines) - maxLines
		c.lines = append(c.lines[:0:0], c.lines[n:]...)
		c.dropped += n
	}
	if c.fatalLine == "" && c.fatal.MatchString(line) {
		c.fatalLine = line
		c.fatalIndex = c.dropped + len(c.lines) - 1
		c.fatalTime = time.Now()
	} else if c.fatalLine != "" && endPatterns.MatchString(line) {
		c.fatalEnded = true
	}
	c.notifyLocked()
}

// snapshot returns the lines from index from on (counting dropped
// lines), the channel that closes at the next change, and whether the
// stream has ended.
func (c *console) snapshot(from int) (lines []string, next int, changed <-chan struct{}, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	from = max(from-c.dropped, 0)
	if from < len(c.lines) {
		lines = c.lines[from:]
	}
	return lines, c.dropped + len(c.lines), c.changed, c.closed
}

// fatalReport says whether a fatal line has been seen and has settled:
// its report is complete (an end line, TailLines more lines, the stream
// ended, or fatalSettle passed). wait is how long until it settles.
func (c *console) fatalReport() (line string, settled bool, wait time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fatalLine == "" {
		return "", false, 0
	}
	after := c.dropped + len(c.lines) - 1 - c.fatalIndex
	left := fatalSettle - time.Since(c.fatalTime)
	if c.fatalEnded || c.closed || after >= TailLines || left <= 0 {
		return c.fatalLine, true, 0
	}
	return c.fatalLine, false, left
}

// tail returns the last n lines.
func (c *console) tail(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := max(len(c.lines)-n, 0)
	return append([]string(nil), c.lines[start:]...)
}

// contains reports whether a line matching re has been seen.
func (c *console) contains(re *regexp.Regexp) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}
