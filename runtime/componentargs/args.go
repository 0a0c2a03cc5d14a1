// Package componentargs builds the flags k3s passes to each upstream
// component (k3s pkg/daemons/control/server.go, pkg/daemons/agent), for
// the single-node server the runtime supervises: kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet, kube-proxy, containerd.
// User --kube-*-arg values are merged the way k3s merges them.
package componentargs

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
	"gopkg.in/yaml.v3"
)

// Program is the name k3s puts in API audiences and similar places.
const Program = "k3s"

// ContainerdSocket and ContainerdState are k3s's fixed containerd paths.
// With the stargz snapshotter the kubelet pulls through
// StargzImageSocket, the image service the snapshotter wraps around
// containerd's CRI (to see the credentials of each pull), as in k3s.
const (
	ContainerdSocket  = "/run/k3s/containerd/containerd.sock"
	ContainerdState   = "/run/k3s/containerd"
	StargzImageSocket = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"
)

// Node is the resolved node: the config plus what was found at start.
type Node struct {
	Server   *config.ServerConfig
	NodeName string
	NodeIPs  []netip.Addr
	// ResolvConf is the resolv.conf the kubelet hands to pods.
	ResolvConf string
	// CloudController: a cloud controller runs that initializes nodes
	// (removes the node.cloudprovider.kubernetes.io/uninitialized taint
	// and sets addresses). Only then does the kubelet get
	// --cloud-provider=external, as k3s passes it; without one that taint
	// would keep every pod off the node.
	CloudController bool
	// CgroupV1: the host mounts cgroup v1 (a container on an older host).
	// Kubernetes 1.35 and later refuse it unless failCgroupV1 is false,
	// which k3s sets there; it warns instead.
	CgroupV1 bool
}

func (n *Node) layout() datadir.Layout { return datadir.Layout{Root: n.Server.DataDir} }

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// Merge applies user args to defaults as k3s's util.GetArgs does:
// "name=value" replaces the default (repeats accumulate), "name+=value"
// appends after the default, "name-=value" prepends; a name without a
// value means "true". The result is sorted by name; repeated names keep
// their order and become repeated flags.
func Merge(defaults map[string]string, extra []string) []string {
	initial := make(map[string]string, len(defaults))
	for k, v := range defaults {
		initial[k] = v
	}
	multi := map[string][]string{}
	for _, raw := range extra {
		name, value, ok := strings.Cut(strings.TrimPrefix(raw, "--"), "=")
		if !ok {
			value = "true"
		}
		clean := strings.TrimRight(name, "+-")
		init, hasInit := initial[clean]
		existing := multi[clean]
		var vals []string
		switch {
		case strings.HasSuffix(name, "+"):
			if hasInit {
				vals = append(vals, init)
			}
			vals = append(append(vals, existing...), value)
		case strings.HasSuffix(name, "-"):
			vals = append(vals, value)
			if hasInit {
				vals = append(vals, init)
			}
			vals = append(vals, existing...)
		default:
			vals = append(append(vals, existing...), value)
		}
		delete(initial, clean)
		multi[clean] = vals
	}
	for k, v := range initial {
		multi[k] = []string{v}
	}
	keys := make([]string, 0, len(multi))
	for k := range multi {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		for _, v := range multi[k] {
			out = append(out, "--"+k+"="+v)
		}
	}
	return out
}

func (n *Node) tls(name ...string) string {
	return filepath.Join(append([]string{n.layout().TLS()}, name...)...)
}

func (n *Node) cred(name string) string { return filepath.Join(n.layout().Cred(), name) }

func (n *Node) verbosity(m map[string]string) {
	if n.Server.V != 0 {
		m["v"] = strconv.Itoa(n.Server.V)
	}
	if n.Server.VModule != "" {
		m["vmodule"] = n.Server.VModule
	}
}

