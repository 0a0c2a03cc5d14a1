// Command flannel is the flannel CNI plugin as its own small executable
// (/usr/lib/ballast/cni/flannel): containerd runs it for every pod, and
// starting the multi-call k3s binary (all of Kubernetes' package
// initialisation, 180 MB to page in) for each call is far too slow on a
// small node.
package main

import (
	"os"

	cniflannel "github.com/ballast-os/ballast/runtime/cni/flannel"
)

func main() { os.Exit(cniflannel.Main(os.Args)) }
