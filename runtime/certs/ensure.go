package certs

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

// Options describe the node whose PKI Ensure lays out.
type Options struct {
	// DataDir is the k3s data dir; TLS files go under server/tls, kubeconfigs
	// under server/cred and agent/.
	DataDir string
	// NodeName is the node's name (kubelet certificates).
	NodeName string
	// NodeIPs are the node's addresses, added to serving certificates.
	NodeIPs []netip.Addr
	// SANs are extra names and addresses from --tls-san.
	SANs []string
	// ServiceCIDR's first address is the kubernetes Service IP (10.43.0.1).
	ServiceCIDR netip.Prefix
	// ClusterDomain, default cluster.local.
	ClusterDomain string
	// APIServerPort is kube-apiserver's port (6444), used by component kubeconfigs.
	APIServerPort int
	// Agent also issues the local agent's kubelet and kube-proxy
	// certificates (a server that runs its own agent).
	Agent bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (o *Options) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

func (o *Options) tls(parts ...string) string {
	return filepath.Join(append([]string{o.DataDir, "server", "tls"}, parts...)...)
}

// Report says what Ensure did.
type Report struct {
	Created  []string          // CAs and keys made for the first time
	Issued   map[string]string // certificate path -> why it was (re)issued
	Services []string          // the services (Services) whose certificates were issued, each once
	Warnings []string          // e.g. a CA close to expiry, which Ensure does not rotate
}

// serviceIP is the first address of the service CIDR.
func serviceIP(p netip.Prefix) (netip.Addr, error) {
	if !p.IsValid() {
		return netip.Addr{}, fmt.Errorf("service CIDR is not set")
	}
	a := p.Masked().Addr().Next()
	if !p.Contains(a) {
		return netip.Addr{}, fmt.Errorf("service CIDR %s has no first address", p)
	}
	return a, nil
}

func splitSANs(sans []string) (dns []string, ips []net.IP) {
	for _, s := range sans {
		if a, err := netip.ParseAddr(s); err == nil {
			ips = append(ips, net.IP(a.AsSlice()))
		} else if s != "" {
			dns = append(dns, s)
		}
	}
	return dns, ips
}

// CA file names.
const (
	ClientCA        = "client-ca"
	ServerCA        = "server-ca"
	RequestHeaderCA = "request-header-ca"
)

type cas struct{ client, server, requestHeader, etcdServer, etcdPeer *ca }

func (o *Options) loadCAs(r *Report, now time.Time) (*cas, error) {
	var c cas
	issued, err := o.leavesIssued()
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	for _, x := range []struct {
		dst  **ca
		path string
		name string
	}{
		{&c.client, o.tls(ClientCA), "k3s-client-ca"},
		{&c.server, o.tls(ServerCA), "k3s-server-ca"},
		{&c.requestHeader, o.tls(RequestHeaderCA), "k3s-request-header-ca"},
		{&c.etcdServer, o.tls("etcd", "server-ca"), "etcd-server-ca"},
		{&c.etcdPeer, o.tls("etcd", "peer-ca"), "etcd-peer-ca"},
	} {
		got, created, err := loadOrCreateCA(x.path+".crt", x.path+".key", x.name, now, issued)
		if err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		if created {
			r.Created = append(r.Created, x.path+".crt")
		}
		if got.cert.NotAfter.Sub(now) < RenewWithin {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s.crt expires %s; CAs are not rotated automatically (use k3s certificate rotate-ca)", x.path, got.cert.NotAfter.UTC().Format(time.RFC3339)))
		}
		*x.dst = got
	}
	// The .nochain copies are what the controller-manager signs with.
	for _, x := range []struct {
		path string
		c    *ca
	}{{o.tls(ClientCA), c.client}, {o.tls(ServerCA), c.server}} {
		if err := writeAtomic(x.path+".nochain.crt", certPEM(x.c.cert.Raw), 0o644); err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
	}
	return &c, nil
}

// leavesIssued reports whether any certificate other than the CAs exists
// under server/tls: Ensure writes every CA before the first leaf.
func (o *Options) leavesIssued() (bool, error) {
	for _, dir := range []string{o.tls(), o.tls("etcd")} {
		ents, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			return false, err
		}
		for _, e := range ents {
			n := e.Name()
			if strings.HasSuffix(n, ".crt") && !strings.HasSuffix(n, "-ca.crt") && !strings.HasSuffix(n, "-ca.nochain.crt") {
				return true, nil
			}
		}
	}
	return false, nil
}

