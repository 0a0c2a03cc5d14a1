package network

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

func ptr[T any](v T) *T { return &v }

var testLinks = []Link{
	{Name: "enp0s1", MAC: "52:54:00:12:34:56", Wired: true},
	{Name: "enp0s2", MAC: "52:54:00:ab:cd:ef", Wired: true},
	{Name: "eth9", MAC: "52:54:00:00:00:09", Wired: true},
	{Name: "eth10", MAC: "52:54:00:00:00:10", Wired: true},
	{Name: "docker0", MAC: "02:42:00:00:00:01"},
	{Name: "wlan0", MAC: "b8:27:eb:00:00:01"},
}

func TestPlanDefault(t *testing.T) {
	plans, err := PlanLinks(nil, testLinks)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range plans {
		got = append(got, p.Name+"="+p.Method)
	}
	if want := []string{"enp0s1=dhcp", "enp0s2=dhcp", "eth9=dhcp", "eth10=dhcp"}; !reflect.DeepEqual(got, want) {
		t.Errorf("plans %v, want %v (virtual and wireless links left out)", got, want)
	}
}

func TestPlanConfigured(t *testing.T) {
	cfg := &cloudconfig.Network{
		DHCP: ptr(false),
		Interfaces: []cloudconfig.Interface{
			{Name: "enp0s1", Addresses: []string{"192.168.1.10/24", "fd00::10/64"}, Gateway: "192.168.1.1", MTU: 9000},
			{MAC: "52:54:00:AB:CD:EF", DHCP: ptr(true), MTU: 1400},
			{Name: "docker0", DHCP: ptr(false)},
			{Name: "eth9"},
		},
	}
	plans, err := PlanLinks(cfg, testLinks)
	if err != nil {
		t.Fatal(err)
	}
	want := []Plan{
		{Name: "enp0s1", MAC: "52:54:00:12:34:56", Method: "static", MTU: 9000,
			Addresses: []netip.Prefix{netip.MustParsePrefix("192.168.1.10/24"), netip.MustParsePrefix("fd00::10/64")},
			Gateway:   netip.MustParseAddr("192.168.1.1")},
		{Name: "enp0s2", MAC: "52:54:00:ab:cd:ef", Method: "dhcp", MTU: 1400},
		{Name: "docker0", MAC: "02:42:00:00:00:01", Method: "none"},
		// Listed without addresses or a dhcp key: DHCP.
		{Name: "eth9", MAC: "52:54:00:00:00:09", Method: "dhcp"},
		// network.dhcp false: unlisted wired links are only brought up.
		{Name: "eth10", MAC: "52:54:00:00:00:10", Method: "none"},
	}
	if !reflect.DeepEqual(plans, want) {
		t.Errorf("plans\n%+v\nwant\n%+v", plans, want)
	}
}

func TestPlanErrors(t *testing.T) {
	cfg := &cloudconfig.Network{Interfaces: []cloudconfig.Interface{
		{Name: "nope0"},
		{Name: "enp0s1", DHCP: ptr(false), Addresses: []string{"192.168.1.10"}, Gateway: "gw"},
		{MAC: "52:54:00:12:34:56"},
	}}
	plans, err := PlanLinks(cfg, testLinks)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"interfaces[0] (nope0): no such interface", `address "192.168.1.10": want CIDR`, `gateway "gw"`, "interfaces[2] (mac 52:54:00:12:34:56): enp0s1 configured twice"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	// The rest still gets configured.
	if len(plans) != 4 || plans[0].Name != "enp0s1" || plans[0].Method != "none" {
		t.Errorf("plans %+v", plans)
	}
}

func TestRenderResolvConf(t *testing.T) {
	leases := []LeaseConfig{
		{DNS: []netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("10.0.2.4")}, Search: []string{"lan"}},
		{DNS: []netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("192.168.0.1")}, Search: []string{"lan", "corp"}},
	}
	ns, search := resolverConfig(nil, nil, leases)
	want := "# Written by ballast from the cloud-config and DHCP leases.\nsearch lan corp\nnameserver 10.0.2.3\nnameserver 10.0.2.4\nnameserver 192.168.0.1\n"
	if got := RenderResolvConf(ns, search); got != want {
		t.Errorf("from leases:\n%s\nwant:\n%s", got, want)
	}
	ns, search = resolverConfig([]netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2606:4700::1111")}, []string{"example.org"}, leases)
	want = "# Written by ballast from the cloud-config and DHCP leases.\nsearch example.org\nnameserver 1.1.1.1\nnameserver 2606:4700::1111\n"
	if got := RenderResolvConf(ns, search); got != want {
		t.Errorf("config wins:\n%s\nwant:\n%s", got, want)
	}
	// Config name servers with lease search domains: each list on its own.
	_, search = resolverConfig([]netip.Addr{netip.MustParseAddr("1.1.1.1")}, nil, leases)
	if !reflect.DeepEqual(search, []string{"lan", "corp"}) {
		t.Errorf("search %v", search)
	}
}

