package packaged

import (
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
)

// ValuesFor maps a server's configuration to the template values and
// the names to disable, as k3s's server does: default-local-storage-path
// defaults to <data-dir>/storage, and the cloud-controller RBAC (ccm) is
// disabled when both disable-cloud-controller and servicelb are.
// CoreDNS's NodeHosts is not in the manifest: the node controller
// (package nodecontroller) keeps it for every node.
func ValuesFor(s *config.ServerConfig) (Values, []string) {
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
func StageServer(s *config.ServerConfig) (Result, error) {
	v, disable := ValuesFor(s)
	return Stage(datadir.Layout{Root: s.DataDir}.Manifests(), v, disable)
}
