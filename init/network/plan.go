// Package network brings up the node's interfaces from the cloud-config's
// network: block: loopback, static addresses, DHCPv4 on every wired
// interface not configured otherwise (kept renewed in the background),
// Wi-Fi (network.wifi, through wpa_supplicant), /etc/resolv.conf, and the
// host name.
package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
)

// Methods, as reported in agent.Iface.Method.
const (
	MethodDHCP   = "dhcp"
	MethodStatic = "static"
	MethodNone   = "none"
)

// Link is what the planner needs to know about an interface.
type Link struct {
	Name string
	MAC  string // lower-case, colon-separated
	// Wired is true for a physical, non-wireless interface: one with a
	// device behind it (/sys/class/net/X/device) and no wireless directory.
	Wired bool
	// Wireless is true for an 802.11 interface (/sys/class/net/X/wireless
	// or phy80211).
	Wireless bool
}

// Plan is what to do with one interface.
type Plan struct {
	Name      string
	MAC       string
	Method    string
	Addresses []netip.Prefix // static
	Gateway   netip.Addr     // static; invalid when none
	MTU       int            // 0: leave as is (or take the DHCP lease's)
	// WiFi: the interface joins network.wifi first; it is configured
	// once associated.
	WiFi bool
}

// PlanLinks decides each link's configuration. Listed interfaces (by name
// or MAC) get what the config says: DHCP when Interface.DHCPOrDefault (its
// dhcp key, else no static addresses), static with addresses, otherwise
// (dhcp: false, no addresses) only brought up. Unlisted wired links get
// DHCP unless network.dhcp is false. Unlisted virtual links are left out.
// A listed interface that matches no link, and malformed addresses, are
// errors; the rest of the plan is still returned.
//
// With network.wifi, the Wi-Fi interface is left out: it is planned when it
// appears and joins (planWiFi). Its network.interfaces entry (the one named
// as network.wifi.interface, else any wireless link) may match no link yet.
func PlanLinks(cfg *cloudconfig.Network, links []Link) ([]Plan, error) {
	var errs []error
	var plans []Plan
	listed := map[string]bool{}
	dhcpDefault := true
	var ifaces []cloudconfig.Interface
	if cfg != nil {
		if cfg.DHCP != nil {
			dhcpDefault = *cfg.DHCP
		}
		ifaces = cfg.Interfaces
	}
	for i, ic := range ifaces {
		if isWiFiEntry(cfg, ic) {
			continue
		}
		var match *Link
		for j := range links {
			l := &links[j]
			if ic.Name != "" && l.Name == ic.Name || ic.Name == "" && ic.MAC != "" && strings.EqualFold(l.MAC, normalMAC(ic.MAC)) {
				match = l
				break
			}
		}
		if match == nil {
			errs = append(errs, fmt.Errorf("network.interfaces[%d] (%s): no such interface", i, ifaceDesc(ic)))
			continue
		}
		if cfg.WiFi != nil && cfg.WiFi.Interface == "" && match.Wireless {
			continue
		}
		if listed[match.Name] {
			errs = append(errs, fmt.Errorf("network.interfaces[%d] (%s): %s configured twice", i, ifaceDesc(ic), match.Name))
			continue
		}
		listed[match.Name] = true
		p := Plan{Name: match.Name, MAC: match.MAC, MTU: ic.MTU, Method: MethodNone}
		for _, a := range ic.Addresses {
			pfx, err := netip.ParsePrefix(a)
			if err != nil {
				errs = append(errs, fmt.Errorf("network.interfaces[%d] (%s): address %q: want CIDR such as 192.168.1.10/24", i, ifaceDesc(ic), a))
				continue
			}
			p.Addresses = append(p.Addresses, pfx)
		}
		if ic.Gateway != "" {
			gw, err := netip.ParseAddr(ic.Gateway)
			if err != nil {
				errs = append(errs, fmt.Errorf("network.interfaces[%d] (%s): gateway %q: not an IP address", i, ifaceDesc(ic), ic.Gateway))
			} else {
				p.Gateway = gw
			}
		}
		switch {
		case ic.DHCPOrDefault():
			p.Method = MethodDHCP
		case len(p.Addresses) > 0:
			p.Method = MethodStatic
		}
		plans = append(plans, p)
	}
	for _, l := range links {
		if listed[l.Name] || !l.Wired {
			continue
		}
		m := MethodNone
		if dhcpDefault {
			m = MethodDHCP
		}
		plans = append(plans, Plan{Name: l.Name, MAC: l.MAC, Method: m})
	}
	return plans, errors.Join(errs...)
}

func ifaceDesc(ic cloudconfig.Interface) string {
	if ic.Name != "" {
		return ic.Name
	}
	return "mac " + ic.MAC
}

func normalMAC(s string) string {
	if hw, err := net.ParseMAC(s); err == nil {
		return hw.String()
	}
	return strings.ToLower(s)
}