// leaves lists every certificate of the server (and local agent).
func (o *Options) leaves(c *cas) ([]*leaf, error) {
	domain := o.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	svcIP, err := serviceIP(o.ServiceCIDR)
	if err != nil {
		return nil, err
	}
	extraDNS, extraIPs := splitSANs(o.SANs)
	var nodeIPs []net.IP
	for _, a := range o.NodeIPs {
		nodeIPs = append(nodeIPs, net.IP(a.AsSlice()))
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}

	apiDNS := append([]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + domain, "localhost"}, extraDNS...)
	if o.NodeName != "" {
		apiDNS = append(apiDNS, o.NodeName)
	}
	apiIPs := append(append(append([]net.IP{net.IP(svcIP.AsSlice())}, loopback...), nodeIPs...), extraIPs...)
	localDNS := []string{"localhost"}
	if o.NodeName != "" {
		localDNS = append(localDNS, o.NodeName)
	}
	localIPs := append(append([]net.IP{}, loopback...), nodeIPs...)

	t := o.tls
	ls := []*leaf{
		{service: "admin", cert: t("client-admin.crt"), key: t("client-admin.key"), ca: c.client, cn: "system:admin", orgs: []string{"system:masters"}, usage: client},
		{service: "controller-manager", cert: t("client-controller.crt"), key: t("client-controller.key"), ca: c.client, cn: "system:kube-controller-manager", usage: client},
		{service: "scheduler", cert: t("client-scheduler.crt"), key: t("client-scheduler.key"), ca: c.client, cn: "system:kube-scheduler", usage: client},
		{service: "api-server", cert: t("client-kube-apiserver.crt"), key: t("client-kube-apiserver.key"), ca: c.client, cn: "system:kube-apiserver", orgs: []string{"system:masters"}, usage: client},
		{service: "kube-proxy", cert: t("client-kube-proxy.crt"), key: t("client-kube-proxy.key"), ca: c.client, cn: "system:kube-proxy", usage: client},
		{service: "k3s-controller", cert: t("client-k3s-controller.crt"), key: t("client-k3s-controller.key"), ca: c.client, cn: "system:k3s-controller", usage: client},
		{service: "k3s-server", cert: t("client-supervisor.crt"), key: t("client-supervisor.key"), ca: c.client, cn: "system:k3s-supervisor", orgs: []string{"system:masters"}, usage: client},
		{service: "cloud-controller", cert: t("client-k3s-cloud-controller.crt"), key: t("client-k3s-cloud-controller.key"), ca: c.client, cn: "k3s-cloud-controller-manager", usage: client},
		{service: "auth-proxy", cert: t("client-auth-proxy.crt"), key: t("client-auth-proxy.key"), ca: c.requestHeader, cn: "system:auth-proxy", usage: client},
		{service: "api-server", cert: t("serving-kube-apiserver.crt"), key: t("serving-kube-apiserver.key"), ca: c.server, cn: "kube-apiserver", usage: server, dnsNames: apiDNS, ips: apiIPs},
		{service: "controller-manager", cert: t("kube-controller-manager", "kube-controller-manager.crt"), key: t("kube-controller-manager", "kube-controller-manager.key"), ca: c.server, cn: "kube-controller-manager", usage: server, dnsNames: []string{"localhost", "kube-controller-manager"}, ips: loopback},
		{service: "scheduler", cert: t("kube-scheduler", "kube-scheduler.crt"), key: t("kube-scheduler", "kube-scheduler.key"), ca: c.server, cn: "kube-scheduler", usage: server, dnsNames: []string{"localhost", "kube-scheduler"}, ips: loopback},
		{service: "etcd", cert: t("etcd", "client.crt"), key: t("etcd", "client.key"), ca: c.etcdServer, cn: "etcd-client", usage: client},
		{service: "etcd", cert: t("etcd", "server-client.crt"), key: t("etcd", "server-client.key"), ca: c.etcdServer, cn: "etcd-server", usage: client | server, dnsNames: localDNS, ips: localIPs},
		{service: "etcd", cert: t("etcd", "peer-server-client.crt"), key: t("etcd", "peer-server-client.key"), ca: c.etcdPeer, cn: "etcd-peer", usage: client | server, dnsNames: localDNS, ips: localIPs},
	}
	if o.Agent {
		if o.NodeName == "" {
			return nil, fmt.Errorf("node name is needed for the agent's kubelet certificates")
		}
		a := func(name string) string { return filepath.Join(o.DataDir, "agent", name) }
		ls = append(ls,
			&leaf{service: "kubelet", cert: a("client-kubelet.crt"), key: a("client-kubelet.key"), ca: c.client, cn: "system:node:" + o.NodeName, orgs: []string{"system:nodes"}, usage: client},
			&leaf{service: "kubelet", cert: a("serving-kubelet.crt"), key: a("serving-kubelet.key"), ca: c.server, cn: o.NodeName, usage: server, dnsNames: localDNS, ips: localIPs},
			&leaf{service: "kube-proxy", cert: a("client-kube-proxy.crt"), key: a("client-kube-proxy.key"), ca: c.client, cn: "system:kube-proxy", usage: client},
			&leaf{service: "k3s-controller", cert: a("client-k3s-controller.crt"), key: a("client-k3s-controller.key"), ca: c.client, cn: "system:k3s-controller", usage: client},
		)
	}
	return ls, nil
}

