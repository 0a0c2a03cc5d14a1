// Package cniconf writes the pod-network configuration k3s writes before
// it starts flannel: the CNI conflist containerd reads from
// agent/etc/cni/net.d and flannel's own net-conf.json.
//
// It imports no k8s.io module and nothing from flannel: the server
// prepares both files before any component starts.
package cniconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// ConflistName is the file name k3s gives its conflist in the CNI
// configuration directory (agent/etc/cni/net.d).
const ConflistName = "10-flannel.conflist"

// Backend names accepted by the flannel-backend setting, as in k3s.
const (
	BackendVXLAN           = "vxlan"
	BackendHostGW          = "host-gw"
	BackendWireguardNative = "wireguard-native"
	BackendNone            = "none"
)

// noIPv6Network is what k3s writes as IPv6Network when the cluster has no
// IPv6 CIDR: flannel needs a parsable value even with EnableIPv6 false.
const noIPv6Network = "::/0"

type conflist struct {
	Name       string   `json:"name"`
	CNIVersion string   `json:"cniVersion"`
	Plugins    []plugin `json:"plugins"`
}

type plugin struct {
	Type         string          `json:"type"`
	Delegate     *delegate       `json:"delegate,omitempty"`
	Capabilities map[string]bool `json:"capabilities,omitempty"`
}

// delegate is what the flannel plugin hands to the bridge plugin on top of
// the subnet it reads from flannel's subnet.env.
type delegate struct {
	HairpinMode      bool `json:"hairpinMode"`
	ForceAddress     bool `json:"forceAddress"`
	IsDefaultGateway bool `json:"isDefaultGateway"`
}

// Conflist returns the CNI network list k3s writes on Linux: network cbr0,
// CNI 1.0.0, the flannel meta-plugin delegating to bridge (hairpin mode so
// a pod reaches itself through its Service, the bridge address forced and
// the default route through it), then portmap (hostPort through the
// portMappings capability; portmap's "snat" defaults to true, so k3s
// leaves it out) and bandwidth (the kubernetes.io/{ingress,egress}-bandwidth
// annotations).
func Conflist() []byte {
	c := conflist{
		Name:       "cbr0",
		CNIVersion: "1.0.0",
		Plugins: []plugin{
			{Type: "flannel", Delegate: &delegate{HairpinMode: true, ForceAddress: true, IsDefaultGateway: true}},
			{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
			{Type: "bandwidth", Capabilities: map[string]bool{"bandwidth": true}},
		},
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		// Only fixed types above: marshalling cannot fail.
		panic(fmt.Sprintf("cniconf: marshal conflist: %v", err))
	}
	return append(b, '\n')
}

// WriteConflist writes dir/10-flannel.conflist. With override set (the
// flannel-cni-conf setting) the user's file is copied instead, unchanged,
// as k3s does.
func WriteConflist(dir, override string) (string, error) {
	p := filepath.Join(dir, ConflistName)
	data := Conflist()
	if override != "" {
		b, err := os.ReadFile(override)
		if err != nil {
			return "", fmt.Errorf("flannel-cni-conf: %w", err)
		}
		data = b
	}
	if err := writeFile(p, data); err != nil {
		return "", err
	}
	return p, nil
}

// NetConf is the input of flannel's net-conf.json.
type NetConf struct {
	// ClusterCIDRs are the cluster-cidr values: one IPv4, one IPv6, or
	// one of each (dual stack). The first of each family is used.
	ClusterCIDRs []netip.Prefix
	// Backend is the flannel-backend value; empty means vxlan.
	Backend string
}

// BackendOrDefault returns the backend, vxlan when unset.
func (n NetConf) BackendOrDefault() string {
	if n.Backend == "" {
		return BackendVXLAN
	}
	return n.Backend
}

// netConfJSON keeps k3s's key order.
type netConfJSON struct {
	Network     string          `json:"Network"`
	EnableIPv6  bool            `json:"EnableIPv6"`
	EnableIPv4  bool            `json:"EnableIPv4"`
	IPv6Network string          `json:"IPv6Network"`
	Backend     json.RawMessage `json:"Backend"`
}

// ErrNoFlannel is returned for the backend "none": k3s then runs no
// flannel and writes neither file.
var ErrNoFlannel = errors.New("flannel-backend is none: no flannel configuration")

// Marshal returns net-conf.json as k3s writes it. The vxlan backend is
// just {"Type": "vxlan"}: flannel's defaults give VNI 1 and the kernel's
// VXLAN port 8472/udp, which is what k3s documents.
func (n NetConf) Marshal() ([]byte, error) {
	var v4, v6 netip.Prefix
	for _, p := range n.ClusterCIDRs {
		switch {
		case !p.IsValid():
			return nil, fmt.Errorf("cluster-cidr: invalid prefix %q", p)
		case p.Addr().Is4() && !v4.IsValid():
			v4 = p.Masked()
		case p.Addr().Is6() && !p.Addr().Is4In6() && !v6.IsValid():
			v6 = p.Masked()
		}
	}
	if !v4.IsValid() && !v6.IsValid() {
		return nil, fmt.Errorf("cluster-cidr: no IPv4 or IPv6 prefix in %v", n.ClusterCIDRs)
	}
	var backend string
	switch n.BackendOrDefault() {
	case BackendVXLAN:
		backend = `{"Type": "vxlan"}`
	case BackendHostGW:
		backend = `{"Type": "host-gw"}`
	case BackendWireguardNative:
		backend = `{"Type": "wireguard", "PersistentKeepaliveInterval": 25}`
	case BackendNone:
		return nil, ErrNoFlannel
	default:
		return nil, fmt.Errorf("flannel-backend: unknown backend %q (vxlan, host-gw, wireguard-native or none)", n.Backend)
	}
	c := netConfJSON{
		Network:     "0.0.0.0/0",
		EnableIPv4:  v4.IsValid(),
		EnableIPv6:  v6.IsValid(),
		IPv6Network: noIPv6Network,
		Backend:     json.RawMessage(backend),
	}
	if v4.IsValid() {
		c.Network = v4.String()
	}
	if v6.IsValid() {
		c.IPv6Network = v6.String()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "\t")
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("marshal net-conf.json: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteNetConf writes net-conf.json to path (k3s: agent/etc/flannel/net-conf.json).
// When the user gives their own file (the flannel-conf setting) k3s
// writes nothing and flannel reads theirs: do not call this then.
func WriteNetConf(path string, n NetConf) error {
	b, err := n.Marshal()
	if err != nil {
		return err
	}
	return writeFile(path, b)
}

// writeFile replaces path atomically (temporary file and rename) so that
// containerd's directory watch never sees half a conflist.
func writeFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