// storage sets the datastore flags: kine over sqlite by default (a unix
// socket in server/), embedded etcd with --cluster-init, or an external
// etcd endpoint.
func (n *Node) storage(m map[string]string) {
	s := n.Server
	m["storage-backend"] = "etcd3"
	switch {
	case s.DatastoreEndpoint != "" && (strings.HasPrefix(s.DatastoreEndpoint, "http://") || strings.HasPrefix(s.DatastoreEndpoint, "https://")):
		m["etcd-servers"] = s.DatastoreEndpoint
		if s.DatastoreCAFile != "" {
			m["etcd-cafile"] = s.DatastoreCAFile
		}
		if s.DatastoreCertFile != "" {
			m["etcd-certfile"] = s.DatastoreCertFile
		}
		if s.DatastoreKeyFile != "" {
			m["etcd-keyfile"] = s.DatastoreKeyFile
		}
	case s.ClusterInit || s.ServerURL != "":
		m["etcd-servers"] = "https://127.0.0.1:2379"
		m["etcd-cafile"] = n.tls("etcd", "server-ca.crt")
		m["etcd-certfile"] = n.tls("etcd", "client.crt")
		m["etcd-keyfile"] = n.tls("etcd", "client.key")
	default:
		// k3s passes unix://kine.sock relative to its working directory;
		// a separate process needs the absolute path.
		m["etcd-servers"] = "unix://" + n.layout().KineSocket()
	}
}

// APIServer returns kube-apiserver's flags.
func (n *Node) APIServer() []string {
	s := n.Server
	m := map[string]string{
		"cert-dir":                           n.tls("temporary-certs"),
		"allow-privileged":                   "true",
		"enable-bootstrap-token-auth":        "true",
		"authorization-mode":                 "Node,RBAC",
		"anonymous-auth":                     "false",
		"service-account-signing-key-file":   n.tls("service.current.key"),
		"service-account-key-file":           n.tls("service.key"),
		"service-account-issuer":             "https://kubernetes.default.svc." + s.ClusterDomain,
		"api-audiences":                      "https://kubernetes.default.svc." + s.ClusterDomain + "," + Program,
		"service-cluster-ip-range":           joinPrefixes(s.ServiceCIDRs),
		"service-node-port-range":            s.ServiceNodePortRange,
		"secure-port":                        strconv.Itoa(s.APIServerPortOrDefault()),
		"bind-address":                       n.apiserverBindAddress(),
		"tls-cert-file":                      n.tls("serving-kube-apiserver.crt"),
		"tls-private-key-file":               n.tls("serving-kube-apiserver.key"),
		"kubelet-certificate-authority":      n.tls("server-ca.crt"),
		"kubelet-client-certificate":         n.tls("client-kube-apiserver.crt"),
		"kubelet-client-key":                 n.tls("client-kube-apiserver.key"),
		"kubelet-preferred-address-types":    "InternalIP,ExternalIP,Hostname",
		"requestheader-client-ca-file":       n.tls("request-header-ca.crt"),
		"requestheader-allowed-names":        "system:auth-proxy",
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-username-headers":     "X-Remote-User",
		"proxy-client-cert-file":             n.tls("client-auth-proxy.crt"),
		"proxy-client-key-file":              n.tls("client-auth-proxy.key"),
		"client-ca-file":                     n.tls("client-ca.crt"),
		"enable-admission-plugins":           "NodeRestriction",
		"profiling":                          "false",
	}
	if s.APIServerPortOrDefault() != s.HTTPSListenPort {
		// The supervisor publishes the kubernetes Service's endpoints
		// with its own port (package supervisor, endpoints.go): the
		// apiserver's would name 127.0.0.1-bound 6444.
		m["endpoint-reconciler-type"] = "none"
	}
	if s.AdvertiseAddress != "" {
		m["advertise-address"] = s.AdvertiseAddress
	} else if len(n.NodeIPs) > 0 {
		m["advertise-address"] = n.NodeIPs[0].String()
	}
	if a := m["advertise-address"]; a != "" && s.APIServerPortOrDefault() != s.HTTPSListenPort {
		// The OIDC discovery document's key set: by default the
		// apiserver names its own address and port, which behind the
		// supervisor is the 127.0.0.1-bound 6444, so a pod that follows
		// the document cannot fetch the keys. k3s's apiserver publishes
		// its advertise port (k3s patches that flag in); name the
		// supervisor's port, as the kubernetes Service's endpoints do.
		m["service-account-jwks-uri"] = "https://" + net.JoinHostPort(a, strconv.Itoa(s.HTTPSListenPort)) + "/openid/v1/jwks"
	}
	if s.FlannelExternalIP {
		m["kubelet-preferred-address-types"] = "ExternalIP,InternalIP,Hostname"
	}
	if s.EgressSelectorMode != "disabled" {
		m["enable-aggregator-routing"] = "true"
		m["egress-selector-config-file"] = filepath.Join(n.layout().ServerEtc(), "egress-selector-config.yaml")
	}
	if s.SecretsEncryption {
		m["encryption-provider-config"] = filepath.Join(n.layout().Cred(), "encryption-config.json")
		m["encryption-provider-config-automatic-reload"] = "true"
	}
	n.storage(m)
	n.verbosity(m)
	return Merge(m, s.KubeAPIServerArgs)
}

