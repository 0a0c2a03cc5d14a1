// Package kubeproxy links upstream kube-proxy (k8s.io/kubernetes
// cmd/kube-proxy) as a sub-command of the runtime's multi-call binary.
package kubeproxy

import (
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

// Main runs kube-proxy with args (flags only) and returns its exit code.
func Main(args []string) int {
	cmd := app.NewProxyCommand()
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
