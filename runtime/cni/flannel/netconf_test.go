package flannel

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/runtime/cniconf"
	"github.com/containernetworking/cni/libcni"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// k3sFlannelConf is the flannel entry of k3s's conflist as the runtime
// hands it to the plugin: libcni adds the list's name and cniVersion.
func k3sFlannelConf(t *testing.T) []byte {
	t.Helper()
	l, err := libcni.ConfListFromBytes(cniconf.Conflist())
	if err != nil {
		t.Fatal(err)
	}
	if l.Plugins[0].Network.Type != "flannel" {
		t.Fatalf("first plugin is %q", l.Plugins[0].Network.Type)
	}
	var m map[string]any
	if err := json.Unmarshal(l.Plugins[0].Bytes, &m); err != nil {
		t.Fatal(err)
	}
	m["name"], m["cniVersion"] = l.Name, l.CNIVersion
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func k3sEnv(t *testing.T) *SubnetEnv {
	t.Helper()
	e, err := ParseSubnetEnv(strings.NewReader("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), "subnet.env")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestDelegateConfigGolden: what the bridge plugin gets on a k3s node.
func TestDelegateConfigGolden(t *testing.T) {
	n, err := ParseNetConf(k3sFlannelConf(t))
	if err != nil {
		t.Fatal(err)
	}
	if n.SubnetFile != "/run/flannel/subnet.env" || n.DataDir != "/var/lib/cni/flannel" {
		t.Errorf("defaults: subnetFile %q dataDir %q", n.SubnetFile, n.DataDir)
	}
	d, err := DelegateConfig(n, k3sEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	p := filepath.Join("testdata", "delegate-k3s.json")
	if *update {
		os.WriteFile(p, got, 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("delegate configuration:\n%s\nwant (%s):\n%s", got, p, want)
	}

	// The fields that matter, decoded rather than compared as text.
	var b struct {
		Name, CNIVersion, Type, Bridge                                 string
		IsGateway, IsDefaultGateway, IPMasq, HairpinMode, ForceAddress bool
		MTU                                                            int
		IPAM                                                           struct {
			Type   string
			Ranges [][]struct{ Subnet string }
			Routes []struct{ Dst string }
		}
	}
	json.Unmarshal(got, &b)
	if b.Name != "cbr0" || b.CNIVersion != "1.0.0" || b.Type != "bridge" || b.Bridge != "cni0" || !b.IsGateway || !b.IsDefaultGateway ||
		b.IPMasq || !b.HairpinMode || !b.ForceAddress || b.MTU != 1450 || b.IPAM.Type != "host-local" ||
		len(b.IPAM.Ranges) != 1 || b.IPAM.Ranges[0][0].Subnet != "10.42.0.0/24" || len(b.IPAM.Routes) != 1 || b.IPAM.Routes[0].Dst != "10.42.0.0/16" {
		t.Errorf("bridge configuration %+v", b)
	}
}

func TestDelegateConfigOverrides(t *testing.T) {
	n, err := ParseNetConf([]byte(`{"name":"net","cniVersion":"0.4.0","type":"flannel",
		"delegate":{"type":"ipvlan","mtu":1400,"ipMasq":true},
		"ipam":{"dataDir":"/tmp/x","routes":[{"dst":"192.168.0.0/16"}]},
		"runtimeConfig":{"bandwidth":{"ingressRate":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseSubnetEnv(strings.NewReader("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.5.1/24\nFLANNEL_IPV6_NETWORK=fd42::/56\nFLANNEL_IPV6_SUBNET=fd42:0:0:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"), "e")
	if err != nil {
		t.Fatal(err)
	}
	d, err := DelegateConfig(n, env)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(d)
	for _, want := range []string{
		`"type":"ipvlan"`, `"mtu":1400`, `"ipMasq":true`, `"cniVersion":"0.4.0"`, `"name":"net"`,
		`"runtimeConfig":{"bandwidth":{"ingressRate":1}}`,
		`"ipam":{"dataDir":"/tmp/x","ranges":[[{"subnet":"10.42.5.0/24"}],[{"subnet":"fd42:0:0:5::/64"}]],"routes":[{"dst":"192.168.0.0/16"},{"dst":"10.42.0.0/16"},{"dst":"fd42::/56"}],"type":"host-local"}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("delegate %s\nlacks %s", b, want)
		}
	}
	// Bridge-only defaults stay off other delegates.
	if strings.Contains(string(b), "isGateway") || strings.Contains(string(b), "cni0") {
		t.Errorf("bridge defaults on ipvlan: %s", b)
	}

	// Without the daemon masquerading, the bridge does.
	n2, _ := ParseNetConf([]byte(`{"name":"n","type":"flannel"}`))
	d2, _ := DelegateConfig(n2, env)
	if d2["ipMasq"] != true {
		t.Errorf("FLANNEL_IPMASQ=false: delegate ipMasq %v, want true", d2["ipMasq"])
	}
}

func TestParseNetConfErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"delegate":{"name":"x"}}`:          "delegate.name is set by the plugin",
		`{"delegate":{"ipam":{}}}`:           "delegate.ipam is set by the plugin",
		`{"delegate":{"type":1}}`:            "delegate.type must be a string",
		`{"delegate":[]}`:                    "flannel plugin configuration: json",
		`{"ipam":{"routes":"x"},"name":"n"}`: "", // checked in DelegateConfig
	} {
		n, err := ParseNetConf([]byte(in))
		if want == "" {
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DelegateConfig(n, k3sEnv(t)); err == nil || !strings.Contains(err.Error(), "ipam.routes") {
				t.Errorf("bad routes: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseNetConf(%s) = %v, want %q", in, err, want)
		}
	}
}
