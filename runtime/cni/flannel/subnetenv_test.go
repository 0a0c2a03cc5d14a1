package flannel

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseSubnetEnv(t *testing.T) {
	pp := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	for _, tc := range []struct {
		name, in string
		want     SubnetEnv
	}{
		{"k3s ipv4", "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			SubnetEnv{Networks: []netip.Prefix{pp("10.42.0.0/16")}, Subnet: pp("10.42.0.0/24"), MTU: 1450, IPMasq: true}},
		{"dual stack, comments, unknown keys", "# written by flannel\n\nFLANNEL_NETWORK=10.42.0.0/16,10.52.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\nFLANNEL_FUTURE=x\n",
			SubnetEnv{Networks: []netip.Prefix{pp("10.42.0.0/16"), pp("10.52.0.0/16")}, Subnet: pp("10.42.3.0/24"),
				IPv6Networks: []netip.Prefix{pp("2001:cafe:42::/56")}, IPv6Subnet: pp("2001:cafe:42:3::/64"), MTU: 1430}},
		{"ipv6 only", "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n",
			SubnetEnv{IPv6Networks: []netip.Prefix{pp("2001:cafe:42::/56")}, IPv6Subnet: pp("2001:cafe:42:1::/64"), MTU: 1430, IPMasq: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSubnetEnv(strings.NewReader(tc.in), "subnet.env")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

func TestParseSubnetEnvErrors(t *testing.T) {
	ok := "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	for _, tc := range []struct{ in, want string }{
		{"", "x.env: missing FLANNEL_NETWORK and FLANNEL_SUBNET (or FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET), FLANNEL_MTU, FLANNEL_IPMASQ"},
		{"FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", "x.env: missing FLANNEL_SUBNET"},
		{"FLANNEL_IPV6_SUBNET=2001::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", "x.env: missing FLANNEL_IPV6_NETWORK"},
		{strings.Replace(ok, "FLANNEL_MTU=1450", "FLANNEL_MTU", 1), `x.env:3: want KEY=VALUE, got "FLANNEL_MTU"`},
		{strings.Replace(ok, "1450", "-1", 1), `x.env:3: FLANNEL_MTU: strconv.ParseUint: parsing "-1": invalid syntax`},
		{strings.Replace(ok, "1450", "20", 1), "x.env:3: FLANNEL_MTU: MTU 20 is below IPv4's minimum of 68"},
		{strings.Replace(ok, "=true", "=yes", 1), "x.env:4: FLANNEL_IPMASQ: strconv.ParseBool"},
		{strings.Replace(ok, "10.42.0.1/24", "10.42.0.1", 1), `x.env:2: FLANNEL_SUBNET: netip.ParsePrefix("10.42.0.1"): no '/'`},
		{strings.Replace(ok, "10.42.0.0/16", "2001::/16", 1), "x.env:1: FLANNEL_NETWORK: 2001::/16 is not an IPv4 prefix"},
		{"FLANNEL_IPV6_NETWORK=10.0.0.0/8\n", "x.env:1: FLANNEL_IPV6_NETWORK: 10.0.0.0/8 is not an IPv6 prefix"},
	} {
		_, err := ParseSubnetEnv(strings.NewReader(tc.in), "x.env")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSubnetEnv(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestSubnetFileReady(t *testing.T) {
	p := filepath.Join(t.TempDir(), "subnet.env")
	ready := SubnetFileReady(p)
	if err := ready(context.Background()); err == nil || !strings.Contains(err.Error(), "is the flannel daemon running?") {
		t.Errorf("missing file: %v", err)
	}
	os.WriteFile(p, nil, 0o644)
	if err := ready(context.Background()); err == nil {
		t.Error("empty file reported ready")
	}
	os.WriteFile(p, []byte("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644)
	if err := ready(context.Background()); err != nil {
		t.Errorf("complete file: %v", err)
	}
}

// FuzzParseSubnetEnv: the file is written by another process and read by
// every pod start; no input may panic, and what parses is usable.
func FuzzParseSubnetEnv(f *testing.F) {
	f.Add("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
	f.Add("FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n")
	f.Add("FLANNEL_NETWORK=10.42.0.0/16,::ffff:1.2.3.4/120\n=\n#\nFLANNEL_MTU=65535")
	f.Fuzz(func(t *testing.T, in string) {
		e, err := ParseSubnetEnv(strings.NewReader(in), "fuzz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		if e.MTU < 68 || e.MTU > 65535 {
			t.Errorf("MTU %d accepted", e.MTU)
		}
		if !e.Subnet.IsValid() && !e.IPv6Subnet.IsValid() {
			t.Error("no subnet accepted")
		}
		for _, p := range append([]netip.Prefix{e.Subnet}, e.Networks...) {
			if p.IsValid() && (!p.Addr().Is4() || p != p.Masked()) {
				t.Errorf("IPv4 prefix %v accepted", p)
			}
		}
		for _, p := range append([]netip.Prefix{e.IPv6Subnet}, e.IPv6Networks...) {
			if p.IsValid() && (!p.Addr().Is6() || p.Addr().Is4In6() || p != p.Masked()) {
				t.Errorf("IPv6 prefix %v accepted", p)
			}
		}
	})
}
