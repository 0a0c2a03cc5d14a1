package flannel

import (
	"errors"
	"fmt"
	"os"

	"github.com/flannel-io/flannel/pkg/subnet"
)

// linkedBackends are the flannel backends built into this runtime (their
// packages register themselves in init).
var linkedBackends = map[string]bool{"vxlan": true, "host-gw": true}

// bridgeNFCall is what br_netfilter creates; without it bridged pod
// traffic bypasses iptables (Service DNAT between pods on one node).
const bridgeNFCall = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// readNetConf reads and checks net-conf.json as the kube subnet manager
// will parse it, so that configuration errors stop flannel before it
// waits on the API server.
func readNetConf(path string) (*subnet.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("flannel net-conf: %w", err)
	}
	c, err := subnet.ParseConfig(string(b))
	if err != nil {
		return nil, fmt.Errorf("flannel net-conf %s: %w", path, err)
	}
	switch {
	case !linkedBackends[c.BackendType]:
		return nil, fmt.Errorf("flannel net-conf %s: Backend.Type %q is not built into this runtime (vxlan, host-gw)", path, c.BackendType)
	case c.EnableNFTables:
		return nil, fmt.Errorf("flannel net-conf %s: EnableNFTables: the nftables traffic manager is not built into this runtime", path)
	case !c.EnableIPv4 && !c.EnableIPv6:
		return nil, fmt.Errorf("flannel net-conf %s: neither EnableIPv4 nor EnableIPv6", path)
	case c.EnableIPv4 && c.Network.Empty():
		return nil, fmt.Errorf("flannel net-conf %s: EnableIPv4 without a Network", path)
	case c.EnableIPv6 && c.IPv6Network.Empty():
		return nil, fmt.Errorf("flannel net-conf %s: EnableIPv6 without an IPv6Network", path)
	}
	return c, nil
}

// checkBridgeNetfilter fails when the br_netfilter module is not loaded
// (flanneld does the same check).
func checkBridgeNetfilter(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s is missing: load the br_netfilter kernel module (modprobe br_netfilter)", path)
	} else if err != nil {
		return fmt.Errorf("check br_netfilter: %w", err)
	}
	return nil
}
