// Command pause is PID 1 of a pod sandbox (the image
// docker.io/rancher/mirrored-pause:3.6 on a ballast node): it holds the
// pod's namespaces open, reaps the zombies of processes that end up as its
// children, and exits 0 on SIGINT or SIGTERM. It uses the standard library
// only: the image builder compiles it from its embedded source.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const version = "ballast-pause-1"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println(version)
		return
	}
	// PID 1 gets no default signal dispositions from the kernel: without
	// these handlers SIGTERM would be ignored and the pod would only stop
	// after the kill timeout.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: got %v, exiting\n", s)
		os.Exit(0)
	}
}

// reap collects every child that has exited. Signals coalesce, so one
// SIGCHLD may stand for many children.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