// apiserverBindAddress: loopback behind a supervisor listener (k3s), or
// bind-address (all interfaces by default) when the apiserver serves the
// public https-listen-port itself.
func (n *Node) apiserverBindAddress() string {
	s := n.Server
	if s.APIServerPortOrDefault() != s.HTTPSListenPort {
		return "127.0.0.1"
	}
	if s.BindAddress != "" {
		return s.BindAddress
	}
	return "0.0.0.0"
}

// Kine returns the flags of `k3s kine`, the default datastore: the etcd API
// on the unix socket the apiserver's --etcd-servers names, over sqlite in
// server/db/state.db (or datastore-endpoint when it is not an etcd URL).
// Nil when the apiserver talks to etcd directly.
func (n *Node) Kine() []string {
	s := n.Server
	if s.ClusterInit || s.ServerURL != "" || strings.HasPrefix(s.DatastoreEndpoint, "http://") || strings.HasPrefix(s.DatastoreEndpoint, "https://") {
		return nil
	}
	ep := s.DatastoreEndpoint
	if ep == "" {
		ep = "sqlite://" + filepath.Join(n.layout().DB(), "state.db") + "?" + KineSQLiteParams
	}
	return []string{"--listen-address=unix://" + n.layout().KineSocket(), "--endpoint=" + ep}
}

// KineSQLiteParams are the sqlite DSN parameters of the default datastore:
// kine's defaults but synchronous=FULL. k3s (and kine) use NORMAL, with
// which a committed transaction may roll back after a power cut: the
// power-cut test (qemu-tests TestPowerCut) lost a ConfigMap the API had
// acknowledged two seconds before the cut. An appliance whose power is
// pulled, not shut down, syncs the WAL at every commit, as etcd does.
const KineSQLiteParams = "_journal_mode=WAL&_busy_timeout=30000&_synchronous=FULL&_txlock=immediate&_stmt_cache_size=20&cache=shared"

// ControllerManager returns kube-controller-manager's flags.
func (n *Node) ControllerManager() []string {
	s := n.Server
	kc := n.cred("controller.kubeconfig")
	m := map[string]string{
		"controllers":                      "*,tokencleaner",
		"kubeconfig":                       kc,
		"authorization-kubeconfig":         kc,
		"authentication-kubeconfig":        kc,
		"service-account-private-key-file": n.tls("service.current.key"),
		"allocate-node-cidrs":              "true",
		"service-cluster-ip-range":         joinPrefixes(s.ServiceCIDRs),
		"cluster-cidr":                     joinPrefixes(s.ClusterCIDRs),
		"root-ca-file":                     n.tls("server-ca.crt"),
		"profiling":                        "false",
		"tls-cert-file":                    n.tls("kube-controller-manager", "kube-controller-manager.crt"),
		"tls-private-key-file":             n.tls("kube-controller-manager", "kube-controller-manager.key"),
		"bind-address":                     "127.0.0.1",
		"secure-port":                      "10257",
		"use-service-account-credentials":  "true",
		"cluster-signing-kube-apiserver-client-cert-file": n.tls("client-ca.nochain.crt"),
		"cluster-signing-kube-apiserver-client-key-file":  n.tls("client-ca.key"),
		"cluster-signing-kubelet-client-cert-file":        n.tls("client-ca.nochain.crt"),
		"cluster-signing-kubelet-client-key-file":         n.tls("client-ca.key"),
		"cluster-signing-kubelet-serving-cert-file":       n.tls("server-ca.nochain.crt"),
		"cluster-signing-kubelet-serving-key-file":        n.tls("server-ca.key"),
		"cluster-signing-legacy-unknown-cert-file":        n.tls("server-ca.nochain.crt"),
		"cluster-signing-legacy-unknown-key-file":         n.tls("server-ca.key"),
	}
	if !s.DisableCloudController {
		m["configure-cloud-routes"] = "false"
		// k3s also appends ",-service,-route,-cloud-node-lifecycle";
		// Kubernetes 1.37's controller-manager no longer has those
		// controllers and refuses their names.
	}
	leaderElection(m)
	n.verbosity(m)
	return Merge(m, s.KubeControllerManagerArgs)
}

