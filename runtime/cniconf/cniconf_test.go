package cniconf

import (
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

func TestConflistGolden(t *testing.T) {
	golden(t, ConflistName, Conflist())
}

// TestConflistMatchesK3s decodes the conflist the way containerd does
// (libcni) and checks each plugin against what k3s's setup_linux.go writes.
func TestConflistMatchesK3s(t *testing.T) {
	l, err := libcni.ConfListFromBytes(Conflist())
	if err != nil {
		t.Fatalf("libcni refuses the conflist: %v", err)
	}
	if l.Name != "cbr0" || l.CNIVersion != "1.0.0" {
		t.Errorf("name %q cniVersion %q, want cbr0 1.0.0", l.Name, l.CNIVersion)
	}
	want := []map[string]any{
		{"type": "flannel", "delegate": map[string]any{"hairpinMode": true, "forceAddress": true, "isDefaultGateway": true}},
		{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		{"type": "bandwidth", "capabilities": map[string]any{"bandwidth": true}},
	}
	if len(l.Plugins) != len(want) {
		t.Fatalf("%d plugins, want %d", len(l.Plugins), len(want))
	}
	for i, p := range l.Plugins {
		var got map[string]any
		if err := json.Unmarshal(p.Bytes, &got); err != nil {
			t.Fatal(err)
		}
		// libcni copies name and cniVersion into each plugin's bytes.
		delete(got, "name")
		delete(got, "cniVersion")
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("plugin %d = %v, want %v", i, got, want[i])
		}
	}
}

func TestWriteConflist(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	p, err := WriteConflist(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(dir, "10-flannel.conflist") {
		t.Errorf("wrote %s", p)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != string(Conflist()) {
		t.Errorf("content %q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}

	// flannel-cni-conf: the user's file is copied unchanged.
	user := filepath.Join(t.TempDir(), "my.conflist")
	os.WriteFile(user, []byte(`{"name":"mine"}`), 0o600)
	if _, err := WriteConflist(dir, user); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != `{"name":"mine"}` {
		t.Errorf("override not copied: %q", b)
	}
	_, err = WriteConflist(dir, filepath.Join(t.TempDir(), "missing"))
	if err == nil || !strings.Contains(err.Error(), "flannel-cni-conf") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing override: %v", err)
	}
}

func TestNetConfGolden(t *testing.T) {
	pp := func(s ...string) []netip.Prefix {
		var r []netip.Prefix
		for _, x := range s {
			r = append(r, netip.MustParsePrefix(x))
		}
		return r
	}
	for _, tc := range []struct {
		golden string
		n      NetConf
	}{
		{"net-conf-default.json", NetConf{ClusterCIDRs: pp("10.42.0.0/16")}},
		{"net-conf-dualstack.json", NetConf{ClusterCIDRs: pp("10.42.0.0/16", "2001:cafe:42::/56"), Backend: "vxlan"}},
		{"net-conf-ipv6.json", NetConf{ClusterCIDRs: pp("2001:cafe:42::/56")}},
		{"net-conf-host-gw.json", NetConf{ClusterCIDRs: pp("10.42.0.0/16"), Backend: "host-gw"}},
		{"net-conf-wireguard-native.json", NetConf{ClusterCIDRs: pp("10.42.0.0/16"), Backend: "wireguard-native"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			b, err := tc.n.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, b)
		})
	}
}

func TestNetConfFields(t *testing.T) {
	b, err := NetConf{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.7.9/16")}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Network     string
		EnableIPv4  bool
		EnableIPv6  bool
		IPv6Network string
		Backend     struct{ Type string }
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	// The network is masked, IPv4 only, vxlan by default.
	if got.Network != "10.42.0.0/16" || !got.EnableIPv4 || got.EnableIPv6 || got.IPv6Network != "::/0" || got.Backend.Type != "vxlan" {
		t.Errorf("net-conf.json = %+v", got)
	}
}

func TestNetConfErrors(t *testing.T) {
	v4 := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}
	if _, err := (NetConf{}).Marshal(); err == nil || !strings.Contains(err.Error(), "cluster-cidr") {
		t.Errorf("no CIDR: %v", err)
	}
	if _, err := (NetConf{ClusterCIDRs: v4, Backend: "udp"}).Marshal(); err == nil || !strings.Contains(err.Error(), `flannel-backend: unknown backend "udp"`) {
		t.Errorf("unknown backend: %v", err)
	}
	if _, err := (NetConf{ClusterCIDRs: v4, Backend: "none"}).Marshal(); !errors.Is(err, ErrNoFlannel) {
		t.Errorf("backend none: %v", err)
	}
	p := filepath.Join(t.TempDir(), "etc", "flannel", "net-conf.json")
	if err := WriteNetConf(p, NetConf{ClusterCIDRs: v4}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !strings.Contains(string(b), `"Network": "10.42.0.0/16"`) {
		t.Errorf("written net-conf.json: %s", b)
	}
}