// Ensure creates what is missing and reissues what is due. It is safe to
// run at every start.
func Ensure(o Options) (*Report, error) {
	now := o.now()
	r := &Report{Issued: map[string]string{}}
	c, err := o.loadCAs(r, now)
	if err != nil {
		return nil, err
	}
	created, err := ensureServiceKey(o.tls("service.key"), o.tls("service.current.key"))
	if err != nil {
		return nil, fmt.Errorf("certs: service account key: %w", err)
	}
	if created {
		r.Created = append(r.Created, o.tls("service.key"))
	}
	ls, err := o.leaves(c)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	for _, l := range ls {
		why := l.needsIssue(now)
		if why == "" {
			continue
		}
		if err := l.issue(now); err != nil {
			return nil, fmt.Errorf("certs: issuing %s: %w", l.cert, err)
		}
		r.Issued[l.cert] = why
		if !slices.Contains(r.Services, l.service) {
			r.Services = append(r.Services, l.service)
		}
	}
	if o.Agent {
		for _, f := range []string{ClientCA, ServerCA} {
			src := map[string]*ca{ClientCA: c.client, ServerCA: c.server}[f]
			if err := writeAtomic(filepath.Join(o.DataDir, "agent", f+".crt"), src.pem, 0o644); err != nil {
				return nil, fmt.Errorf("certs: %w", err)
			}
		}
	}
	if err := o.writeKubeconfigs(); err != nil {
		return nil, err
	}
	return r, nil
}

// Services are the names `k3s certificate rotate --service` accepts.
func Services() []string {
	return []string{"admin", "api-server", "auth-proxy", "cloud-controller", "controller-manager", "etcd", "k3s-controller", "k3s-server", "kube-proxy", "kubelet", "scheduler"}
}

// Rotate does what `k3s certificate rotate [--service a,b]` does: back up
// server/tls to server/tls-<unix time>, then delete the certificates (not
// the keys, not the CAs) of the named services, or of all when none are
// named; the next start issues new ones.
func Rotate(o Options, services []string) (backup string, removed []string, err error) {
	known := map[string]bool{}
	for _, s := range Services() {
		known[s] = true
	}
	want := map[string]bool{}
	for _, s := range services {
		if !known[s] {
			return "", nil, fmt.Errorf("certs: unknown service %q (known: %s)", s, strings.Join(Services(), ", "))
		}
		want[s] = true
	}
	now := o.now()
	backup = filepath.Join(o.DataDir, "server", "tls-"+strconv.FormatInt(now.Unix(), 10))
	if err := atomicfile.CopyTree(o.tls(), backup); err != nil {
		return "", nil, fmt.Errorf("certs: backing up: %w", err)
	}
	// The leaves' paths do not depend on the CAs' contents or the SANs.
	dummy := &ca{}
	if !o.ServiceCIDR.IsValid() {
		o.ServiceCIDR = netip.MustParsePrefix("10.43.0.0/16")
	}
	o.Agent = o.NodeName != ""
	ls, err := o.leaves(&cas{dummy, dummy, dummy, dummy, dummy})
	if err != nil {
		return "", nil, fmt.Errorf("certs: %w", err)
	}
	for _, l := range ls {
		if len(want) > 0 && !want[l.service] {
			continue
		}
		if err := os.Remove(l.cert); err == nil {
			removed = append(removed, l.cert)
		} else if !os.IsNotExist(err) {
			return backup, removed, fmt.Errorf("certs: %w", err)
		}
	}
	sort.Strings(removed)
	return backup, removed, nil
}

// kubeconfig is the subset of clientcmd's format we write.
type kubeconfig struct {
	APIVersion     string       `yaml:"apiVersion"`
	Kind           string       `yaml:"kind"`
	Clusters       []namedEntry `yaml:"clusters"`
	Contexts       []namedEntry `yaml:"contexts"`
	CurrentContext string       `yaml:"current-context"`
	Preferences    struct{}     `yaml:"preferences"`
	Users          []namedEntry `yaml:"users"`
}

