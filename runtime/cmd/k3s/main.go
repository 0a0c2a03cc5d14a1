// Command k3s is ballast's k3s-compatible runtime: one multi-call binary
// that answers as k3s and kubectl, and re-executes itself as each upstream
// component under the server's supervisor (`k3s kube-apiserver ...`).
// The command logic lives in package k3s; this file links the upstream
// components in.
package main

import (
	"os"

	"github.com/ballast-os/ballast/runtime/components/containerd"
	"github.com/ballast-os/ballast/runtime/components/crictl"
	"github.com/ballast-os/ballast/runtime/components/etcd"
	"github.com/ballast-os/ballast/runtime/components/etcdctl"
	"github.com/ballast-os/ballast/runtime/components/flannel"
	"github.com/ballast-os/ballast/runtime/components/imageimport"
	"github.com/ballast-os/ballast/runtime/components/kine"
	"github.com/ballast-os/ballast/runtime/components/kubeapiserver"
	"github.com/ballast-os/ballast/runtime/components/kubecontrollermanager"
	"github.com/ballast-os/ballast/runtime/components/kubectl"
	"github.com/ballast-os/ballast/runtime/components/kubelet"
	"github.com/ballast-os/ballast/runtime/components/kubeproxy"
	"github.com/ballast-os/ballast/runtime/components/kubescheduler"
	"github.com/ballast-os/ballast/runtime/deploy"
	"github.com/ballast-os/ballast/runtime/k3s"
	"github.com/ballast-os/ballast/runtime/netpol"
)

func main() {
	os.Exit(k3s.Main(os.Args, k3s.Components{
		"kube-apiserver":          kubeapiserver.Main,
		"kube-controller-manager": kubecontrollermanager.Main,
		"kube-scheduler":          kubescheduler.Main,
		"kubectl":                 kubectl.Main,
		"kine":                    kine.Main,
		"etcd":                    etcd.Main,
		"etcdctl":                 etcdctl.Main,
		"deploy-controller":       deploy.Main,
		"containerd":              containerd.Main,
		"image-import":            imageimport.Main,
		"kubelet":                 kubelet.Main,
		"kube-proxy":              kubeproxy.Main,
		"ctr":                     containerd.Ctr,
		"crictl":                  crictl.Main,
		"flannel":                 flannel.Main,
		"network-policy":          netpol.Main,
	}, k3s.InProcess{
		"image-import":   imageimport.RunInProcess,
		"flannel":        flannel.RunInProcess,
		"network-policy": netpol.RunInProcess,
	}))
}
