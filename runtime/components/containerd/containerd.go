// Package containerd links containerd v2 into the runtime's multi-call
// binary: the daemon (`k3s containerd -c ... -a ...`), its runc v2 shim
// (the binary answers as containerd-shim-runc-v2, the name containerd
// looks up on PATH, and to the shim's own re-execution), and ctr.
package containerd

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task/plugin" // the shim's task service
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"                  // snapshotters, CRI, services
	"github.com/containerd/containerd/v2/cmd/containerd/command"
	"github.com/containerd/containerd/v2/cmd/ctr/app"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// Socket and Namespace are where k3s's containerd listens and the
// namespace the CRI (and so Kubernetes) uses; ctr defaults to them.
const (
	Socket    = "/run/k3s/containerd/containerd.sock"
	Namespace = "k8s.io"
)

// Main runs the containerd daemon with args (flags only).
func Main(args []string) int {
	if err := command.App().Run(context.Background(), append([]string{"containerd"}, args...)); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		return 1
	}
	return 0
}

// Shim runs the runc v2 shim. It parses os.Args itself (containerd calls
// it as `containerd-shim-runc-v2 -namespace ... start`, and it re-executes
// os.Executable() with `-namespace ...`), so args is unused.
func Shim(args []string) int {
	shim.RunShim(context.Background(), manager.NewShimManager("io.containerd.runc.v2"))
	return 0
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
