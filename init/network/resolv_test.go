package network

import (
	"net/netip"
	"strings"
	"testing"
)

// Search domains that are not DNS names never reach resolv.conf: a DHCP
// "label" with a newline would add a nameserver of its own.
func TestRenderResolvConfDropsBadSearchDomains(t *testing.T) {
	got := RenderResolvConf([]netip.Addr{netip.MustParseAddr("10.0.0.1")}, []string{"lab.example.com", "evil\nnameserver 6.6.6.6", "a b", "ok.", "-bad.com", strings.Repeat("x", 64) + ".com"})
	want := "# Written by ballast from the cloud-config and DHCP leases.\nsearch lab.example.com ok.\nnameserver 10.0.0.1\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