// leaderElection lengthens the controller-manager's and scheduler's lease
// renewal (upstream: 15 s lease, 10 s to renew, 2 s retries), a
// difference from k3s: on a slow node (a Raspberry Pi 3, an emulated VM)
// the API server under start-up load answers late, a missed renewal makes
// the component exit, and its restart adds more load. A second server
// takes over a dead leader's lease within a minute instead of 15 s.
func leaderElection(m map[string]string) {
	m["leader-elect-lease-duration"] = "60s"
	m["leader-elect-renew-deadline"] = "40s"
	m["leader-elect-retry-period"] = "5s"
}

// Scheduler returns kube-scheduler's flags.
func (n *Node) Scheduler() []string {
	kc := n.cred("scheduler.kubeconfig")
	m := map[string]string{
		"kubeconfig":                kc,
		"authorization-kubeconfig":  kc,
		"authentication-kubeconfig": kc,
		"bind-address":              "127.0.0.1",
		"secure-port":               "10259",
		"tls-cert-file":             n.tls("kube-scheduler", "kube-scheduler.crt"),
		"tls-private-key-file":      n.tls("kube-scheduler", "kube-scheduler.key"),
		"profiling":                 "false",
	}
	leaderElection(m)
	n.verbosity(m)
	return Merge(m, n.Server.KubeSchedulerArgs)
}

// Kubelet returns the kubelet's flags. Most settings go in the config file
// KubeletConfig writes to agent/etc/kubelet.conf.d (as k3s does since
// upstream deprecated the flags). Nil when --disable-agent.
func (n *Node) Kubelet() []string {
	s := n.Server
	if s.DisableAgent {
		return nil
	}
	l := n.layout()
	m := map[string]string{
		"config-dir":     l.KubeletConfigDir(),
		"kubeconfig":     l.AgentFile("kubelet.kubeconfig"),
		"read-only-port": "0",
		"root-dir":       l.KubeletRoot(),
		"cert-dir":       filepath.Join(l.KubeletRoot(), "pki"),
		"node-labels":    strings.Join(s.NodeLabels, ","),
	}
	if n.NodeName != "" {
		m["hostname-override"] = n.NodeName
	}
	if !s.DisableCloudController && n.CloudController {
		m["cloud-provider"] = "external"
	}
	if len(n.NodeIPs) > 0 {
		m["node-ip"] = joinAddrs(n.NodeIPs)
	}
	if len(s.NodeTaints) > 0 {
		m["register-with-taints"] = strings.Join(s.NodeTaints, ",")
	}
	if s.Rootless {
		m["feature-gates"] = "KubeletInUserNamespace=true"
	}
	n.verbosity(m)
	return Merge(m, s.KubeletArgs)
}

// KubeletConfigFileName is the drop-in KubeletConfig's output goes to.
const KubeletConfigFileName = "00-ballast-defaults.conf"

// KubeletConfig renders the KubeletConfiguration drop-in.
func (n *Node) KubeletConfig() ([]byte, error) {
	s := n.Server
	l := n.layout()
	dns := make([]string, len(s.ClusterDNS))
	for i, a := range s.ClusterDNS {
		dns[i] = a.String()
	}
	resolv := n.ResolvConf
	if s.ResolvConf != "" {
		resolv = s.ResolvConf
	}
	cfg := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		"address":    "0.0.0.0",
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true, "cacheTTL": "2m0s"},
			"x509":      map[string]any{"clientCAFile": l.AgentFile("client-ca.crt")},
		},
		"authorization": map[string]any{
			"mode":    "Webhook",
			"webhook": map[string]any{"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"},
		},
		"cgroupDriver":             "cgroupfs",
		"clusterDNS":               dns,
		"clusterDomain":            s.ClusterDomain,
		"containerRuntimeEndpoint": n.CRIEndpoint(),
		"evictionHard":             map[string]string{"imagefs.available": "5%", "nodefs.available": "5%"},
		"evictionMinimumReclaim":   map[string]string{"imagefs.available": "10%", "nodefs.available": "10%"},
		"failSwapOn":               false,
		"healthzBindAddress":       "127.0.0.1",
		"serializeImagePulls":      false,
		"staticPodPath":            l.PodManifests(),
		"tlsCertFile":              l.AgentFile("serving-kubelet.crt"),
		"tlsPrivateKeyFile":        l.AgentFile("serving-kubelet.key"),
	}
	if resolv != "" {
		cfg["resolvConf"] = resolv
	}
	if s.Snapshotter == "stargz" && s.ContainerRuntimeEndpoint == "" {
		cfg["imageServiceEndpoint"] = "unix://" + StargzImageSocket
	}
	if s.ProtectKernelDefaults {
		cfg["protectKernelDefaults"] = true
	}
	if n.CgroupV1 {
		cfg["failCgroupV1"] = false
	}
	if !s.Disabled("servicelb") {
		cfg["allowedUnsafeSysctls"] = []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("componentargs: kubelet config: %w", err)
	}
	return out, nil
}

