package network

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// RenderResolvConf returns /etc/resolv.conf for the given name servers and
// search domains. glibc reads at most three name servers; the rest are
// written anyway for resolvers that read more (musl reads three too, Go
// reads all).
func RenderResolvConf(nameservers []netip.Addr, search []string) string {
	var b strings.Builder
	b.WriteString("# Written by ballast from the cloud-config and DHCP leases.\n")
	search = slices.DeleteFunc(slices.Clone(search), func(d string) bool { return !ValidSearchDomain(d) })
	if len(search) > 0 {
		b.WriteString("search " + strings.Join(search, " ") + "\n")
	}
	for _, ns := range nameservers {
		b.WriteString("nameserver " + ns.String() + "\n")
	}
	return b.String()
}

// resolverConfig picks name servers and search domains: the config's win
// over the leases' (each list on its own), duplicates dropped, order kept.
func resolverConfig(cfgNS []netip.Addr, cfgSearch []string, leases []LeaseConfig) ([]netip.Addr, []string) {
	ns := slices.Clone(cfgNS)
	if len(ns) == 0 {
		for _, l := range leases {
			ns = append(ns, l.DNS...)
		}
	}
	search := slices.Clone(cfgSearch)
	if len(search) == 0 {
		for _, l := range leases {
			search = append(search, l.Search...)
		}
	}
	return dedup(ns), dedup(search)
}

func dedup[T comparable](s []T) []T {
	seen := map[T]bool{}
	out := s[:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// searchDomain is a DNS name as resolv.conf's search line takes it:
// letters, digits, hyphens and underscores in dot-separated labels of 1 to
// 63 characters, an optional final dot.
var searchDomain = regexp.MustCompile(`^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$`)

// ValidSearchDomain reports whether d may go on resolv.conf's search line.
// A DHCP server's search list (option 119) is outside input: a "label"
// with a newline in it would otherwise add a nameserver line of its own.
func ValidSearchDomain(d string) bool {
	return len(d) <= 253 && searchDomain.MatchString(d)
}
