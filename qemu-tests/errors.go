package qemutest

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel causes, for errors.Is.
var (
	// ErrConsoleFatal: the console showed a kernel panic, an oops, a
	// "ballast: FATAL" line or firmware with nothing to boot.
	ErrConsoleFatal = errors.New("the console shows the boot failed")
	// ErrExited: QEMU exited while something was still awaited.
	ErrExited = errors.New("QEMU exited")
)

// MachineError is how every wait and operation of a Machine fails: what
// was being done, why, and the evidence: the last console lines and
// QEMU's own error output.
type MachineError struct {
	Op      string // "WaitReady", "Start", "Shutdown", ...
	Err     error  // the cause: ErrConsoleFatal, ErrExited, a context error, ...
	Fatal   string // the console line that matched a fatal pattern, if any
	Console []string
	LogPath string // the full console log
	Stderr  string // the end of QEMU's stderr
}

func (e *MachineError) Unwrap() error { return e.Err }

func (e *MachineError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "qemutest: %s: %v", e.Op, e.Err)
	if e.Fatal != "" {
		fmt.Fprintf(&b, "\nfatal console line: %s", strings.TrimSpace(e.Fatal))
	}
	fmt.Fprintf(&b, "\nlast %d console lines", len(e.Console))
	if e.LogPath != "" {
		fmt.Fprintf(&b, " (all of them in %s)", e.LogPath)
	}
	b.WriteString(":")
	for _, l := range e.Console {
		b.WriteString("\n  | " + l)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		b.WriteString("\nQEMU stderr:")
		for _, l := range strings.Split(s, "\n") {
			b.WriteString("\n  ! " + l)
		}
	}
	return b.String()
}
