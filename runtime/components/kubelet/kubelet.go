// Package kubelet links upstream kubelet (k8s.io/kubernetes cmd/kubelet) as
// a sub-command of the runtime's multi-call binary.
package kubelet

import (
	"context"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kubelet/app"
)

// Main runs the kubelet with args (flags only) and returns its exit code.
// It installs a process-global signal handler: call it once per process.
func Main(args []string) int {
	cmd := app.NewKubeletCommand(context.Background())
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
