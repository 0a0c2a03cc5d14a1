package netpol

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Names the rules use.
const (
	// Chain is the chain FORWARD and INPUT jump to first.
	Chain = "BALLAST-NETPOL"
	// NFLOGGroup is the group dropped packets go to, as in k3s.
	NFLOGGroup = 100
	// Annotations on a NetworkPolicy that set its NFLOG rate.
	LimitAnnotation      = "kube-router.io/netpol-nflog-limit"
	LimitBurstAnnotation = "kube-router.io/netpol-nflog-limit-burst"
	defaultLimit         = "10/minute"
	defaultBurst         = 10
	// setPrefix starts the name of every ipset the controller owns.
	setPrefix = "bnp-"
	// chainPrefix starts the name of every per-pod chain it owns.
	chainPrefix = "BNP-"
)

// Node is this node as the rules need it: its name (which pods are local)
// and the addresses its own processes send from (the kubelet's probes
// come from the node's address or the pod bridge's), which every pod
// accepts, as kube-router lets them.
type Node struct {
	Name  string
	Addrs []netip.Addr
}

// State is everything the rules are computed from.
type State struct {
	Node       Node
	Pods       []Pod
	Namespaces []Namespace
	Policies   []Policy
}

// Set is an ipset: hash:ip of pod addresses, or hash:net of a CIDR whose
// exceptions are "nomatch" entries.
type Set struct {
	Name    string
	Type    string // hash:ip or hash:net
	Entries []string
}

// Ruleset is what the controller installs: the ipsets, and the filter
// table's chains as iptables-restore reads them (with --noflush: only
// these chains are replaced).
type Ruleset struct {
	Sets     []Set
	Chains   []string // every chain the filter text declares
	Filter   string
	Warnings []string // annotations not understood, ports not resolved
}

// podInfo is a pod with an IPv4 address, outside the host's network.
type podInfo struct {
	*Pod
	key string // namespace/name
	ip  netip.Addr
}

func podsWithIPs(pods []Pod) []podInfo {
	var out []podInfo
	for i := range pods {
		p := &pods[i]
		if p.Spec.HostNetwork || p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed" {
			continue
		}
		for _, a := range p.Status.PodIPs {
			if ip, err := netip.ParseAddr(a.IP); err == nil && ip.Is4() {
				out = append(out, podInfo{Pod: p, key: p.Metadata.Namespace + "/" + p.Metadata.Name, ip: ip})
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b podInfo) int { return strings.Compare(a.key, b.key) })
	return out
}

