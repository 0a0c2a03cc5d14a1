package netpol

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func decode[T any](t *testing.T, js string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatalf("%v in %s", err, js)
	}
	return v
}

func pod(t *testing.T, ns, name, node, ip, labels string, extra ...string) Pod {
	spec := `"nodeName":"` + node + `"`
	if len(extra) > 0 {
		spec += "," + extra[0]
	}
	return decode[Pod](t, `{"metadata":{"namespace":"`+ns+`","name":"`+name+`","labels":`+labels+`},
		"spec":{`+spec+`},"status":{"phase":"Running","podIPs":[{"ip":"`+ip+`"}]}}`)
}

// cluster: node1 runs web (default, a named port http=8080) and dns
// (kube-system); node2 runs client (default) and prom (monitoring).
func cluster(t *testing.T, policies ...string) State {
	st := State{Node: Node{Name: "node1", Addrs: []netip.Addr{netip.MustParseAddr("10.0.2.15"), netip.MustParseAddr("10.42.0.1"), netip.MustParseAddr("fd00::1")}}}
	st.Pods = []Pod{
		pod(t, "default", "web", "node1", "10.42.0.5", `{"app":"web"}`, `"containers":[{"ports":[{"name":"http","containerPort":8080}]}]`),
		pod(t, "kube-system", "dns", "node1", "10.42.0.6", `{"k8s-app":"kube-dns"}`, `"containers":[{"ports":[{"name":"dns","containerPort":53,"protocol":"UDP"},{"name":"metrics","containerPort":9153}]}]`),
		pod(t, "default", "client", "node2", "10.42.1.7", `{"app":"client"}`),
		pod(t, "monitoring", "prom", "node2", "10.42.1.8", `{"app":"prom"}`),
		pod(t, "default", "hostnet", "node1", "10.0.2.15", `{"app":"web"}`, `"hostNetwork":true`),
	}
	done := pod(t, "default", "job", "node1", "10.42.0.9", `{"app":"web"}`)
	done.Status.Phase = "Succeeded"
	st.Pods = append(st.Pods, done)
	st.Namespaces = []Namespace{
		decode[Namespace](t, `{"metadata":{"name":"default","labels":{"kubernetes.io/metadata.name":"default"}}}`),
		decode[Namespace](t, `{"metadata":{"name":"kube-system","labels":{"kubernetes.io/metadata.name":"kube-system"}}}`),
		decode[Namespace](t, `{"metadata":{"name":"monitoring","labels":{"team":"ops"}}}`),
	}
	for _, p := range policies {
		st.Policies = append(st.Policies, decode[Policy](t, p))
	}
	return st
}

