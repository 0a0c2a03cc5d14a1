// Package containerd links containerd v2 into the runtime's multi-call
// binary: the daemon (`k3s containerd -c ... -a ...`), with the stargz
// snapshotter built in as k3s's containerd has it, and ctr. Its runc
// shim is a separate small executable (containerd-shim-runc-v2, built
// from upstream's package main): containerd starts one per pod.
package containerd

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins" // snapshotters, CRI, services
	"github.com/containerd/containerd/v2/cmd/containerd/command"
	"github.com/containerd/containerd/v2/cmd/ctr/app"
	_ "github.com/containerd/stargz-snapshotter/service/plugin" // the stargz snapshotter (eStargz lazy pulling), as k3s links it
)

// Socket and Namespace are where k3s's containerd listens and the
// namespace the CRI (and so Kubernetes) uses; ctr defaults to them.
const (
	Socket    = "/run/k3s/containerd/containerd.sock"
	Namespace = "k8s.io"
)

// Main runs the containerd daemon with args (flags only).
func Main(args []string) int {
	go releaseMemory(time.Minute)
	if err := command.App().Run(context.Background(), append([]string{"containerd"}, args...)); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		return 1
	}
	return 0
}

// releaseMemory hands containerd's free heap back to the system every
// period. Unpacking images at boot grows its heap by tens of MiB that the
// runtime's scavenger returns only slowly: an idle agent measured 43 MiB
// for containerd after a forced collection and 78 MiB without.
func releaseMemory(period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for range t.C {
		debug.FreeOSMemory()
	}
}

// Ctr runs ctr against k3s's containerd and the k8s.io namespace unless
// CONTAINERD_ADDRESS / CONTAINERD_NAMESPACE (or the flags) say otherwise.
func Ctr(args []string) int {
	if _, ok := os.LookupEnv("CONTAINERD_ADDRESS"); !ok {
		os.Setenv("CONTAINERD_ADDRESS", Socket)
	}
	if _, ok := os.LookupEnv("CONTAINERD_NAMESPACE"); !ok {
		os.Setenv("CONTAINERD_NAMESPACE", Namespace)
	}
	if err := app.New().Run(context.Background(), append([]string{"ctr"}, args...)); err != nil {
		fmt.Fprintln(os.Stderr, "ctr:", err)
		return 1
	}
	return 0
}
