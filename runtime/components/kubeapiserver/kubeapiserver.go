// Package kubeapiserver links upstream kube-apiserver (k8s.io/kubernetes
// cmd/kube-apiserver) as a sub-command of the runtime's multi-call binary.
package kubeapiserver

import (
	_ "time/tzdata" // CronJob time zones, as upstream's main imports

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// Main runs kube-apiserver with args (flags only, without the program
// name) and returns its exit code. It installs a process-global signal
// handler: call it once per process.
func Main(args []string) int {
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
