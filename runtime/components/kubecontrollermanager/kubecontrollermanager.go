// Package kubecontrollermanager links upstream kube-controller-manager
// (k8s.io/kubernetes cmd/kube-controller-manager) as a sub-command of the
// runtime's multi-call binary.
package kubecontrollermanager

import (
	_ "time/tzdata" // CronJob time zones, as upstream's main imports

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// Main runs kube-controller-manager with args (flags only) and returns its
// exit code. Call it once per process.
func Main(args []string) int {
	cmd := app.NewControllerManagerCommand()
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
