package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/init/agent"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultDHCPWait is how long Configure waits for the first DHCP lease.
const DefaultDHCPWait = 10 * time.Second

// Route metrics: static gateways win over DHCP ones; each interface gets
// its own metric so two default routes do not replace each other.
const (
	staticMetric = 0
	dhcpMetric   = 1024
)

// ErrNoLease is returned (wrapped) by Configure when no DHCP lease came
// within Options.DHCPWait. DHCP carries on in the background.
var ErrNoLease = errors.New("no DHCP lease yet")

// Options are Configure's settings and seams.
type Options struct {
	// Root is the file-system root /etc/resolv.conf is written under;
	// default "/".
	Root string
	// SysClassNet is where Configure tells physical from virtual
	// interfaces; default "/sys/class/net".
	SysClassNet string
	// DHCPWait bounds the wait for the first lease; default DefaultDHCPWait.
	DHCPWait time.Duration
	// Hostname is sent to DHCP servers (option 12), if set.
	Hostname string
	// Log receives progress and background DHCP events; default discards.
	Log *slog.Logger
	// WiFiWait bounds the wait for Wi-Fi (association and address) when
	// network.wifi is set; default DefaultWiFiWait.
	WiFiWait time.Duration
	// StartService supervises a long-running program (wpa_supplicant for
	// network.wifi); it returns once the program is started.
	StartService func(name string, argv []string) error
}

// State is the configured network. Its methods are safe for concurrent use.
type State struct {
	opts   Options
	log    *slog.Logger
	cfgNS  []netip.Addr
	search []string

	// resolvMu serialises resolv.conf writes so a stale one never
	// replaces a newer one.
	resolvMu sync.Mutex

	mu       sync.Mutex
	plans    []Plan
	leases   map[string]LeaseConfig
	leaseErr map[string]error
	wifiErr  error
}

// Configure brings lo up, applies static configuration, starts DHCP on the
// interfaces that want it and waits up to opts.DHCPWait for a first lease
// (when any interface uses DHCP). It writes /etc/resolv.conf now and again
// whenever a lease changes. DHCP keeps renewing until ctx ends. The State
// is returned even with an error; the error lists every problem.
func Configure(ctx context.Context, cfg *cloudconfig.Network, opts Options) (*State, error) {
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.SysClassNet == "" {
		opts.SysClassNet = "/sys/class/net"
	}
	if opts.DHCPWait <= 0 {
		opts.DHCPWait = DefaultDHCPWait
	}
	if opts.WiFiWait <= 0 {
		opts.WiFiWait = DefaultWiFiWait
	}
	s := &State{opts: opts, log: opts.Log, leases: map[string]LeaseConfig{}, leaseErr: map[string]error{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg != nil {
		for _, n := range cfg.Nameservers {
			a, err := netip.ParseAddr(n)
			if err != nil {
				errs = append(errs, fmt.Errorf("network.nameservers: %q is not an IP address", n))
				continue
			}
			s.cfgNS = append(s.cfgNS, a)
		}
		s.search = cfg.Search
	}
	wifiConf := ""
	if cfg != nil && cfg.WiFi != nil {
		c, err := RenderSupplicantConf(*cfg.WiFi)
		if err != nil {
			errs = append(errs, err)
		} else {
			wifiConf = c
		}
	}
	if err := upLoopback(); err != nil {
		errs = append(errs, err)
	}
	links, err := s.listLinks()
	if err != nil {
		errs = append(errs, err)
	}
	plans, err := PlanLinks(cfg, links)
	if err != nil {
		errs = append(errs, err)
	}
	s.plans = plans
	if err := s.writeResolvConf(); err != nil {
		errs = append(errs, err)
	}
	first := make(chan struct{}, 1)
	dhcp := 0
	for _, p := range plans {
		if err := applyLink(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if p.Method == MethodDHCP {
			dhcp++
			go s.runDHCP(ctx, p, first)
		}
	}
	wait := opts.DHCPWait
	if wifiConf != "" {
		// The first wait is the interface's: it may still be loading
		// its firmware.
		s.wifiErr = fmt.Errorf("no wireless interface yet: %w", ErrWiFiNotReady)
		go s.runWiFi(ctx, cfg, wifiConf, first)
		wait = max(wait, opts.WiFiWait)
	}
	if dhcp > 0 || wifiConf != "" {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-first:
			// Something is online. A Wi-Fi that failed outright is still
			// worth reporting; one that is only slow is not.
			if err := s.WiFiError(); err != nil && !errors.Is(err, ErrWiFiNotReady) {
				errs = append(errs, err)
			}
		case <-t.C:
			if dhcp > 0 {
				errs = append(errs, fmt.Errorf("network: %w after %v on %d interface(s)%s", ErrNoLease, wait, dhcp, s.leaseErrors()))
			}
			if err := s.WiFiError(); err != nil {
				errs = append(errs, fmt.Errorf("network.wifi: after %v: %w", wait, err))
			}
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
		}
	}
	return s, errors.Join(errs...)
}

func (s *State) leaseErrors() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := ""
	for _, p := range s.plans {
		if err := s.leaseErr[p.Name]; err != nil {
			out += fmt.Sprintf("; %s: %v", p.Name, err)
		}
	}
	return out
}

func (s *State) listLinks() ([]Link, error) {
	nl, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("network: listing links: %w", err)
	}
	var links []Link
	for _, l := range nl {
		a := l.Attrs()
		if a.Name == "lo" || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		dir := filepath.Join(s.opts.SysClassNet, a.Name)
		_, devErr := os.Stat(filepath.Join(dir, "device"))
		_, wErr := os.Stat(filepath.Join(dir, "wireless"))
		_, pErr := os.Stat(filepath.Join(dir, "phy80211"))
		links = append(links, Link{
			Name:     a.Name,
			MAC:      a.HardwareAddr.String(),
			Wired:    devErr == nil && wErr != nil && pErr != nil,
			Wireless: wErr == nil || pErr == nil,
		})
	}
	slices.SortFunc(links, func(a, b Link) int { return strings.Compare(a.Name, b.Name) })
	return links, nil
}

func upLoopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("network: lo: %w", err)
	}
	// The kernel adds 127.0.0.1/8 and ::1 itself when lo comes up.
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("network: lo up: %w", err)
	}
	return nil
}

// applyLink sets MTU, brings the link up and applies static addresses and
// the gateway.
func applyLink(p Plan) error {
	link, err := netlink.LinkByName(p.Name)
	if err != nil {
		return fmt.Errorf("network: %s: %w", p.Name, err)
	}
	if p.MTU > 0 && link.Attrs().MTU != p.MTU {
		if err := netlink.LinkSetMTU(link, p.MTU); err != nil {
			return fmt.Errorf("network: %s: mtu %d: %w", p.Name, p.MTU, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("network: %s: up: %w", p.Name, err)
	}
	var errs []error
	for _, a := range p.Addresses {
		addr := &netlink.Addr{IPNet: prefixNet(a)}
		if err := netlink.AddrReplace(link, addr); err != nil {
			errs = append(errs, fmt.Errorf("network: %s: address %s: %w", p.Name, a, err))
		}
	}
	if p.Gateway.IsValid() {
		if err := replaceRoute(link, Route{Gw: p.Gateway}, staticMetric); err != nil {
			errs = append(errs, fmt.Errorf("network: %s: gateway %s: %w", p.Name, p.Gateway, err))
		}
	}
	return errors.Join(errs...)
}

func replaceRoute(link netlink.Link, r Route, metric int) error {
	family := unix.AF_INET
	if r.Gw.Is6() || r.Dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	rt := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Family:    family,
		Priority:  metric + link.Attrs().Index,
	}
	if r.Dst.IsValid() && r.Dst.Bits() > 0 {
		rt.Dst = prefixNet(r.Dst)
	} else if family == unix.AF_INET {
		rt.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	} else {
		rt.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	if r.Gw.IsValid() && !r.Gw.IsUnspecified() {
		rt.Gw = net.IP(r.Gw.AsSlice())
	} else {
		rt.Scope = netlink.SCOPE_LINK
	}
	return netlink.RouteReplace(rt)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// writeResolvConf writes /etc/resolv.conf from the config and the current
// leases, atomically.
func (s *State) writeResolvConf() error {
	s.resolvMu.Lock()
	defer s.resolvMu.Unlock()
	s.mu.Lock()
	var leases []LeaseConfig
	for _, p := range s.plans {
		if l, ok := s.leases[p.Name]; ok {
			leases = append(leases, l)
		}
	}
	s.mu.Unlock()
	ns, search := resolverConfig(s.cfgNS, s.search, leases)
	data := RenderResolvConf(ns, search)
	p := filepath.Join(s.opts.Root, "etc/resolv.conf")
	if err := writeAtomic(p, []byte(data), 0o644); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

func writeAtomic(p string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	// /etc/resolv.conf may be a symlink in the image (Debian's
	// systemd-resolved setups); replace it with a real file.
	tmp := p + ".ballast-tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Ifaces reports every configured interface with its current addresses.
func (s *State) Ifaces() []agent.Iface {
	s.mu.Lock()
	plans := slices.Clone(s.plans)
	s.mu.Unlock()
	var out []agent.Iface
	for _, p := range plans {
		ifc := agent.Iface{Name: p.Name, MAC: p.MAC, Method: p.Method, Addresses: []string{}}
		if link, err := netlink.LinkByName(p.Name); err == nil {
			a := link.Attrs()
			ifc.Up = a.Flags&net.FlagUp != 0
			ifc.MAC = a.HardwareAddr.String()
			if addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL); err == nil {
				for _, ad := range addrs {
					ifc.Addresses = append(ifc.Addresses, ad.IPNet.String())
				}
			}
		}
		out = append(out, ifc)
	}
	return out
}

// NTPServers returns the NTP servers the DHCP leases offered, for when the
// config names none.
func (s *State) NTPServers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.plans {
		for _, a := range s.leases[p.Name].NTP {
			out = append(out, a.String())
		}
	}
	return dedup(out)
}

// Leases returns the current DHCP lease of each interface that has one.
func (s *State) Leases() map[string]LeaseConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]LeaseConfig, len(s.leases))
	for k, v := range s.leases {
		out[k] = v
	}
	return out
}
