package supervisor

import (
	"fmt"
	"net/netip"

	"github.com/ballast-os/ballast/runtime/config"
)

// ClusterConfig is what GET /v1-k3s/config tells a joining agent: the
// cluster-wide settings a server owns and every node must agree on. Field
// names follow k3s's config.Control where it has the same setting.
type ClusterConfig struct {
	ClusterIPRanges      []string // cluster-cidr
	ServiceIPRanges      []string // service-cidr
	ClusterDNS           []string // cluster-dns
	ClusterDomain        string
	ServiceNodePortRange string
	FlannelBackend       string // vxlan, host-gw, none...
	FlannelIPv6Masq      bool
	EgressSelectorMode   string
	DisableKubeProxy     bool
	DisableServiceLB     bool // "servicelb" in --disable: the kubelet's allowed sysctls follow it
	// DisableCloudController: no cloud controller initializes nodes, so
	// kubelets must not wait for one (--cloud-provider=external).
	DisableCloudController bool
	// DisableNetworkPolicy: no node runs the network policy controller.
	DisableNetworkPolicy  bool
	SystemDefaultRegistry string
	SupervisorPort        int // https-listen-port
}

// ClusterConfigOf is the ClusterConfig a server hands out.
func ClusterConfigOf(s *config.ServerConfig) ClusterConfig {
	c := ClusterConfig{
		ClusterDomain:          s.ClusterDomain,
		ServiceNodePortRange:   s.ServiceNodePortRange,
		FlannelBackend:         s.FlannelBackend,
		FlannelIPv6Masq:        s.FlannelIPv6Masq,
		EgressSelectorMode:     s.EgressSelectorMode,
		DisableKubeProxy:       s.DisableKubeProxy,
		DisableServiceLB:       s.Disabled("servicelb"),
		DisableCloudController: s.DisableCloudController,
		DisableNetworkPolicy:   s.DisableNetworkPolicy,
		SystemDefaultRegistry:  s.SystemDefaultRegistry,
		SupervisorPort:         s.HTTPSListenPort,
	}
	for _, p := range s.ClusterCIDRs {
		c.ClusterIPRanges = append(c.ClusterIPRanges, p.String())
	}
	for _, p := range s.ServiceCIDRs {
		c.ServiceIPRanges = append(c.ServiceIPRanges, p.String())
	}
	for _, a := range s.ClusterDNS {
		c.ClusterDNS = append(c.ClusterDNS, a.String())
	}
	return c
}

// ApplyTo fills the cluster-wide fields of an agent's node config (a
// ServerConfig whose AgentConfig came from the agent's own flags), so that
// the kubelet, kube-proxy and flannel are configured exactly as on the
// server. It checks every value, since it came over the network.
func (c ClusterConfig) ApplyTo(s *config.ServerConfig) error {
	s.ClusterCIDRs, s.ServiceCIDRs, s.ClusterDNS = nil, nil, nil
	for _, v := range c.ClusterIPRanges {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return fmt.Errorf("server config: cluster CIDR %q: %w", v, err)
		}
		s.ClusterCIDRs = append(s.ClusterCIDRs, p)
	}
	for _, v := range c.ServiceIPRanges {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return fmt.Errorf("server config: service CIDR %q: %w", v, err)
		}
		s.ServiceCIDRs = append(s.ServiceCIDRs, p)
	}
	for _, v := range c.ClusterDNS {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return fmt.Errorf("server config: cluster DNS %q: %w", v, err)
		}
		s.ClusterDNS = append(s.ClusterDNS, a)
	}
	s.ClusterDomain = c.ClusterDomain
	s.ServiceNodePortRange = c.ServiceNodePortRange
	s.FlannelBackend = c.FlannelBackend
	s.FlannelIPv6Masq = c.FlannelIPv6Masq
	s.EgressSelectorMode = c.EgressSelectorMode
	s.DisableKubeProxy = c.DisableKubeProxy
	s.DisableCloudController = c.DisableCloudController
	s.DisableNetworkPolicy = c.DisableNetworkPolicy
	s.Disable = nil
	if c.DisableServiceLB {
		s.Disable = []string{"servicelb"}
	}
	if s.SystemDefaultRegistry == "" {
		s.SystemDefaultRegistry = c.SystemDefaultRegistry
	}
	if c.SupervisorPort != 0 {
		s.HTTPSListenPort = c.SupervisorPort
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("server config: %w", err)
	}
	return nil
}