func lines(rs Ruleset, substr string) []string {
	var out []string
	for _, l := range strings.Split(rs.Filter, "\n") {
		if strings.HasPrefix(l, "-A ") && strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

func TestNoPolicies(t *testing.T) {
	rs := Compute(cluster(t))
	want := "*filter\n:BALLAST-NETPOL - [0:0]\n-A BALLAST-NETPOL -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\nCOMMIT\n"
	if rs.Filter != want || len(rs.Sets) != 0 || len(rs.Chains) != 1 {
		t.Errorf("no policies:\n%s\nsets %v chains %v", rs.Filter, rs.Sets, rs.Chains)
	}
}

func TestDenyAllIngress(t *testing.T) {
	rs := Compute(cluster(t, `{"metadata":{"namespace":"default","name":"deny-all"},"spec":{"podSelector":{},"policyTypes":["Ingress"]}}`))
	web := chainName("I", "default/web")
	want := []string{
		"-A BALLAST-NETPOL -d 10.42.0.5 -m comment --comment \"ingress of default/web\" -j " + web,
		"-A " + web + " -s 10.0.2.15 -m comment --comment \"from this node\" -j RETURN",
		"-A " + web + " -s 10.42.0.1 -m comment --comment \"from this node\" -j RETURN",
		"-A " + web + " -m limit --limit 10/minute --limit-burst 10 -j NFLOG --nflog-group 100 --nflog-prefix \"ingress default/deny-all\"",
		"-A " + web + " -m limit --limit 10/minute --limit-burst 10 -j NFLOG --nflog-group 101 --nflog-prefix \"ingress default/deny-all\"",
		"-A " + web + " -m comment --comment \"ingress of default/web not allowed by default/deny-all\" -j REJECT",
	}
	if got := lines(rs, web); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("web's chain:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Only node1's pods have chains; the host-network and finished pods none.
	if len(rs.Chains) != 2 || strings.Contains(rs.Filter, "10.42.1.7") || strings.Contains(rs.Filter, "10.42.0.9") || strings.Contains(rs.Filter, "hostnet") {
		t.Errorf("chains %v:\n%s", rs.Chains, rs.Filter)
	}
	if !strings.Contains(rs.Filter, ":"+web+" - [0:0]\n") {
		t.Errorf("web's chain not declared:\n%s", rs.Filter)
	}
}

func TestIngressPeersAndPorts(t *testing.T) {
	rs := Compute(cluster(t, `{"metadata":{"namespace":"default","name":"web"},"spec":{
		"podSelector":{"matchLabels":{"app":"web"}},
		"ingress":[
			{"from":[{"podSelector":{"matchLabels":{"app":"client"}}},{"namespaceSelector":{"matchLabels":{"team":"ops"}}}],
			 "ports":[{"port":80},{"port":"http"},{"protocol":"UDP","port":9000,"endPort":9010}]},
			{"from":[{"ipBlock":{"cidr":"192.168.0.0/16","except":["192.168.1.0/24"]}}]},
			{"from":[{"ipBlock":{"cidr":"0.0.0.0/0"}}],"ports":[{"port":"nope"}]}
		]}}`))
	sets := map[string]Set{}
	for _, s := range rs.Sets {
		sets[s.Name] = s
	}
	clients := setPrefix + shortHash("default/web/src/i0/0/ip", 12)
	ops := setPrefix + shortHash("default/web/src/i0/1/ip", 12)
	block := setPrefix + shortHash("default/web/src/i1/0/net", 12)
	everywhere := setPrefix + shortHash("default/web/src/i2/0/net", 12)
	if s := sets[clients]; s.Type != "hash:ip" || strings.Join(s.Entries, ",") != "10.42.1.7" {
		t.Errorf("client set %+v", s)
	}
	if s := sets[ops]; s.Type != "hash:ip" || strings.Join(s.Entries, ",") != "10.42.1.8" {
		t.Errorf("monitoring set %+v", s)
	}
	if s := sets[block]; s.Type != "hash:net" || strings.Join(s.Entries, ",") != "192.168.0.0/16,192.168.1.0/24 nomatch" {
		t.Errorf("ipBlock set %+v", s)
	}
	if s := sets[everywhere]; strings.Join(s.Entries, ",") != "0.0.0.0/1,128.0.0.0/1" {
		t.Errorf("0.0.0.0/0 set %+v", s)
	}
	web := chainName("I", "default/web")
	c := `-m comment --comment "ingress allowed by default/web" -j RETURN`
	for _, want := range []string{
		"-A " + web + " -m set --match-set " + clients + " src -p tcp -m tcp --dport 80 " + c,
		"-A " + web + " -m set --match-set " + ops + " src -p tcp -m tcp --dport 8080 " + c,
		"-A " + web + " -m set --match-set " + clients + " src -p udp -m udp --dport 9000:9010 " + c,
		"-A " + web + " -m set --match-set " + block + " src " + c,
	} {
		if !strings.Contains(rs.Filter, want+"\n") {
			t.Errorf("no rule %q in:\n%s", want, rs.Filter)
		}
	}
	// A port the pod does not name allows nothing.
	if strings.Contains(rs.Filter, everywhere+" src") {
		t.Errorf("the unresolved named port allowed traffic:\n%s", rs.Filter)
	}
	// The dns pod is not selected by the policy: no chain.
	if strings.Contains(rs.Filter, "10.42.0.6") {
		t.Errorf("dns pod isolated:\n%s", rs.Filter)
	}
}

func TestEgress(t *testing.T) {
	rs := Compute(cluster(t, `{"metadata":{"namespace":"default","name":"egress"},"spec":{
		"podSelector":{"matchLabels":{"app":"web"}},"policyTypes":["Egress"],
		"egress":[
			{"to":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"kube-system"}},"podSelector":{"matchLabels":{"k8s-app":"kube-dns"}}}],
			 "ports":[{"protocol":"UDP","port":"dns"},{"port":"metrics"}]},
			{"to":[{"ipBlock":{"cidr":"10.0.0.0/8"}}],"ports":[{"protocol":"TCP"}]}
		]}}`))
	web := chainName("E", "default/web")
	c := `-m comment --comment "egress allowed by default/egress" -j RETURN`
	dns := setPrefix + shortHash("default/egress/dst/e1/0/net", 12)
	for _, want := range []string{
		"-A BALLAST-NETPOL -s 10.42.0.5 -m comment --comment \"egress of default/web\" -j " + web,
		"-A " + web + " -d 10.42.0.6 -p udp -m udp --dport 53 " + c,
		"-A " + web + " -d 10.42.0.6 -p tcp -m tcp --dport 9153 " + c,
		"-A " + web + " -m set --match-set " + dns + " dst -p tcp " + c,
		"-A " + web + " -m limit --limit 10/minute --limit-burst 10 -j NFLOG --nflog-group 100 --nflog-prefix \"egress default/egress\"",
	} {
		if !strings.Contains(rs.Filter, want+"\n") {
			t.Errorf("no rule %q in:\n%s", want, rs.Filter)
		}
	}
	// Egress isolation does not accept the node's own traffic in: there
	// is no ingress chain at all.
	if strings.Contains(rs.Filter, "from this node") || strings.Contains(rs.Filter, chainName("I", "default/web")) {
		t.Errorf("an egress-only policy isolated ingress:\n%s", rs.Filter)
	}
}

func TestNFLOGLimits(t *testing.T) {
	rs := Compute(cluster(t,
		`{"metadata":{"namespace":"default","name":"a","annotations":{"kube-router.io/netpol-nflog-limit":"5/second","kube-router.io/netpol-nflog-limit-burst":"20"}},"spec":{"podSelector":{}}}`,
		`{"metadata":{"namespace":"default","name":"b","annotations":{"kube-router.io/netpol-nflog-limit":"100/minute"}},"spec":{"podSelector":{}}}`,
		`{"metadata":{"namespace":"default","name":"c","annotations":{"kube-router.io/netpol-nflog-limit":"lots","kube-router.io/netpol-nflog-limit-burst":"-1"}},"spec":{"podSelector":{}}}`))
	if got := lines(rs, "NFLOG"); len(got) != 2 || !strings.Contains(got[0], "--limit 5/second --limit-burst 20 ") || !strings.Contains(got[0], `--nflog-prefix "ingress default/a,default/b,default/c"`) {
		t.Errorf("NFLOG rules %q", got)
	}
	if len(rs.Warnings) != 2 || !strings.Contains(rs.Warnings[0], `policy default/c: kube-router.io/netpol-nflog-limit="lots"`) {
		t.Errorf("warnings %q", rs.Warnings)
	}
}

func TestNFLOGPrefix(t *testing.T) {
	for _, c := range []struct {
		names []string
		want  string
	}{
		{[]string{"default/deny-all"}, "ingress default/deny-all"},
		{[]string{"team-a/allow-frontend-to-backend-on-8080", "team-a/deny-everything-else", "team-a/z"}, "ingress team-a/allow-frontend-to-backend-on-8080 +2"},
		{[]string{strings.Repeat("n", 70)}, "ingress " + strings.Repeat("n", 55)},
		{[]string{strings.Repeat("n", 70), "x/y"}, "ingress " + strings.Repeat("n", 52) + " +1"},
	} {
		if got := nflogPrefix("ingress", c.names); got != c.want || len(got) > 63 {
			t.Errorf("%q: %q (%d), want %q", c.names, got, len(got), c.want)
		}
	}
}

func TestSelectors(t *testing.T) {
	s := decode[LabelSelector](t, `{"matchLabels":{"a":"1"},"matchExpressions":[
		{"key":"b","operator":"In","values":["2","3"]},{"key":"c","operator":"NotIn","values":["x"]},
		{"key":"d","operator":"Exists"},{"key":"e","operator":"DoesNotExist"}]}`)
	for labels, want := range map[string]bool{
		`{"a":"1","b":"2","d":""}`:          true,
		`{"a":"1","b":"3","c":"y","d":"v"}`: true,
		`{"a":"1","b":"4","d":""}`:          false,
		`{"a":"1","b":"2","c":"x","d":""}`:  false,
		`{"a":"1","b":"2"}`:                 false,
		`{"a":"1","b":"2","d":"","e":""}`:   false,
		`{"a":"2","b":"2","d":""}`:          false,
	} {
		if got := s.Matches(decode[map[string]string](t, labels)); got != want {
			t.Errorf("%s: %v, want %v", labels, got, want)
		}
	}
	bad := decode[LabelSelector](t, `{"matchExpressions":[{"key":"a","operator":"Gt","values":["1"]}]}`)
	if bad.Matches(map[string]string{"a": "2"}) {
		t.Error("an unknown operator matched")
	}
	p := decode[Policy](t, `{"spec":{"egress":[{}]}}`)
	if in, eg := p.PolicyTypes(); !in || !eg {
		t.Errorf("default policy types with egress rules: %v %v", in, eg)
	}
	p = decode[Policy](t, `{"spec":{"policyTypes":["Egress"]}}`)
	if in, eg := p.PolicyTypes(); in || !eg {
		t.Errorf("Egress only: %v %v", in, eg)
	}
}
