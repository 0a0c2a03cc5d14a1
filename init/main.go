// Command init is ballast's PID 1. The same static binary runs twice: as
// /init in the initramfs, where it finds and mounts the system image and
// switches root to it, and as /usr/lib/ballast/init, where it configures
// the node from cloud-config, supervises services and shuts down cleanly.
// Run as reboot, poweroff or halt (links in /usr/sbin), it asks PID 1 to.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ballast-os/ballast/init/bootstep"
	"github.com/ballast-os/ballast/init/console"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

const (
	initramfsMarker = "/etc/ballast/modules.load"
	systemInit      = "/usr/lib/ballast/init"
	stagesFile      = "/run/ballast/stages.json"
	rootFile        = "/run/ballast/root.json"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-version" || os.Args[1] == "--version") {
		fmt.Println(version)
		return
	}
	if isPowerCommand(os.Args[0]) {
		os.Exit(powerCommand(os.Args, os.Stdout, os.Stderr, unix.Kill))
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "ballast init", version, ": must run as PID 1")
		os.Exit(2)
	}
	start := time.Now()
	// Before anything else: /dev/console may not be there until /dev is mounted.
	out := openConsole()
	ring := console.NewRing(2000)
	log := console.New(io.MultiWriter(out, ring)).With()
	ks, err := bootstep.KernelStart(start, "/proc/uptime")
	if err != nil {
		ks = start // /proc not mounted yet in the initramfs; fixed below
	}
	ctx := context.Background()
	if _, err := os.Stat(initramfsMarker); err == nil {
		runInitramfs(ctx, &initramfs{log: log, out: out, ring: ring, start: start})
		return // not reached: it switches root or halts
	}
	runSystem(ctx, newSystem(log, out, ring, ks))
}

// openConsole opens /dev/console for writing, making it stdout and stderr
// too so panics and children land there. It falls back to stderr.
func openConsole() io.Writer {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return os.Stderr
	}
	unix.Dup2(int(f.Fd()), 1)
	unix.Dup2(int(f.Fd()), 2)
	return f
}

// fatal prints a FATAL line (which the QEMU harness looks for) with what
// was found, waits so a person can read it, and reboots. PID 1 must not
// exit: the kernel would panic with a message that hides ours.
func fatal(out io.Writer, log *slog.Logger, err error, found string) {
	fmt.Fprintf(out, "%sFATAL: %v\n", console.Prefix, err)
	if found != "" {
		fmt.Fprintf(out, "%sfound: %s\n", console.Prefix, found)
	}
	fmt.Fprintf(out, "%srebooting in 30 seconds\n", console.Prefix)
	time.Sleep(30 * time.Second)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		log.Error("reboot failed", "err", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}
