// Package config loads a k3s configuration the way k3s does: defaults, then
// K3S_* environment variables, then /etc/rancher/k3s/config.yaml and its
// config.yaml.d drop-ins, then the command line.
//
// Precedence follows k3s, where the config file is turned into command-line
// flags placed before the user's own: a flag given on the command line
// replaces a scalar from the files and appends to a list; a value from the
// files beats an environment variable, which only fills a flag nobody set.
package config

import "sort"

// Kind is how a flag's values are read.
type Kind int

const (
	// String is a scalar: the last value wins.
	String Kind = iota
	// Bool is a scalar that may be given without a value on the command line.
	Bool
	// Int is a scalar holding a decimal integer.
	Int
	// List collects every value given; the command line appends to the files.
	List
)

// Scope says which commands accept a flag.
type Scope int

const (
	// Both: server and agent (a server also runs an agent).
	Both Scope = iota
	// ServerOnly flags are refused by the agent (and warned about in files).
	ServerOnly
)

// Flag describes one k3s flag: its long name (equal to its config-file key),
// short aliases, environment variables and default.
type Flag struct {
	Name    string
	Aliases []string
	Kind    Kind
	Scope   Scope
	Env     []string
	Default string
}

// flagTable lists the k3s server and agent flags (k3s v1.34 `k3s server --help`
// and `k3s agent --help`). Every key a user may write in config.yaml is here;
// keys not listed produce a warning, as in k3s. What the runtime does with
// each is in supportTable (support.go); a test keeps the two in step.
func flagTable() []Flag {
	s := func(name, def string, env ...string) Flag {
		return Flag{Name: name, Kind: String, Scope: ServerOnly, Env: env, Default: def}
	}
	sb := func(name string, env ...string) Flag {
		return Flag{Name: name, Kind: Bool, Scope: ServerOnly, Env: env}
	}
	sl := func(name string) Flag { return Flag{Name: name, Kind: List, Scope: ServerOnly} }
	a := func(name, def string, env ...string) Flag {
		return Flag{Name: name, Kind: String, Scope: Both, Env: env, Default: def}
	}
	ab := func(name string, env ...string) Flag { return Flag{Name: name, Kind: Bool, Scope: Both, Env: env} }
	al := func(name string) Flag { return Flag{Name: name, Kind: List, Scope: Both} }

	flags := []Flag{
		// Shared by server and agent.
		{Name: "config", Aliases: []string{"c"}, Kind: String, Scope: Both, Env: []string{"K3S_CONFIG_FILE"}, Default: DefaultConfigFile},
		{Name: "debug", Kind: Bool, Scope: Both, Env: []string{"K3S_DEBUG"}},
		{Name: "v", Kind: Int, Scope: Both, Default: "0"},
		a("vmodule", ""),
		{Name: "log", Aliases: []string{"l"}, Kind: String, Scope: Both},
		ab("alsologtostderr"),
		{Name: "data-dir", Aliases: []string{"d"}, Kind: String, Scope: Both, Env: []string{"K3S_DATA_DIR"}, Default: DefaultDataDir},
		{Name: "token", Aliases: []string{"t"}, Kind: String, Scope: Both, Env: []string{"K3S_TOKEN"}},
		a("token-file", "", "K3S_TOKEN_FILE"),
		{Name: "server", Aliases: []string{"s"}, Kind: String, Scope: Both, Env: []string{"K3S_URL"}},
		a("node-name", "", "K3S_NODE_NAME"),
		ab("with-node-id"),
		al("node-label"),
		al("node-taint"),
		a("image-credential-provider-bin-dir", "/var/lib/rancher/credentialprovider/bin"),
		a("image-credential-provider-config", "/var/lib/rancher/credentialprovider/config.yaml"),
		ab("docker"),
		a("container-runtime-endpoint", ""),
		a("default-runtime", ""),
		a("image-service-endpoint", ""),
		ab("disable-default-registry-endpoint"),
		ab("nonroot-devices"),
		a("pause-image", DefaultPauseImage),
		a("snapshotter", "overlayfs"),
		a("private-registry", DefaultRegistriesFile),
		a("system-default-registry", ""),
		al("node-ip"),
		al("node-external-ip"),
		al("node-internal-dns"),
		al("node-external-dns"),
		a("resolv-conf", "", "K3S_RESOLV_CONF"),
		a("flannel-iface", ""),
		a("flannel-conf", ""),
		a("flannel-cni-conf", ""),
		al("kubelet-arg"),
		al("kube-proxy-arg"),
		ab("protect-kernel-defaults"),
		ab("selinux", "K3S_SELINUX"),
		a("lb-server-port", "6444", "K3S_LB_SERVER_PORT"),
		ab("rootless"),
		ab("prefer-bundled-bin"),
		al("airgap-extra-registry"),
		a("vpn-auth", "", "K3S_VPN_AUTH"),
		a("vpn-auth-file", "", "K3S_VPN_AUTH_FILE"),
		ab("disable-apiserver-lb"),
		ab("enable-pprof"),
		a("bind-address", ""),

		// Server only.
		s("advertise-address", ""),
		s("advertise-port", "0"),
		sl("tls-san"),
		sb("tls-san-security"),
		// Lists, as in k3s: dual-stack clusters give one of each family.
		{Name: "cluster-cidr", Kind: List, Scope: ServerOnly, Default: DefaultClusterCIDR},
		{Name: "service-cidr", Kind: List, Scope: ServerOnly, Default: DefaultServiceCIDR},
		s("service-node-port-range", DefaultNodePortRange),
		{Name: "cluster-dns", Kind: List, Scope: ServerOnly, Default: DefaultClusterDNS},
		s("cluster-domain", DefaultClusterDomain),
		s("flannel-backend", "vxlan"),
		sb("flannel-ipv6-masq"),
		sb("flannel-external-ip"),
		s("egress-selector-mode", "agent"),
		s("servicelb-namespace", "kube-system"),
		{Name: "write-kubeconfig", Aliases: []string{"o"}, Kind: String, Scope: ServerOnly, Env: []string{"K3S_KUBECONFIG_OUTPUT"}, Default: DefaultKubeconfig},
		s("write-kubeconfig-mode", "", "K3S_KUBECONFIG_MODE"),
		s("write-kubeconfig-group", "", "K3S_KUBECONFIG_GROUP"),
		s("helm-job-image", ""),
		s("agent-token", "", "K3S_AGENT_TOKEN"),
		s("agent-token-file", "", "K3S_AGENT_TOKEN_FILE"),
		sb("cluster-init", "K3S_CLUSTER_INIT"),
		sb("cluster-reset", "K3S_CLUSTER_RESET"),
		s("cluster-reset-restore-path", ""),
		sl("kube-apiserver-arg"),
		sl("etcd-arg"),
		sl("kube-controller-manager-arg"),
		sl("kube-scheduler-arg"),
		sl("kube-cloud-controller-manager-arg"),
		s("datastore-endpoint", "", "K3S_DATASTORE_ENDPOINT"),
		s("datastore-cafile", "", "K3S_DATASTORE_CAFILE"),
		s("datastore-certfile", "", "K3S_DATASTORE_CERTFILE"),
		s("datastore-keyfile", "", "K3S_DATASTORE_KEYFILE"),
		sb("kine-tls"),
		sb("etcd-expose-metrics"),
		sb("etcd-disable-snapshots"),
		s("etcd-snapshot-name", "etcd-snapshot"),
		s("etcd-snapshot-schedule-cron", "0 */12 * * *"),
		{Name: "etcd-snapshot-retention", Kind: Int, Scope: ServerOnly, Default: "5"},
		s("etcd-snapshot-dir", ""),
		sb("etcd-snapshot-compress"),
		sb("etcd-s3"),
		s("etcd-s3-endpoint", "s3.amazonaws.com"),
		s("etcd-s3-endpoint-ca", ""),
		sb("etcd-s3-skip-ssl-verify"),
		s("etcd-s3-access-key", "", "AWS_ACCESS_KEY_ID"),
		s("etcd-s3-secret-key", "", "AWS_SECRET_ACCESS_KEY"),
		s("etcd-s3-bucket", ""),
		s("etcd-s3-region", "us-east-1"),
		s("etcd-s3-folder", ""),
		sb("etcd-s3-insecure"),
		s("etcd-s3-timeout", "5m0s"),
		s("etcd-s3-proxy", ""),
		s("etcd-s3-config-secret", ""),
		s("default-local-storage-path", ""),
		sl("disable"),
		sb("disable-scheduler"),
		sb("disable-cloud-controller"),
		sb("disable-kube-proxy"),
		sb("disable-network-policy"),
		sb("disable-helm-controller"),
		sb("disable-agent"),
		sb("disable-apiserver"),
		sb("disable-controller-manager"),
		sb("disable-etcd"),
		sb("secrets-encryption"),
		s("secrets-encryption-provider", "aescbc"),
		sb("enable-servicelb"),
		sb("supervisor-metrics"),
		sb("embedded-registry"),
		s("https-listen-port", "6443"),
		s("supervisor-port", "0"),
		s("apiserver-port", "0"),
		s("apiserver-bind-address", ""),
	}
	return flags
}

// flagIndex maps every name and alias to its flag; later duplicates (a
// flag listed for both commands) keep the first, widest entry.
func flagIndex() map[string]Flag {
	idx := make(map[string]Flag)
	for _, f := range flagTable() {
		if _, ok := idx[f.Name]; ok {
			continue
		}
		idx[f.Name] = f
		for _, al := range f.Aliases {
			idx[al] = f
		}
	}
	return idx
}

// Flags returns the known flags sorted by name, for help output and tests.
func Flags() []Flag {
	idx := flagIndex()
	var out []Flag
	for name, f := range idx {
		if name == f.Name {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