// CRIEndpoint is the kubelet's (and crictl's) container runtime endpoint:
// --container-runtime-endpoint, or k3s's containerd socket.
func (n *Node) CRIEndpoint() string {
	if e := n.Server.ContainerRuntimeEndpoint; e != "" {
		if strings.Contains(e, "://") {
			return e
		}
		return "unix://" + e
	}
	return "unix://" + ContainerdSocket
}

// KubeProxy returns kube-proxy's flags; nil with --disable-agent or
// --disable-kube-proxy.
func (n *Node) KubeProxy() []string {
	s := n.Server
	if s.DisableAgent || s.DisableKubeProxy {
		return nil
	}
	bind := "127.0.0.1"
	if len(n.NodeIPs) > 0 && n.NodeIPs[0].Is6() {
		bind = "::1"
	}
	m := map[string]string{
		"proxy-mode":                        "iptables",
		"healthz-bind-address":              bind,
		"kubeconfig":                        n.layout().AgentFile("kubeproxy.kubeconfig"),
		"cluster-cidr":                      joinPrefixes(s.ClusterCIDRs),
		"conntrack-max-per-core":            "0",
		"conntrack-tcp-timeout-established": "0s",
		"conntrack-tcp-timeout-close-wait":  "0s",
	}
	if n.NodeName != "" {
		m["hostname-override"] = n.NodeName
	}
	n.verbosity(m)
	return Merge(m, s.KubeProxyArgs)
}

// Containerd returns containerd's arguments; nil with --disable-agent or
// an external --container-runtime-endpoint.
func (n *Node) Containerd() []string {
	s := n.Server
	if s.DisableAgent || s.ContainerRuntimeEndpoint != "" {
		return nil
	}
	l := n.layout()
	return []string{"-c", l.ContainerdConfig(), "-a", ContainerdSocket, "--state", ContainerdState, "--root", l.ContainerdRoot()}
}

// FlannelSubnetFile is where flannel writes the node's subnet for the
// flannel CNI plugin.
const FlannelSubnetFile = "/run/flannel/subnet.env"

// NetworkPolicyDropLog is where the network policy controller writes
// the packets its policies drop, a line each.
const NetworkPolicyDropLog = "/var/log/k3s-network-policy.log"

// NetworkPolicy returns the flags of the `k3s network-policy` component
// (NetworkPolicies enforced for this node's pods), or nil when the agent
// is disabled or disable-network-policy is set. It runs as
// system:k3s-controller, which may list and watch pods, namespaces and
// NetworkPolicies.
func (n *Node) NetworkPolicy() []string {
	s := n.Server
	if s.DisableAgent || s.DisableNetworkPolicy {
		return nil
	}
	return Merge(map[string]string{
		"kubeconfig": n.layout().AgentFile("k3scontroller.kubeconfig"),
		"node-name":  n.NodeName,
		"drop-log":   NetworkPolicyDropLog,
	}, nil)
}

// FlannelNetConf is flannel's net-conf.json: the user's flannel-conf, else
// the one k3s writes under agent/etc/flannel.
func (n *Node) FlannelNetConf() string {
	if n.Server.FlannelConf != "" {
		return n.Server.FlannelConf
	}
	return filepath.Join(n.layout().Agent(), "etc", "flannel", "net-conf.json")
}

// Flannel returns the flags of the `k3s flannel` component (the pod
// network daemon), or nil when the agent is disabled or flannel-backend
// is none. It runs as system:k3s-controller (agent/k3scontroller.kubeconfig)
// on flannel-iface, else the interface with the node IP.
func (n *Node) Flannel() []string {
	s := n.Server
	if s.DisableAgent || s.FlannelBackend == "none" {
		return nil
	}
	m := map[string]string{
		"kubeconfig-file": n.layout().AgentFile("k3scontroller.kubeconfig"),
		"node-name":       n.NodeName,
		"net-config-path": n.FlannelNetConf(),
		"subnet-file":     FlannelSubnetFile,
	}
	switch {
	case s.FlannelIface != "":
		m["iface"] = s.FlannelIface
	case len(n.NodeIPs) > 0:
		m["iface"] = n.NodeIPs[0].String()
	}
	if s.FlannelIPv6Masq {
		m["ipv6-masq"] = "true"
	}
	return Merge(m, nil)
}
