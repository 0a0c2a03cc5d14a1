package config

import (
	"fmt"
	"github.com/robfig/cron/v3"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// AgentConfig holds the flags a k3s agent reads (a server reads them too).
type AgentConfig struct {
	DataDir         string
	Token           string
	TokenFile       string
	ServerURL       string // --server / K3S_URL: set on joining nodes
	NodeName        string // empty: the hostname
	WithNodeID      bool
	NodeLabels      []string
	NodeTaints      []string
	NodeIPs         []netip.Addr
	NodeExternalIPs []netip.Addr

	ContainerRuntimeEndpoint string // set: no embedded containerd
	PauseImage               string
	Snapshotter              string
	PrivateRegistry          string
	SystemDefaultRegistry    string
	DefaultRuntime           string
	ResolvConf               string
	FlannelIface             string
	FlannelConf              string // flannel's net-conf.json instead of the generated one
	FlannelCNIConf           string // the CNI conflist instead of the generated one
	KubeletArgs              []string
	KubeProxyArgs            []string
	ProtectKernelDefaults    bool
	SELinux                  bool
	Rootless                 bool
	PreferBundledBin         bool
	LBServerPort             int
	Debug                    bool
	V                        int
	VModule                  string
}

// ServerConfig holds the flags of k3s server.
type ServerConfig struct {
	AgentConfig

	ClusterCIDRs         []netip.Prefix
	ServiceCIDRs         []netip.Prefix
	ClusterDNS           []netip.Addr
	ClusterDomain        string
	ServiceNodePortRange string
	HTTPSListenPort      int
	APIServerPort        int // 0: https-listen-port (see APIServerPortOrDefault)
	AdvertiseAddress     string
	AdvertisePort        int
	BindAddress          string
	TLSSANs              []string

	WriteKubeconfig      string
	WriteKubeconfigMode  os.FileMode // 0600 unless set
	WriteKubeconfigGroup string
	AgentToken           string
	AgentTokenFile       string

	ClusterInit       bool
	ClusterReset      bool
	DatastoreEndpoint string
	DatastoreCAFile   string
	DatastoreCertFile string
	DatastoreKeyFile  string

	Disable                   []string // packaged components: coredns, servicelb, traefik, local-storage, metrics-server, runtimes
	ServiceLBNamespace        string   // where ServiceLB's svclb DaemonSets run (kube-system)
	DisableAgent              bool
	DisableScheduler          bool
	DisableCloudController    bool
	DisableKubeProxy          bool
	DisableNetworkPolicy      bool
	DisableHelmController     bool
	HelmJobImage              string // the Helm controller's job image; "" is k3s's klipper-helm from system-default-registry
	DisableAPIServer          bool
	DisableControllerManager  bool
	DisableETCD               bool
	EgressSelectorMode        string
	FlannelBackend            string
	FlannelIPv6Masq           bool
	FlannelExternalIP         bool
	SecretsEncryption         bool
	SecretsEncryptionProvider string // aescbc (default) or secretbox
	DefaultLocalStoragePath   string
	KubeAPIServerArgs         []string
	KubeControllerManagerArgs []string
	KubeSchedulerArgs         []string
	KubeCloudControllerArgs   []string
	EtcdArgs                  []string
	EtcdExposeMetrics         bool

	ClusterResetRestorePath string
	EtcdDisableSnapshots    bool
	EtcdSnapshotName        string // scheduled snapshots' name (etcd-snapshot)
	EtcdSnapshotCron        string
	EtcdSnapshotRetention   int
	EtcdSnapshotDir         string // "": server/db/snapshots
	EtcdSnapshotCompress    bool
	EtcdS3                  bool
}

// Packaged components that --disable accepts.
var Packaged = []string{"coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes"}

// Disabled reports whether a packaged component is disabled.
func (s *ServerConfig) Disabled(name string) bool {
	for _, d := range s.Disable {
		if d == name {
			return true
		}
	}
	return false
}

// APIServerPortOrDefault is the port kube-apiserver listens on: as in
// k3s, https-listen-port + 1 (6444) on 127.0.0.1, behind the supervisor
// listener on https-listen-port, unless apiserver-port is set.
func (s *ServerConfig) APIServerPortOrDefault() int {
	if s.APIServerPort != 0 {
		return s.APIServerPort
	}
	return s.HTTPSListenPort + 1
}

// FieldError is a typed validation or conversion error naming the flag.
type FieldError struct {
	Flag  string
	Value string
	Err   error
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("config: --%s %q: %v", e.Flag, e.Value, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

type converter struct {
	l   *Loaded
	err error
}

func (c *converter) str(name string) string { return c.l.Get(name) }

func (c *converter) list(name string) []string {
	return append([]string(nil), c.l.Values[name]...)
}

// commaList splits every value on commas, as k3s does for --disable and --tls-san.
func (c *converter) commaList(name string) []string {
	var out []string
	for _, v := range c.l.Values[name] {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func (c *converter) fail(name, value string, err error) {
	if c.err == nil {
		c.err = &FieldError{Flag: name, Value: value, Err: err}
	}
}

func (c *converter) boolean(name string) bool {
	v := c.str(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		c.fail(name, v, fmt.Errorf("not a boolean (from %s)", c.l.Origins[name]))
	}
	return b
}

func (c *converter) integer(name string) int {
	v := c.str(name)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		c.fail(name, v, fmt.Errorf("not an integer (from %s)", c.l.Origins[name]))
	}
	return n
}

func (c *converter) addrs(name string) []netip.Addr {
	var out []netip.Addr
	for _, v := range c.commaList(name) {
		a, err := netip.ParseAddr(v)
		if err != nil {
			c.fail(name, v, err)
			continue
		}
		out = append(out, a)
	}
	return out
}

func (c *converter) prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for _, v := range c.commaList(name) {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			c.fail(name, v, err)
			continue
		}
		if p != p.Masked() {
			c.fail(name, v, fmt.Errorf("host bits set; did you mean %s?", p.Masked()))
			continue
		}
		out = append(out, p)
	}
	return out
}

// AgentConfig converts the loaded values into an AgentConfig.
func (l *Loaded) AgentConfig() (*AgentConfig, error) {
	c := &converter{l: l}
	a := c.agent()
	if c.err != nil {
		return nil, c.err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a, nil
}

func (c *converter) agent() *AgentConfig {
	return &AgentConfig{
		DataDir:                  c.str("data-dir"),
		Token:                    c.str("token"),
		TokenFile:                c.str("token-file"),
		ServerURL:                c.str("server"),
		NodeName:                 c.str("node-name"),
		WithNodeID:               c.boolean("with-node-id"),
		NodeLabels:               c.list("node-label"),
		NodeTaints:               c.list("node-taint"),
		NodeIPs:                  c.addrs("node-ip"),
		NodeExternalIPs:          c.addrs("node-external-ip"),
		ContainerRuntimeEndpoint: c.str("container-runtime-endpoint"),
		PauseImage:               c.str("pause-image"),
		Snapshotter:              c.str("snapshotter"),
		PrivateRegistry:          c.str("private-registry"),
		SystemDefaultRegistry:    c.str("system-default-registry"),
		DefaultRuntime:           c.str("default-runtime"),
		ResolvConf:               c.str("resolv-conf"),
		FlannelIface:             c.str("flannel-iface"),
		FlannelConf:              c.str("flannel-conf"),
		FlannelCNIConf:           c.str("flannel-cni-conf"),
		KubeletArgs:              c.list("kubelet-arg"),
		KubeProxyArgs:            c.list("kube-proxy-arg"),
		ProtectKernelDefaults:    c.boolean("protect-kernel-defaults"),
		SELinux:                  c.boolean("selinux"),
		Rootless:                 c.boolean("rootless"),
		PreferBundledBin:         c.boolean("prefer-bundled-bin"),
		LBServerPort:             c.integer("lb-server-port"),
		Debug:                    c.boolean("debug"),
		V:                        c.integer("v"),
		VModule:                  c.str("vmodule"),
	}
}

// ServerConfig converts the loaded values into a ServerConfig.
func (l *Loaded) ServerConfig() (*ServerConfig, error) {
	if l.Command != "server" {
		return nil, fmt.Errorf("config: loaded for %q, not server", l.Command)
	}
	c := &converter{l: l}
	s := &ServerConfig{
		AgentConfig:               *c.agent(),
		ClusterCIDRs:              c.prefixes("cluster-cidr"),
		ServiceCIDRs:              c.prefixes("service-cidr"),
		ClusterDNS:                c.addrs("cluster-dns"),
		ClusterDomain:             c.str("cluster-domain"),
		ServiceNodePortRange:      c.str("service-node-port-range"),
		HTTPSListenPort:           c.integer("https-listen-port"),
		APIServerPort:             c.integer("apiserver-port"),
		AdvertiseAddress:          c.str("advertise-address"),
		AdvertisePort:             c.integer("advertise-port"),
		BindAddress:               c.str("bind-address"),
		TLSSANs:                   c.commaList("tls-san"),
		WriteKubeconfig:           c.str("write-kubeconfig"),
		WriteKubeconfigGroup:      c.str("write-kubeconfig-group"),
		AgentToken:                c.str("agent-token"),
		AgentTokenFile:            c.str("agent-token-file"),
		ServiceLBNamespace:        c.str("servicelb-namespace"),
		ClusterInit:               c.boolean("cluster-init"),
		ClusterReset:              c.boolean("cluster-reset"),
		DatastoreEndpoint:         c.str("datastore-endpoint"),
		DatastoreCAFile:           c.str("datastore-cafile"),
		DatastoreCertFile:         c.str("datastore-certfile"),
		DatastoreKeyFile:          c.str("datastore-keyfile"),
		Disable:                   c.commaList("disable"),
		DisableAgent:              c.boolean("disable-agent"),
		DisableScheduler:          c.boolean("disable-scheduler"),
		DisableCloudController:    c.boolean("disable-cloud-controller"),
		DisableKubeProxy:          c.boolean("disable-kube-proxy"),
		DisableNetworkPolicy:      c.boolean("disable-network-policy"),
		DisableHelmController:     c.boolean("disable-helm-controller"),
		HelmJobImage:              c.str("helm-job-image"),
		DisableAPIServer:          c.boolean("disable-apiserver"),
		DisableControllerManager:  c.boolean("disable-controller-manager"),
		DisableETCD:               c.boolean("disable-etcd"),
		EgressSelectorMode:        c.str("egress-selector-mode"),
		FlannelBackend:            c.str("flannel-backend"),
		FlannelIPv6Masq:           c.boolean("flannel-ipv6-masq"),
		FlannelExternalIP:         c.boolean("flannel-external-ip"),
		SecretsEncryption:         c.boolean("secrets-encryption"),
		SecretsEncryptionProvider: c.str("secrets-encryption-provider"),
		DefaultLocalStoragePath:   c.str("default-local-storage-path"),
		KubeAPIServerArgs:         c.list("kube-apiserver-arg"),
		KubeControllerManagerArgs: c.list("kube-controller-manager-arg"),
		KubeSchedulerArgs:         c.list("kube-scheduler-arg"),
		KubeCloudControllerArgs:   c.list("kube-cloud-controller-manager-arg"),
		EtcdArgs:                  c.list("etcd-arg"),
		EtcdExposeMetrics:         c.boolean("etcd-expose-metrics"),
		ClusterResetRestorePath:   c.str("cluster-reset-restore-path"),
		EtcdDisableSnapshots:      c.boolean("etcd-disable-snapshots"),
		EtcdSnapshotName:          c.str("etcd-snapshot-name"),
		EtcdSnapshotCron:          c.str("etcd-snapshot-schedule-cron"),
		EtcdSnapshotRetention:     c.integer("etcd-snapshot-retention"),
		EtcdSnapshotDir:           c.str("etcd-snapshot-dir"),
		EtcdSnapshotCompress:      c.boolean("etcd-snapshot-compress"),
		EtcdS3:                    c.boolean("etcd-s3"),
	}
	if v := s.EtcdSnapshotCron; v != "" {
		if _, err := cron.ParseStandard(v); err != nil {
			c.fail("etcd-snapshot-schedule-cron", v, fmt.Errorf("not a cron schedule (five fields, e.g. \"0 */12 * * *\"): %w", err))
		}
	}
	if s.ClusterResetRestorePath != "" && !s.ClusterReset {
		c.fail("cluster-reset-restore-path", s.ClusterResetRestorePath, fmt.Errorf("needs cluster-reset: restoring a snapshot resets the cluster to this one member"))
	}
	s.WriteKubeconfigMode = 0o600
	if v := c.str("write-kubeconfig-mode"); v != "" {
		// k3s parses the mode as octal whether or not it has a leading 0.
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o777 {
			c.fail("write-kubeconfig-mode", v, fmt.Errorf("not an octal file mode such as 0644"))
		}
		s.WriteKubeconfigMode = os.FileMode(m)
	}
	if c.err != nil {
		return nil, c.err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Validate checks the agent flags that would make the kubelet or the join
// fail later, so that the node says so before it boots components.
func (a *AgentConfig) Validate() error {
	for _, l := range a.NodeLabels {
		if err := ValidateNodeLabel(l); err != nil {
			return &FieldError{Flag: "node-label", Value: l, Err: err}
		}
	}
	for _, t := range a.NodeTaints {
		if err := ValidateNodeTaint(t); err != nil {
			return &FieldError{Flag: "node-taint", Value: t, Err: err}
		}
	}
	switch a.Snapshotter {
	case "overlayfs", "native", "fuse-overlayfs", "stargz", "zfs", "btrfs":
	default:
		return &FieldError{Flag: "snapshotter", Value: a.Snapshotter, Err: fmt.Errorf("unknown snapshotter")}
	}
	if a.DataDir == "" {
		return &FieldError{Flag: "data-dir", Err: fmt.Errorf("must not be empty")}
	}
	return nil
}

// Validate checks the server flags.
func (s *ServerConfig) Validate() error {
	if err := s.AgentConfig.Validate(); err != nil {
		return err
	}
	if len(s.ClusterCIDRs) == 0 {
		return &FieldError{Flag: "cluster-cidr", Err: fmt.Errorf("must not be empty")}
	}
	if len(s.ServiceCIDRs) == 0 {
		return &FieldError{Flag: "service-cidr", Err: fmt.Errorf("must not be empty")}
	}
	for _, cc := range s.ClusterCIDRs {
		for _, sc := range s.ServiceCIDRs {
			if cc.Overlaps(sc) {
				return &FieldError{Flag: "service-cidr", Value: sc.String(), Err: fmt.Errorf("overlaps cluster-cidr %s", cc)}
			}
		}
	}
	if len(s.ClusterDNS) == 0 {
		return &FieldError{Flag: "cluster-dns", Err: fmt.Errorf("must not be empty")}
	}
	if !s.ServiceCIDRs[0].Contains(s.ClusterDNS[0]) {
		return &FieldError{Flag: "cluster-dns", Value: s.ClusterDNS[0].String(), Err: fmt.Errorf("not inside service-cidr %s", s.ServiceCIDRs[0])}
	}
	if s.HTTPSListenPort <= 0 || s.HTTPSListenPort > 65535 {
		return &FieldError{Flag: "https-listen-port", Value: strconv.Itoa(s.HTTPSListenPort), Err: fmt.Errorf("not a port")}
	}
	lo, hi, ok := strings.Cut(s.ServiceNodePortRange, "-")
	l, err1 := strconv.Atoi(lo)
	h, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || l <= 0 || h > 65535 || l > h {
		return &FieldError{Flag: "service-node-port-range", Value: s.ServiceNodePortRange, Err: fmt.Errorf("want LOW-HIGH, e.g. %s", DefaultNodePortRange)}
	}
	switch s.FlannelBackend {
	case "none", "vxlan", "host-gw", "wireguard-native", "ipsec", "wireguard":
	default:
		return &FieldError{Flag: "flannel-backend", Value: s.FlannelBackend, Err: fmt.Errorf("unknown backend (vxlan, host-gw, wireguard-native or none)")}
	}
	switch s.EgressSelectorMode {
	case "agent", "cluster", "pod", "disabled":
	default:
		return &FieldError{Flag: "egress-selector-mode", Value: s.EgressSelectorMode, Err: fmt.Errorf("want agent, cluster, pod or disabled")}
	}
	for _, d := range s.Disable {
		known := false
		for _, p := range Packaged {
			known = known || p == d
		}
		if !known {
			return &FieldError{Flag: "disable", Value: d, Err: fmt.Errorf("unknown packaged component (known: %s)", strings.Join(Packaged, ", "))}
		}
	}
	return nil
}
