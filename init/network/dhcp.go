package network

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// maxBackoff caps the wait between failed DHCP attempts.
const maxBackoff = 30 * time.Second

// runDHCP obtains a lease on p's interface, applies it, and renews it at
// T1 until ctx ends. When renewal keeps failing until the lease expires,
// the address goes (the kernel drops it at its valid lifetime) and a new
// lease is requested from scratch.
func (s *State) runDHCP(ctx context.Context, p Plan, first chan<- struct{}) {
	log := s.log.With("iface", p.Name)
	backoff := time.Second
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	var client *nclient4.Client
	defer func() {
		if client != nil {
			client.Close()
		}
	}()
	mods := []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName, dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionInterfaceMTU,
		dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionNTPServers,
	)}
	if s.opts.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(s.opts.Hostname)))
	}
	var lease *nclient4.Lease
	var expires time.Time
	for ctx.Err() == nil {
		if client == nil {
			c, err := nclient4.New(p.Name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
			if err != nil {
				s.setLeaseErr(p.Name, err)
				log.Warn("dhcp client", "err", err)
				if !sleep(backoff) {
					return
				}
				backoff = min(backoff*2, maxBackoff)
				continue
			}
			client = c
		}
		var next *nclient4.Lease
		var err error
		if lease == nil {
			next, err = client.Request(ctx, mods...)
		} else {
			next, err = client.Renew(ctx, lease, mods...)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.setLeaseErr(p.Name, err)
			if lease != nil && time.Now().After(expires) {
				log.Warn("dhcp lease expired", "err", err)
				lease = nil
				s.dropLease(p.Name)
				continue
			}
			wait := backoff
			if lease != nil {
				// Retry renewing at half the remaining time, RFC 2131 style.
				wait = max(time.Until(expires)/2, 5*time.Second)
			}
			log.Debug("dhcp attempt failed", "err", err, "retry_in", wait)
			if !sleep(wait) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = time.Second
		lc, err := ConfigFromACK(next.ACK)
		if err == nil {
			err = s.applyLease(p, lc)
		}
		if err != nil {
			s.setLeaseErr(p.Name, err)
			log.Warn("dhcp lease not applied", "err", err)
			lease = nil
			if !sleep(5 * time.Second) {
				return
			}
			continue
		}
		lease = next
		expires = next.CreationTime.Add(lc.Lease)
		log.Info("dhcp lease", "address", lc.Address, "lease", lc.Lease)
		select {
		case first <- struct{}{}:
		default:
		}
		if !sleep(lc.Renew) {
			return
		}
	}
}

func (s *State) setLeaseErr(name string, err error) {
	s.mu.Lock()
	s.leaseErr[name] = err
	s.mu.Unlock()
}

// applyLease configures the interface from a lease and rewrites
// resolv.conf when the resolver settings changed.
func (s *State) applyLease(p Plan, lc LeaseConfig) error {
	link, err := netlink.LinkByName(p.Name)
	if err != nil {
		return err
	}
	if p.MTU == 0 && lc.MTU > 0 && link.Attrs().MTU != lc.MTU {
		if err := netlink.LinkSetMTU(link, lc.MTU); err != nil {
			return fmt.Errorf("mtu %d: %w", lc.MTU, err)
		}
	}
	secs := int(lc.Lease / time.Second)
	s.mu.Lock()
	old, hadOld := s.leases[p.Name]
	s.mu.Unlock()
	if hadOld && old.Address != lc.Address {
		netlink.AddrDel(link, &netlink.Addr{IPNet: prefixNet(old.Address)})
	}
	// Lifetimes make the kernel drop the address if we stop renewing.
	addr := &netlink.Addr{IPNet: prefixNet(lc.Address), ValidLft: secs, PreferedLft: secs}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s: %w", lc.Address, err)
	}
	for _, r := range lc.Routes {
		if r.Gw.IsValid() && !lc.Address.Contains(r.Gw) {
			// A gateway outside the subnet (a /32 lease): reach it on-link.
			if err := replaceRoute(link, Route{Dst: netipPrefixHost(r.Gw)}, dhcpMetric); err != nil {
				return fmt.Errorf("route to gateway %s: %w", r.Gw, err)
			}
		}
		if err := replaceRoute(link, r, dhcpMetric); err != nil {
			return fmt.Errorf("route %v via %v: %w", r.Dst, r.Gw, err)
		}
	}
	s.mu.Lock()
	s.leases[p.Name] = lc
	delete(s.leaseErr, p.Name)
	s.mu.Unlock()
	if !hadOld || !sameResolver(old, lc) {
		return s.writeResolvConf()
	}
	return nil
}

func (s *State) dropLease(name string) {
	s.mu.Lock()
	delete(s.leases, name)
	s.mu.Unlock()
	if err := s.writeResolvConf(); err != nil {
		s.log.Warn("resolv.conf", "err", err)
	}
}

func sameResolver(a, b LeaseConfig) bool {
	return fmt.Sprint(a.DNS, a.Search) == fmt.Sprint(b.DNS, b.Search)
}

func netipPrefixHost(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}
