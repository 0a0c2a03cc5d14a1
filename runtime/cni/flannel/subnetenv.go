package flannel

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// DefaultSubnetFile is where the flannel daemon writes its lease.
const DefaultSubnetFile = "/run/flannel/subnet.env"

// SubnetEnv is flannel's subnet.env: the cluster networks and this node's
// pod subnet.
type SubnetEnv struct {
	// Networks are FLANNEL_NETWORK's prefixes (comma separated; one
	// unless flannel has several cluster CIDRs).
	Networks []netip.Prefix
	// Subnet is FLANNEL_SUBNET masked: flannel writes the gateway address
	// with the prefix length (10.42.0.1/24), the node's subnet is 10.42.0.0/24.
	Subnet       netip.Prefix
	IPv6Networks []netip.Prefix
	IPv6Subnet   netip.Prefix
	// MTU is FLANNEL_MTU: the external interface's MTU less the backend's
	// encapsulation overhead.
	MTU int
	// IPMasq is FLANNEL_IPMASQ: true when the daemon masquerades traffic
	// leaving the cluster network, so the bridge must not.
	IPMasq bool
}

// ParseSubnetEnv reads a subnet.env from r; name is used in errors.
// KEY=VALUE lines, blank lines and # comments; unknown keys are ignored.
// Either FLANNEL_NETWORK and FLANNEL_SUBNET or their IPv6 pair, and
// FLANNEL_MTU and FLANNEL_IPMASQ, are required.
func ParseSubnetEnv(r io.Reader, name string) (*SubnetEnv, error) {
	var (
		e                 SubnetEnv
		haveMTU, haveMasq bool
		haveNet, haveNet6 bool
		sc                = bufio.NewScanner(r)
		line              int
	)
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE, got %q", name, line, text)
		}
		bad := func(err error) error {
			return fmt.Errorf("%s:%d: %s: %w", name, line, key, err)
		}
		var err error
		switch key {
		case "FLANNEL_NETWORK":
			e.Networks, err = parsePrefixes(value, false)
			haveNet = true
		case "FLANNEL_SUBNET":
			e.Subnet, err = parsePrefix(value, false)
		case "FLANNEL_IPV6_NETWORK":
			e.IPv6Networks, err = parsePrefixes(value, true)
			haveNet6 = true
		case "FLANNEL_IPV6_SUBNET":
			e.IPv6Subnet, err = parsePrefix(value, true)
		case "FLANNEL_MTU":
			var mtu uint64
			mtu, err = strconv.ParseUint(value, 10, 16)
			if err == nil && mtu < 68 {
				err = fmt.Errorf("MTU %d is below IPv4's minimum of 68", mtu)
			}
			e.MTU, haveMTU = int(mtu), true
		case "FLANNEL_IPMASQ":
			e.IPMasq, err = strconv.ParseBool(value)
			haveMasq = true
		}
		if err != nil {
			return nil, bad(err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var missing []string
	v4 := haveNet && e.Subnet.IsValid()
	v6 := haveNet6 && e.IPv6Subnet.IsValid()
	switch {
	case haveNet && !e.Subnet.IsValid():
		missing = append(missing, "FLANNEL_SUBNET")
	case !haveNet && e.Subnet.IsValid():
		missing = append(missing, "FLANNEL_NETWORK")
	}
	switch {
	case haveNet6 && !e.IPv6Subnet.IsValid():
		missing = append(missing, "FLANNEL_IPV6_SUBNET")
	case !haveNet6 && e.IPv6Subnet.IsValid():
		missing = append(missing, "FLANNEL_IPV6_NETWORK")
	}
	if !v4 && !v6 && len(missing) == 0 {
		missing = append(missing, "FLANNEL_NETWORK and FLANNEL_SUBNET (or FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET)")
	}
	if !haveMTU {
		missing = append(missing, "FLANNEL_MTU")
	}
	if !haveMasq {
		missing = append(missing, "FLANNEL_IPMASQ")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: missing %s", name, strings.Join(missing, ", "))
	}
	return &e, nil
}

// ReadSubnetEnv reads and parses the subnet.env at path.
func ReadSubnetEnv(path string) (*SubnetEnv, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("flannel subnet file (is the flannel daemon running?): %w", err)
	}
	return ParseSubnetEnv(bytes.NewReader(b), path)
}

// SubnetFileReady returns a readiness check for the flannel component: it
// succeeds once path holds a complete subnet.env (the daemon writes it
// atomically after its lease and traffic rules are in place).
func SubnetFileReady(path string) func(ctx context.Context) error {
	return func(context.Context) error {
		_, err := ReadSubnetEnv(path)
		return err
	}
}

func parsePrefix(s string, v6 bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4() == v6 || p.Addr().Is4In6() {
		fam := "IPv4"
		if v6 {
			fam = "IPv6"
		}
		return netip.Prefix{}, fmt.Errorf("%s is not an %s prefix", p, fam)
	}
	return p.Masked(), nil
}

func parsePrefixes(s string, v6 bool) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		p, err := parsePrefix(f, v6)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}
