//go:build tools

// This file pins the upstream programs the image builder compiles from this
// module (`go build <package>` inside runtime/) next to the k3s binary: the
// CNI plugins containerd calls. They are package main upstream, so they are
// separate executables, not personalities of k3s.
package runtime

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/bandwidth"
	_ "github.com/containernetworking/plugins/plugins/meta/firewall"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
