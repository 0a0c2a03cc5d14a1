package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Route is a route learnt from a lease. A zero Dst is the default route.
type Route struct {
	Dst netip.Prefix
	Gw  netip.Addr
}

// LeaseConfig is what a DHCPv4 ACK asks the host to configure.
type LeaseConfig struct {
	Address netip.Prefix
	Routes  []Route
	DNS     []netip.Addr
	Search  []string
	NTP     []netip.Addr
	MTU     int
	// Lease is the lease time; Renew when to renew (T1).
	Lease time.Duration
	Renew time.Duration
}

// defaultLease is assumed when a server sends no lease time.
const defaultLease = time.Hour

// ConfigFromACK turns a DHCPACK into the configuration to apply.
func ConfigFromACK(ack *dhcpv4.DHCPv4) (LeaseConfig, error) {
	var c LeaseConfig
	if ack == nil {
		return c, errors.New("dhcp: no ACK")
	}
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return c, fmt.Errorf("dhcp: ACK without an address (yiaddr %v)", ack.YourIPAddr)
	}
	bits := 32
	if m := ack.SubnetMask(); m != nil {
		ones, total := m.Size()
		if total != 32 {
			return c, fmt.Errorf("dhcp: subnet mask %v is not contiguous", net.IP(m))
		}
		bits = ones
	} else if ip.Is4() {
		bits = classfulBits(ip)
	}
	c.Address = netip.PrefixFrom(ip, bits)

	// RFC 3442: with classless static routes the router option is ignored.
	if rs := ack.ClasslessStaticRoute(); len(rs) > 0 {
		for _, r := range rs {
			if r == nil || r.Dest == nil {
				continue
			}
			dst, ok := netip.AddrFromSlice(r.Dest.IP.To4())
			ones, _ := r.Dest.Mask.Size()
			if !ok {
				continue
			}
			gw, _ := netip.AddrFromSlice(r.Router.To4())
			c.Routes = append(c.Routes, Route{Dst: netip.PrefixFrom(dst, ones).Masked(), Gw: gw})
		}
	} else if rt := ack.Router(); len(rt) > 0 {
		if gw, ok := netip.AddrFromSlice(rt[0].To4()); ok && !gw.IsUnspecified() {
			c.Routes = append(c.Routes, Route{Gw: gw})
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok && !a.IsUnspecified() {
			c.DNS = append(c.DNS, a)
		}
	}
	for _, d := range ack.NTPServers() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok && !a.IsUnspecified() {
			c.NTP = append(c.NTP, a)
		}
	}
	if ds := ack.DomainSearch(); ds != nil && len(ds.Labels) > 0 {
		for _, l := range ds.Labels {
			if ValidSearchDomain(l) {
				c.Search = append(c.Search, l)
			}
		}
	} else if dn := strings.TrimSpace(ack.DomainName()); ValidSearchDomain(dn) {
		c.Search = []string{dn}
	}
	if b := ack.Options.Get(dhcpv4.OptionInterfaceMTU); len(b) == 2 {
		// RFC 2132: the minimum legal MTU is 68; ignore nonsense.
		if mtu := int(binary.BigEndian.Uint16(b)); mtu >= 576 {
			c.MTU = mtu
		}
	}
	c.Lease = ack.IPAddressLeaseTime(defaultLease)
	if c.Lease <= 0 {
		c.Lease = defaultLease
	}
	c.Renew = ack.IPAddressRenewalTime(c.Lease / 2)
	if c.Renew <= 0 || c.Renew >= c.Lease {
		c.Renew = c.Lease / 2
	}
	return c, nil
}

func classfulBits(ip netip.Addr) int {
	switch b := ip.As4()[0]; {
	case b < 128:
		return 8
	case b < 192:
		return 16
	}
	return 24
}