func testACK(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	base := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithLeaseTime(3600),
	}
	ack, err := dhcpv4.New(append(base, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return ack
}

func TestConfigFromACK(t *testing.T) {
	ack := testACK(t,
		dhcpv4.WithRouter(net.IPv4(10, 0, 2, 2)),
		dhcpv4.WithDNS(net.IPv4(10, 0, 2, 3)),
		dhcpv4.WithDomainSearchList("lab.example", "example"),
		dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x05, 0xdc}),
		dhcpv4.WithOption(dhcpv4.OptNTPServers(net.IPv4(10, 0, 2, 9))),
	)
	c, err := ConfigFromACK(ack)
	if err != nil {
		t.Fatal(err)
	}
	want := LeaseConfig{
		Address: netip.MustParsePrefix("10.0.2.15/24"),
		Routes:  []Route{{Gw: netip.MustParseAddr("10.0.2.2")}},
		DNS:     []netip.Addr{netip.MustParseAddr("10.0.2.3")},
		Search:  []string{"lab.example", "example"},
		NTP:     []netip.Addr{netip.MustParseAddr("10.0.2.9")},
		MTU:     1500,
		Lease:   time.Hour,
		Renew:   30 * time.Minute,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got\n%+v\nwant\n%+v", c, want)
	}

	// Classless static routes replace the router option (RFC 3442).
	ack = testACK(t, dhcpv4.WithRouter(net.IPv4(10, 0, 2, 2)), dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
		&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4(0, 0, 0, 0).To4(), Mask: net.CIDRMask(0, 32)}, Router: net.IPv4(10, 0, 2, 1)},
		&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4(172, 16, 0, 0).To4(), Mask: net.CIDRMask(12, 32)}, Router: net.IPv4(10, 0, 2, 254)},
	)), dhcpv4.WithOption(dhcpv4.OptDomainName("corp.example")))
	c, err = ConfigFromACK(ack)
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes := []Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("10.0.2.1")},
		{Dst: netip.MustParsePrefix("172.16.0.0/12"), Gw: netip.MustParseAddr("10.0.2.254")},
	}
	if !reflect.DeepEqual(c.Routes, wantRoutes) || !reflect.DeepEqual(c.Search, []string{"corp.example"}) || c.MTU != 0 {
		t.Errorf("routes %+v search %v mtu %d", c.Routes, c.Search, c.MTU)
	}

	if _, err := ConfigFromACK(testACK(t, dhcpv4.WithYourIP(net.IPv4zero))); err == nil {
		t.Error("ACK without an address accepted")
	}
}

func TestSetHostname(t *testing.T) {
	root := t.TempDir()
	var set string
	if err := setHostname(root, "node1.lab.example", func(b []byte) error { set = string(b); return nil }); err != nil {
		t.Fatal(err)
	}
	if set != "node1" {
		t.Errorf("sethostname(%q)", set)
	}
	b, _ := os.ReadFile(filepath.Join(root, "etc/hostname"))
	if string(b) != "node1\n" {
		t.Errorf("/etc/hostname %q", b)
	}
	b, _ = os.ReadFile(filepath.Join(root, "etc/hosts"))
	if !strings.Contains(string(b), "127.0.1.1\tnode1.lab.example node1\n") || !strings.HasPrefix(string(b), "127.0.0.1\tlocalhost\n") {
		t.Errorf("/etc/hosts:\n%s", b)
	}
	for _, bad := range []string{"", "-x", "a_b", "a..b", strings.Repeat("a", 64), "a b", "x-"} {
		if err := setHostname(root, bad, func([]byte) error { return nil }); err == nil {
			t.Errorf("hostname %q accepted", bad)
		}
	}
}

func FuzzConfigFromACK(f *testing.F) {
	ack, _ := dhcpv4.New(dhcpv4.WithYourIP(net.IPv4(10, 0, 0, 5)), dhcpv4.WithRouter(net.IPv4(10, 0, 0, 1)), dhcpv4.WithNetmask(net.CIDRMask(8, 32)))
	f.Add(ack.ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		c, err := ConfigFromACK(m)
		if err == nil && (!c.Address.IsValid() || c.Renew <= 0 || c.Renew >= c.Lease) {
			t.Errorf("bad config %+v", c)
		}
	})
}

func FuzzCheckHostname(f *testing.F) {
	f.Add("node1.example")
	f.Fuzz(func(t *testing.T, s string) {
		if CheckHostname(s) == nil && strings.ContainsAny(s, " \n/\x00_") {
			t.Errorf("accepted %q", s)
		}
	})
}
