package network

import (
	"encoding/hex"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
)

func TestPMKTestVector(t *testing.T) {
	// IEEE 802.11i-2004, H.4.1: passphrase "password", SSID "IEEE".
	pmk, err := PMK("password", "IEEE")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(pmk), "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"; got != want {
		t.Errorf("PMK = %s, want %s", got, want)
	}
	// A second vector of the same annex: "ThisIsAPassword", SSID "ThisIsASSID".
	pmk, err = PMK("ThisIsAPassword", "ThisIsASSID")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(pmk), "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"; got != want {
		t.Errorf("PMK = %s, want %s", got, want)
	}
}

func TestPMKHexAndErrors(t *testing.T) {
	raw := "F42C6FC52DF0EBEF9EBB4B90B38A5F902E83FE1B135A70E23AED762E9710A12E"
	pmk, err := PMK(raw, "anything")
	if err != nil || !strings.EqualFold(hex.EncodeToString(pmk), raw) {
		t.Errorf("64 hex digits: PMK = %x, %v; want them decoded as is", pmk, err)
	}
	for _, bad := range []string{"short", strings.Repeat("x", 64)} {
		if _, err := PMK(bad, "ssid"); err == nil || !strings.Contains(err.Error(), "network.wifi.psk") {
			t.Errorf("PMK(%q) err = %v, want one naming network.wifi.psk", bad, err)
		}
	}
}

func TestRenderSupplicantConfWPA(t *testing.T) {
	conf, err := RenderSupplicantConf(cloudconfig.WiFi{SSID: "IEEE", PSK: "password", Country: "DE"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ctrl_interface=DIR=/run/wpa_supplicant GROUP=root\n",
		"country=DE\n",
		"network={\n\tssid=49454545\n\tscan_ssid=1\n\tkey_mgmt=WPA-PSK\n\tpsk=f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e\n}\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "password") {
		t.Errorf("the passphrase is in the config in clear:\n%s", conf)
	}
}

func TestRenderSupplicantConfOpenAndOddSSID(t *testing.T) {
	// Quotes and newlines in an SSID cannot break out of the hex form.
	conf, err := RenderSupplicantConf(cloudconfig.WiFi{SSID: "cafe\"\n}x"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(conf, "\tssid=63616665220a7d78\n") || !strings.Contains(conf, "\tkey_mgmt=NONE\n") || strings.Contains(conf, "psk=") || strings.Contains(conf, "country=") {
		t.Errorf("open network config:\n%s", conf)
	}
	for _, w := range []cloudconfig.WiFi{{SSID: ""}, {SSID: strings.Repeat("s", 33)}, {SSID: "x", Country: "de\n"}, {SSID: "x", PSK: "short"}} {
		if _, err := RenderSupplicantConf(w); err == nil {
			t.Errorf("RenderSupplicantConf(%+v): no error", w)
		}
	}
}

func TestChooseWiFiLink(t *testing.T) {
	links := []Link{
		{Name: "eth0", Wired: true},
		{Name: "wlan0", Wireless: true},
		{Name: "wlan1", Wireless: true},
	}
	for _, c := range []struct {
		want, got string
		ok        bool
	}{
		{"", "wlan0", true},
		{"wlan1", "wlan1", true},
		{"wlan7", "", false},
	} {
		l, ok := ChooseWiFiLink(c.want, links)
		if l.Name != c.got || ok != c.ok {
			t.Errorf("ChooseWiFiLink(%q) = %q, %v; want %q, %v", c.want, l.Name, ok, c.got, c.ok)
		}
	}
	if _, ok := ChooseWiFiLink("", links[:1]); ok {
		t.Error("a wired link chosen for Wi-Fi")
	}
}

func TestPlanLeavesWiFiToJoin(t *testing.T) {
	cfg := &cloudconfig.Network{
		WiFi: &cloudconfig.WiFi{SSID: "home", Interface: "wlan3"},
		Interfaces: []cloudconfig.Interface{
			// The Wi-Fi interface, not there yet (firmware loading): no error.
			{Name: "wlan3", Addresses: []string{"192.168.77.2/24"}},
			{Name: "enp0s1", DHCP: ptr(true)},
		},
	}
	plans, err := PlanLinks(cfg, testLinks)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plans {
		if p.Name == "wlan3" || p.Name == "wlan0" {
			t.Errorf("wireless %s planned before it joined: %+v", p.Name, p)
		}
	}
	// Unnamed Wi-Fi: a listed wireless link waits for the join too.
	cfg = &cloudconfig.Network{
		WiFi:       &cloudconfig.WiFi{SSID: "home"},
		Interfaces: []cloudconfig.Interface{{Name: "wlan0", Addresses: []string{"10.1.1.2/24"}}},
	}
	links := append(append([]Link(nil), testLinks[:1]...), Link{Name: "wlan0", MAC: "b8:27:eb:00:00:01", Wireless: true})
	plans, err = PlanLinks(cfg, links)
	if err != nil {
		t.Fatal(err)
	}
	if len(plans) != 1 || plans[0].Name != "enp0s1" {
		t.Errorf("plans %+v, want only enp0s1", plans)
	}
}

func TestPlanWiFi(t *testing.T) {
	wl := Link{Name: "wlan0", MAC: "b8:27:eb:00:00:01", Wireless: true}
	static := &cloudconfig.Network{
		WiFi: &cloudconfig.WiFi{SSID: "home", Interface: "wlan0"},
		Interfaces: []cloudconfig.Interface{
			{Name: "eth0", DHCP: ptr(true)},
			{Name: "wlan0", Addresses: []string{"192.168.77.2/24"}, Gateway: "192.168.77.1"},
		},
	}
	p, err := planWiFi(static, wl)
	if err != nil {
		t.Fatal(err)
	}
	want := Plan{Name: "wlan0", MAC: wl.MAC, Method: MethodStatic, WiFi: true,
		Addresses: []netip.Prefix{netip.MustParsePrefix("192.168.77.2/24")}, Gateway: netip.MustParseAddr("192.168.77.1")}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("static plan %+v, want %+v", p, want)
	}
	// By MAC.
	byMAC := &cloudconfig.Network{WiFi: &cloudconfig.WiFi{SSID: "x"}, Interfaces: []cloudconfig.Interface{{MAC: "B8:27:EB:00:00:01", DHCP: ptr(false)}}}
	if p, err := planWiFi(byMAC, wl); err != nil || p.Method != MethodNone {
		t.Errorf("by MAC: %+v, %v; want method none", p, err)
	}
	if p, err := planWiFi(&cloudconfig.Network{WiFi: &cloudconfig.WiFi{SSID: "x"}}, wl); err != nil || p.Method != MethodDHCP || !p.WiFi {
		t.Errorf("unlisted: %+v, %v; want DHCP", p, err)
	}
	off := &cloudconfig.Network{DHCP: ptr(false), WiFi: &cloudconfig.WiFi{SSID: "x"}}
	if p, err := planWiFi(off, wl); err != nil || p.Method != MethodNone {
		t.Errorf("network.dhcp false: %+v, %v; want none", p, err)
	}
	bad := &cloudconfig.Network{WiFi: &cloudconfig.WiFi{SSID: "x"}, Interfaces: []cloudconfig.Interface{{Name: "wlan0", Addresses: []string{"nope"}}}}
	if _, err := planWiFi(bad, wl); err == nil {
		t.Error("bad address: no error")
	}
}