type namedEntry struct {
	Name    string            `yaml:"name"`
	Cluster map[string]string `yaml:"cluster,omitempty"`
	Context map[string]string `yaml:"context,omitempty"`
	User    map[string]string `yaml:"user,omitempty"`
}

// Kubeconfig renders a kubeconfig. With embed, the files' contents are
// inlined as *-data (k3s.yaml); otherwise they are referenced by path.
func Kubeconfig(server, caFile, certFile, keyFile string, embed bool) ([]byte, error) {
	cluster := map[string]string{"server": server}
	user := map[string]string{}
	if embed {
		for _, x := range []struct {
			m    map[string]string
			k, f string
		}{
			{cluster, "certificate-authority-data", caFile},
			{user, "client-certificate-data", certFile},
			{user, "client-key-data", keyFile},
		} {
			data, err := os.ReadFile(x.f)
			if err != nil {
				return nil, fmt.Errorf("certs: kubeconfig: %w", err)
			}
			x.m[x.k] = base64.StdEncoding.EncodeToString(data)
		}
	} else {
		cluster["certificate-authority"] = caFile
		user["client-certificate"] = certFile
		user["client-key"] = keyFile
	}
	kc := kubeconfig{
		APIVersion:     "v1",
		Kind:           "Config",
		Clusters:       []namedEntry{{Name: "default", Cluster: cluster}},
		Contexts:       []namedEntry{{Name: "default", Context: map[string]string{"cluster": "default", "user": "default"}}},
		CurrentContext: "default",
		Users:          []namedEntry{{Name: "default", User: user}},
	}
	return yaml.Marshal(kc)
}

// ComponentKubeconfigs maps each kubeconfig path to its client certificate
// name in server/tls (or agent/).
func (o *Options) componentKubeconfigs() map[string][2]string {
	cred := func(n string) string { return filepath.Join(o.DataDir, "server", "cred", n) }
	m := map[string][2]string{
		cred("admin.kubeconfig"):            {o.tls("client-admin.crt"), o.tls("client-admin.key")},
		cred("controller.kubeconfig"):       {o.tls("client-controller.crt"), o.tls("client-controller.key")},
		cred("scheduler.kubeconfig"):        {o.tls("client-scheduler.crt"), o.tls("client-scheduler.key")},
		cred("api-server.kubeconfig"):       {o.tls("client-kube-apiserver.crt"), o.tls("client-kube-apiserver.key")},
		cred("supervisor.kubeconfig"):       {o.tls("client-supervisor.crt"), o.tls("client-supervisor.key")},
		cred("cloud-controller.kubeconfig"): {o.tls("client-k3s-cloud-controller.crt"), o.tls("client-k3s-cloud-controller.key")},
	}
	if o.Agent {
		a := func(n string) string { return filepath.Join(o.DataDir, "agent", n) }
		m[a("kubelet.kubeconfig")] = [2]string{a("client-kubelet.crt"), a("client-kubelet.key")}
		m[a("kubeproxy.kubeconfig")] = [2]string{a("client-kube-proxy.crt"), a("client-kube-proxy.key")}
		m[a("k3scontroller.kubeconfig")] = [2]string{a("client-k3s-controller.crt"), a("client-k3s-controller.key")}
	}
	return m
}

func (o *Options) writeKubeconfigs() error {
	port := o.APIServerPort
	if port == 0 {
		port = 6444
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	for path, cf := range o.componentKubeconfigs() {
		data, err := Kubeconfig(server, o.tls(ServerCA+".crt"), cf[0], cf[1], false)
		if err != nil {
			return err
		}
		if err := writeAtomic(path, data, 0o600); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
	}
	return nil
}

// WriteAdminKubeconfig writes /etc/rancher/k3s/k3s.yaml: the admin
// credentials inlined, server https://127.0.0.1:<https-listen-port>, with
// the given mode (0600 unless --write-kubeconfig-mode).
func WriteAdminKubeconfig(dataDir, path string, httpsPort int, mode os.FileMode) error {
	tls := filepath.Join(dataDir, "server", "tls")
	data, err := Kubeconfig(fmt.Sprintf("https://127.0.0.1:%d", httpsPort),
		filepath.Join(tls, ServerCA+".crt"), filepath.Join(tls, "client-admin.crt"), filepath.Join(tls, "client-admin.key"), true)
	if err != nil {
		return err
	}
	if err := writeAtomic(path, data, mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
