// Package flannel is the flannel CNI meta-plugin, as k3s runs it: it reads
// the node's lease from flannel's subnet.env, builds a bridge configuration
// with host-local IPAM over the node's pod subnet and delegates ADD, CHECK
// and DEL to the bridge plugin found in CNI_PATH. The configuration it
// delegated on ADD is kept under dataDir/<container id> so that DEL and
// CHECK use the same one even after subnet.env changes.
//
// The runtime's k3s binary answers to argv[0] "flannel" with Main, placed
// in the CNI bin dir as a link. The package imports no k8s.io module.
package flannel

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultDataDir keeps the delegated configurations, as flannel's plugin.
const DefaultDataDir = "/var/lib/cni/flannel"

// NetConf is the plugin's configuration (its entry in the conflist, with
// name and cniVersion filled in by the runtime).
type NetConf struct {
	types.NetConf

	// SubnetFile is the subnet.env to read (DefaultSubnetFile if unset).
	SubnetFile string `json:"subnetFile"`
	// DataDir keeps delegated configurations (DefaultDataDir if unset).
	DataDir string `json:"dataDir"`
	// Delegate is merged into the delegate's configuration; it must not
	// set name or ipam (the plugin does).
	Delegate map[string]any `json:"delegate"`
	// IPAM replaces types.NetConf's: its keys (e.g. host-local's dataDir
	// or extra routes) are kept, ranges are set from subnet.env.
	IPAM          map[string]any `json:"ipam,omitempty"`
	RuntimeConfig map[string]any `json:"runtimeConfig,omitempty"`
}

// ParseNetConf decodes stdin data and fills the defaults.
func ParseNetConf(data []byte) (*NetConf, error) {
	n := &NetConf{}
	if err := json.Unmarshal(data, n); err != nil {
		return nil, fmt.Errorf("flannel plugin configuration: %w", err)
	}
	if n.SubnetFile == "" {
		n.SubnetFile = DefaultSubnetFile
	}
	if n.DataDir == "" {
		n.DataDir = DefaultDataDir
	}
	if n.Delegate != nil {
		if t, ok := n.Delegate["type"]; ok {
			if _, isString := t.(string); !isString {
				return nil, fmt.Errorf("flannel plugin configuration: delegate.type must be a string, got %v", t)
			}
		}
		for _, k := range []string{"name", "ipam"} {
			if _, ok := n.Delegate[k]; ok {
				return nil, fmt.Errorf("flannel plugin configuration: delegate.%s is set by the plugin, remove it", k)
			}
		}
	}
	return n, nil
}

// DelegateConfig returns the configuration handed to the delegate
// plugin for a node whose lease is env. Keys the user set in delegate win;
// the defaults are flannel's: type bridge (bridge cni0, isGateway), ipMasq
// only when the daemon does not masquerade, the MTU from subnet.env, and
// host-local IPAM over the node's subnet(s) with a route to each cluster
// network.
func DelegateConfig(n *NetConf, env *SubnetEnv) (map[string]any, error) {
	d := map[string]any{}
	for k, v := range n.Delegate {
		d[k] = v
	}
	d["name"] = n.Name
	if n.CNIVersion != "" {
		d["cniVersion"] = n.CNIVersion
	}
	setDefault(d, "type", "bridge")
	setDefault(d, "ipMasq", !env.IPMasq)
	setDefault(d, "mtu", env.MTU)
	if d["type"] == "bridge" {
		// The bridge plugin's own default name, written out so that the
		// stored configuration says which bridge the pod is on.
		setDefault(d, "bridge", "cni0")
		setDefault(d, "isGateway", true)
	}
	if n.RuntimeConfig != nil {
		d["runtimeConfig"] = n.RuntimeConfig
	}

	ipam := map[string]any{}
	for k, v := range n.IPAM {
		ipam[k] = v
	}
	setDefault(ipam, "type", "host-local")
	var ranges [][]map[string]string
	if env.Subnet.IsValid() {
		ranges = append(ranges, []map[string]string{{"subnet": env.Subnet.String()}})
	}
	if env.IPv6Subnet.IsValid() {
		ranges = append(ranges, []map[string]string{{"subnet": env.IPv6Subnet.String()}})
	}
	ipam["ranges"] = ranges

	var routes []types.Route
	if r, ok := n.IPAM["routes"]; ok {
		b, err := json.Marshal(r)
		if err == nil {
			err = json.Unmarshal(b, &routes)
		}
		if err != nil {
			return nil, fmt.Errorf("flannel plugin configuration: ipam.routes: %w", err)
		}
	}
	for _, nw := range append(append([]netip.Prefix{}, env.Networks...), env.IPv6Networks...) {
		routes = append(routes, types.Route{Dst: prefixToIPNet(nw)})
	}
	ipam["routes"] = routes
	d["ipam"] = ipam
	return d, nil
}

func setDefault(m map[string]any, k string, v any) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func prefixToIPNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
