//go:build tools

// This file pins the upstream programs the image builder compiles from this
// module (`go build <package>` inside runtime/) next to the k3s binary: the
// CNI plugins containerd calls, and containerd's runc shim (one process per
// pod: it must start fast, so it is not a personality of the big k3s
// binary). They are package main upstream, so they are separate executables.
package runtime

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/bandwidth"
	_ "github.com/containernetworking/plugins/plugins/meta/firewall"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