// Compute is the ruleset for st: every pod of this node that a policy
// isolates gets a chain per direction, which returns (lets the packet on
// to the other chains of FORWARD) when a rule of one of its policies
// allows it, and otherwise logs it to NFLOG and rejects it.
func Compute(st State) Ruleset {
	var rs Ruleset
	b := &builder{st: st, rs: &rs, sets: map[string]bool{}}
	b.nsLabels = map[string]map[string]string{}
	for _, ns := range st.Namespaces {
		b.nsLabels[ns.Metadata.Name] = ns.Metadata.Labels
	}
	b.pods = podsWithIPs(st.Pods)
	policies := slices.Clone(st.Policies)
	slices.SortFunc(policies, func(a, b Policy) int {
		return strings.Compare(a.Metadata.Namespace+"/"+a.Metadata.Name, b.Metadata.Namespace+"/"+b.Metadata.Name)
	})
	b.policies = policies

	var top []string
	top = append(top, "-A "+Chain+" -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
	var chains []string
	for _, p := range b.pods {
		if p.Spec.NodeName != st.Node.Name {
			continue
		}
		var ingress, egress []*Policy
		for i := range b.policies {
			pol := &b.policies[i]
			if pol.Metadata.Namespace != p.Metadata.Namespace || !pol.Spec.PodSelector.Matches(p.Metadata.Labels) {
				continue
			}
			in, eg := pol.PolicyTypes()
			if in {
				ingress = append(ingress, pol)
			}
			if eg {
				egress = append(egress, pol)
			}
		}
		if len(egress) > 0 {
			name := chainName("E", p.key)
			top = append(top, fmt.Sprintf("-A %s -s %s -m comment --comment %s -j %s", Chain, p.ip, quoteArg("egress of "+p.key), name))
			chains = append(chains, b.podChain(name, "egress", p, egress)...)
			rs.Chains = append(rs.Chains, name)
		}
		if len(ingress) > 0 {
			name := chainName("I", p.key)
			top = append(top, fmt.Sprintf("-A %s -d %s -m comment --comment %s -j %s", Chain, p.ip, quoteArg("ingress of "+p.key), name))
			chains = append(chains, b.podChain(name, "ingress", p, ingress)...)
			rs.Chains = append(rs.Chains, name)
		}
	}
	var f strings.Builder
	f.WriteString("*filter\n")
	f.WriteString(":" + Chain + " - [0:0]\n")
	for _, c := range rs.Chains {
		f.WriteString(":" + c + " - [0:0]\n")
	}
	for _, l := range append(top, chains...) {
		f.WriteString(l + "\n")
	}
	f.WriteString("COMMIT\n")
	rs.Filter = f.String()
	rs.Chains = append([]string{Chain}, rs.Chains...)
	return rs
}

type builder struct {
	st       State
	rs       *Ruleset
	nsLabels map[string]map[string]string
	pods     []podInfo
	policies []Policy
	sets     map[string]bool
}

// podChain is the rules of one pod's chain for one direction.
func (b *builder) podChain(name, dir string, p podInfo, policies []*Policy) []string {
	var out []string
	if dir == "ingress" {
		for _, a := range b.st.Node.Addrs {
			if a.Is4() {
				out = append(out, fmt.Sprintf("-A %s -s %s -m comment --comment %s -j RETURN", name, a, quoteArg("from this node")))
			}
		}
	}
	var names []string
	for _, pol := range policies {
		key := pol.Metadata.Namespace + "/" + pol.Metadata.Name
		names = append(names, key)
		comment := "-m comment --comment " + quoteArg(dir+" allowed by "+key)
		if dir == "ingress" {
			for i, r := range pol.Spec.Ingress {
				out = append(out, b.ruleLines(name, comment, "src", key, fmt.Sprintf("i%d", i), pol, r.From, r.Ports, &p)...)
			}
		} else {
			for i, r := range pol.Spec.Egress {
				out = append(out, b.ruleLines(name, comment, "dst", key, fmt.Sprintf("e%d", i), pol, r.To, r.Ports, nil)...)
			}
		}
	}
	limit, burst := b.limits(policies)
	prefix := quoteArg(nflogPrefix(dir, names))
	out = append(out,
		fmt.Sprintf("-A %s -m limit --limit %s --limit-burst %d -j NFLOG --nflog-group %d --nflog-prefix %s", name, limit, burst, NFLOGGroup, prefix),
		// The same again for the node's own log (DropLog): a group
		// has one listener, and 100 stays free for tcpdump.
		fmt.Sprintf("-A %s -m limit --limit %s --limit-burst %d -j NFLOG --nflog-group %d --nflog-prefix %s", name, limit, burst, ReaderGroup, prefix),
		fmt.Sprintf("-A %s -m comment --comment %s -j REJECT", name, quoteArg(dir+" of "+p.key+" not allowed by "+strings.Join(names, ","))))
	return out
}

// ruleLines are the RETURN rules of one policy rule. dst is the pod the
// ports are named on for ingress (the pod itself); for egress a named port
// is looked up on each destination pod.
func (b *builder) ruleLines(chain, comment, dir, key, idx string, pol *Policy, peers []Peer, ports []Port, dst *podInfo) []string {
	var matches []string // one per peer: "-m set --match-set S src", or "" for any
	var peerPods []podInfo
	anyPeer := len(peers) == 0
	if anyPeer {
		matches = []string{""}
		peerPods = b.pods
	}
	for j, peer := range peers {
		set, pods, ok := b.peerSet(pol, peer, fmt.Sprintf("%s/%s/%s/%d", key, dir, idx, j))
		if !ok {
			continue
		}
		matches = append(matches, "-m set --match-set "+set+" "+dir)
		peerPods = append(peerPods, pods...)
	}
	var out []string
	if len(ports) == 0 {
		for _, m := range matches {
			out = append(out, joinArgs("-A", chain, m, comment, "-j RETURN"))
		}
		return out
	}
	for _, port := range ports {
		proto := strings.ToLower(port.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		switch {
		case port.Port == nil:
			for _, m := range matches {
				out = append(out, joinArgs("-A", chain, m, "-p", proto, comment, "-j RETURN"))
			}
		case port.Port.Str == "":
			dport := strconv.Itoa(port.Port.Int)
			if port.EndPort > port.Port.Int {
				dport += ":" + strconv.Itoa(port.EndPort)
			}
			for _, m := range matches {
				out = append(out, joinArgs("-A", chain, m, "-p", proto, "-m", proto, "--dport", dport, comment, "-j RETURN"))
			}
		case dst != nil: // ingress: the port named by the pod itself
			if n, ok := namedPort(dst.Pod, port.Port.Str, proto); ok {
				for _, m := range matches {
					out = append(out, joinArgs("-A", chain, m, "-p", proto, "-m", proto, "--dport", strconv.Itoa(n), comment, "-j RETURN"))
				}
			}
		default: // egress: per destination pod that names the port
			for _, q := range peerPods {
				if n, ok := namedPort(q.Pod, port.Port.Str, proto); ok {
					out = append(out, joinArgs("-A", chain, "-d", q.ip.String(), "-p", proto, "-m", proto, "--dport", strconv.Itoa(n), comment, "-j RETURN"))
				}
			}
		}
	}
	return out
}

func namedPort(p *Pod, name, proto string) (int, bool) {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			cproto := strings.ToLower(cp.Protocol)
			if cproto == "" {
				cproto = "tcp"
			}
			if cp.Name == name && cproto == proto {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

// peerSet makes the ipset of one peer and returns its name and, for pod
// peers, the pods in it; false for a peer that selects nothing valid.
func (b *builder) peerSet(pol *Policy, peer Peer, id string) (string, []podInfo, bool) {
	// The type is part of the name: a peer edited from pods to an
	// ipBlock gets a new set, as ipset cannot change a set's type.
	name := setPrefix + shortHash(id+"/ip", 12)
	if peer.IPBlock != nil {
		name = setPrefix + shortHash(id+"/net", 12)
		cidr, err := netip.ParsePrefix(peer.IPBlock.CIDR)
		if err != nil || !cidr.Addr().Is4() {
			if err != nil {
				b.rs.Warnings = append(b.rs.Warnings, fmt.Sprintf("policy %s/%s: ipBlock %q: %v", pol.Metadata.Namespace, pol.Metadata.Name, peer.IPBlock.CIDR, err))
			}
			return "", nil, false
		}
		entries := netSetEntries(cidr, "")
		for _, e := range peer.IPBlock.Except {
			if ex, err := netip.ParsePrefix(e); err == nil && ex.Addr().Is4() {
				entries = append(entries, netSetEntries(ex, " nomatch")...)
			}
		}
		b.addSet(Set{Name: name, Type: "hash:net", Entries: entries})
		return name, nil, true
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		return "", nil, false
	}
	var pods []podInfo
	var entries []string
	for _, q := range b.pods {
		ns := q.Metadata.Namespace
		if peer.NamespaceSelector == nil {
			if ns != pol.Metadata.Namespace {
				continue
			}
		} else if !peer.NamespaceSelector.Matches(b.nsLabels[ns]) {
			continue
		}
		if peer.PodSelector != nil && !peer.PodSelector.Matches(q.Metadata.Labels) {
			continue
		}
		pods = append(pods, q)
		entries = append(entries, q.ip.String())
	}
	slices.Sort(entries)
	entries = slices.Compact(entries)
	b.addSet(Set{Name: name, Type: "hash:ip", Entries: entries})
	return name, pods, true
}

// netSetEntries are the hash:net entries of a prefix, each with suffix:
// the prefix itself, or for a /0, which hash:net refuses, its two halves.
func netSetEntries(p netip.Prefix, suffix string) []string {
	if p.Bits() == 0 {
		return []string{"0.0.0.0/1" + suffix, "128.0.0.0/1" + suffix}
	}
	return []string{p.Masked().String() + suffix}
}

func (b *builder) addSet(s Set) {
	if !b.sets[s.Name] {
		b.sets[s.Name] = true
		b.rs.Sets = append(b.rs.Sets, s)
	}
}

var limitRE = regexp.MustCompile(`^([0-9]+)/(second|minute|hour|day|sec|min|s|m|h|d)$`)

// limits are the NFLOG rate and burst of a pod's chain: the highest of
// its policies' annotations (no policy's logging is starved by another's),
// else 10/minute, burst 10.
func (b *builder) limits(policies []*Policy) (string, int) {
	limit, perSecond, burst := "", 0.0, 0
	for _, pol := range policies {
		key := pol.Metadata.Namespace + "/" + pol.Metadata.Name
		if v, ok := pol.Metadata.Annotations[LimitAnnotation]; ok {
			m := limitRE.FindStringSubmatch(v)
			if m == nil {
				b.rs.Warnings = append(b.rs.Warnings, fmt.Sprintf("policy %s: %s=%q: want N/second, N/minute, N/hour or N/day; using %s", key, LimitAnnotation, v, defaultLimit))
			} else if r := rate(m); r > perSecond {
				limit, perSecond = v, r
			}
		}
		if v, ok := pol.Metadata.Annotations[LimitBurstAnnotation]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				b.rs.Warnings = append(b.rs.Warnings, fmt.Sprintf("policy %s: %s=%q: want a positive number; using %d", key, LimitBurstAnnotation, v, defaultBurst))
			} else if n > burst {
				burst = n
			}
		}
	}
	if limit == "" {
		limit = defaultLimit
	}
	if burst == 0 {
		burst = defaultBurst
	}
	return limit, burst
}

func rate(m []string) float64 {
	n, _ := strconv.ParseFloat(m[1], 64)
	switch m[2][0] {
	case 's':
		return n
	case 'm':
		return n / 60
	case 'h':
		return n / 3600
	default:
		return n / 86400
	}
}

// nflogPrefix names the direction and the policies that isolate the pod,
// within NFLOG's 64 bytes: "ingress default/deny-all,default/web", or as
// many whole names as fit and how many more ("ingress a/x,a/y +3").
func nflogPrefix(dir string, policies []string) string {
	const max = 63
	if s := dir + " " + strings.Join(policies, ","); len(s) <= max {
		return s
	}
	for k := len(policies) - 1; k >= 1; k-- {
		if s := fmt.Sprintf("%s %s +%d", dir, strings.Join(policies[:k], ","), len(policies)-k); len(s) <= max {
			return s
		}
	}
	more := fmt.Sprintf(" +%d", len(policies)-1)
	if len(policies) == 1 {
		more = ""
	}
	return (dir + " " + policies[0])[:max-len(more)] + more
}

func chainName(dir, podKey string) string {
	return chainPrefix + dir + "-" + shortHash(podKey, 16) // 22 characters, within iptables' 28
}

func shortHash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

// quoteArg quotes a comment or prefix for iptables-restore.
func quoteArg(s string) string {
	return `"` + strings.NewReplacer(`"`, `'`, "\n", " ").Replace(s) + `"`
}

func joinArgs(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, " ")
}
