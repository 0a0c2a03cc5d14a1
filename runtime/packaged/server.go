package packaged

import (
	"net/netip"

	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
)

// ValuesFor maps a server's configuration to the template values and
// the names to disable, as k3s's server does: default-local-storage-path
// defaults to <data-dir>/storage, and the cloud-controller RBAC (ccm) is
// disabled when both disable-cloud-controller and servicelb are.
// nodeName and nodeIPs are the ones the server resolved (hostname,
// node-ip or the default route's address); they are left out of CoreDNS's
// NodeHosts with --disable-agent, where no node registers.
func ValuesFor(s *config.ServerConfig, nodeName string, nodeIPs []netip.Addr) (Values, []string) {
	v := Values{
		ClusterDNS:            s.ClusterDNS,
		ClusterDomain:         s.ClusterDomain,
		SystemDefaultRegistry: s.SystemDefaultRegistry,
		StoragePath:           s.DefaultLocalStoragePath,
		FlannelExternalIP:     s.FlannelExternalIP,
	}
	if v.StoragePath == "" {
		v.StoragePath = datadir.Layout{Root: s.DataDir}.Storage()
	}
	if !s.DisableAgent {
		v.NodeName, v.NodeIPs = nodeName, nodeIPs
	}
	disable := append([]string(nil), s.Disable...)
	if s.DisableCloudController && s.Disabled("servicelb") {
		disable = append(disable, "ccm")
	}
	return v, disable
}

// StageServer is the one call `k3s server` makes before it starts the
// deploy controller: Stage into <data-dir>/server/manifests with the
// server's values. Pass Result.DeployControllerArgs() to
// `k3s deploy-controller` so that disabled components' objects are
// deleted.
func StageServer(s *config.ServerConfig, nodeName string, nodeIPs []netip.Addr) (Result, error) {
	v, disable := ValuesFor(s, nodeName, nodeIPs)
	return Stage(datadir.Layout{Root: s.DataDir}.Manifests(), v, disable)
}
