package k3s

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// asContainerInit runs when k3s is PID 1, as in a container (`docker run
// ... ballast/k3s server`): orphans are re-parented to PID 1 (containerd's
// shims fork away from containerd, probes and mounts leave children), and
// nothing else would reap them. PID 1 starts the same command as its only
// child, passes signals on, reaps every process that ends, and exits with
// the child's status. Keeping the reaper out of the process that runs
// components keeps it from racing exec.Cmd.Wait for their exit statuses.
func asContainerInit(args []string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "k3s:", err)
		return 1
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCHLD)
	cmd := exec.Command(self, args[1:]...)
	cmd.Args[0] = args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), containerInitEnv+"=1")
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "k3s:", err)
		return 1
	}
	child := cmd.Process.Pid
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			_ = cmd.Process.Signal(sig)
			continue
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil || pid <= 0 {
				break
			}
			if pid == child {
				switch {
				case ws.Exited():
					return ws.ExitStatus()
				case ws.Signaled():
					return 128 + int(ws.Signal())
				}
				return 1
			}
		}
	}
	return 1
}

// containerInitEnv marks the child of asContainerInit, so that it does not
// take the PID 1 role again (in a PID namespace of its own it would not
// be PID 1 anyway; the variable makes that explicit).
const containerInitEnv = "BALLAST_K3S_UNDER_INIT"

// needsContainerInit: this process is PID 1 and runs a long-lived command.
func needsContainerInit(args []string, getpid func() int, lookupEnv func(string) (string, bool)) bool {
	if getpid() != 1 || len(args) < 2 {
		return false
	}
	if _, under := lookupEnv(containerInitEnv); under {
		return false
	}
	return args[1] == "server" || args[1] == "agent"
}
