package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// powerCommands are the names the init answers to when a person runs it
// on the node (links in /usr/sbin): each asks PID 1 for a clean shutdown
// with the signal it reads (see watchSignals). ballast has no halted
// state: halt powers off, as it does on most systems today.
var powerCommands = map[string]struct {
	sig  unix.Signal
	what string
}{
	"reboot":   {unix.SIGTERM, "reboot"},
	"poweroff": {unix.SIGUSR2, "power off"},
	"halt":     {unix.SIGUSR2, "power off"},
}

// isPowerCommand reports whether argv0 names one of powerCommands.
func isPowerCommand(argv0 string) bool {
	_, ok := powerCommands[filepath.Base(argv0)]
	return ok
}

// powerCommand runs reboot, poweroff or halt: it signals PID 1 (kill is
// the signal sender, injected by tests) and returns the exit code. The
// shutdown itself (services stopped in order, data synced and unmounted)
// is PID 1's; the command returns at once, as systemctl's does.
func powerCommand(args []string, stdout, stderr io.Writer, kill func(pid int, sig unix.Signal) error) int {
	name := filepath.Base(args[0])
	c := powerCommands[name]
	for _, a := range args[1:] {
		switch a {
		case "-h", "--help":
			fmt.Fprintf(stdout, "usage: %s\n\nAsks ballast's init (PID 1) to stop the services, sync and unmount the data partition, and %s.\nFlags of other systems' %s (-f, -p, --force, ...) are accepted and ignored: the shutdown is always clean.\n", name, c.what, name)
			return 0
		}
	}
	if err := kill(1, c.sig); err != nil {
		if errors.Is(err, unix.EPERM) {
			fmt.Fprintf(stderr, "%s: only root may %s this node\n", name, c.what)
		} else {
			fmt.Fprintf(stderr, "%s: signalling init: %v\n", name, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: the node will %s once its services have stopped\n", name, c.what)
	return 0
}
