package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Level is what the runtime does with a value of a k3s key.
type Level int

const (
	// Acted: code in this runtime reads the value and does what k3s does with it.
	Acted Level = iota
	// Ignored: nothing reads the value, and the node works without it;
	// `k3s server`/`agent` and `ballast validate` warn.
	Ignored
	// Refused: nothing reads the value (or what would is not built), and a
	// node started anyway would break what the key asks for, or fail
	// later; `k3s server`/`agent` refuse to start and `ballast validate`
	// reports an error.
	Refused
)

func (l Level) String() string {
	return [...]string{"acted on", "ignored", "refused"}[l]
}

// Support is what the runtime does with one key of config.yaml.
type Support struct {
	Key   string
	Level Level
	// Msg says, for Ignored and Refused, what is missing, what the node
	// does instead and what the user can do. Empty for Acted.
	Msg string
	// Values classify particular values, before Level: snapshotter is
	// acted on for overlayfs and refused for zfs. Value matches
	// exactly, or as a prefix when it ends in "*".
	Values []ValueSupport
	// FileOnly: Level and Msg are about the key written in a config file
	// (as the cloud-config's k3s: block is), which is never followed; on
	// the command line or in the environment the key is acted on.
	FileOnly bool
}

// ValueSupport classifies one value of a key (see Support.Values).
type ValueSupport struct {
	Value string
	Level Level
	Msg   string
}

// Classify says what the runtime does with one value of key s (one item of
// a list). A boolean counts as set when true: false is k3s's default for
// every boolean here, so it is acted on unless Values name "false". An
// empty string is unset, and acted on.
func (s Support) Classify(kind Kind, value string) (Level, string) {
	if kind == Bool {
		b, err := strconv.ParseBool(value)
		if err != nil {
			return Acted, "" // not a boolean: the conversion reports it
		}
		value = strconv.FormatBool(b)
	}
	for _, v := range s.Values {
		if v.Value == value || strings.HasSuffix(v.Value, "*") && strings.HasPrefix(value, strings.TrimSuffix(v.Value, "*")) {
			return v.Level, v.Msg
		}
	}
	if value == "" || kind == Bool && value == "false" {
		return Acted, ""
	}
	return s.Level, s.Msg
}

// Supports returns the classification of every key, in the flag table's
// order. A test checks that it names each flag once.
func Supports() []Support { return supportTable() }

// SupportOf returns the classification of a key (a long flag name).
func SupportOf(key string) (Support, bool) {
	for _, s := range supportTable() {
		if s.Key == key {
			return s, true
		}
	}
	return Support{}, false
}

// Messages shared by several keys.
const (
	msgEtcdS3      = "used only by etcd snapshots to S3 (etcd-s3), which ballast's runtime does not build; snapshots stay in etcd-snapshot-dir (<data-dir>/server/db/snapshots): remove the key, and copy snapshots off the node yourself"
	msgSplitRoles  = "is not built into ballast's runtime: a server always runs etcd or its datastore, kube-apiserver, kube-controller-manager and kube-scheduler, so a split-role cluster would get every component on this node; remove the key"
	msgCredentials = "the kubelet is given no image credential provider from this key; remove it and pass the kubelet's own flags instead: kubelet-arg: [image-credential-provider-config=FILE, image-credential-provider-bin-dir=DIR]"
	msgVPN         = "ballast's runtime has no VPN (Tailscale) integration, so the node would not join the VPN and nodes could not reach each other through it; remove the key, bring the VPN up outside k3s, and set node-ip and flannel-iface to its address and interface"
	msgUseOverlay  = "use overlayfs (the default), or native where overlay mounts are not possible"
)

// supportTable classifies every key of flagTable by what this runtime's
// code does with it, found by reading the code: a key is Acted only when
// something reads its value and acts on it (the comment says where).
func supportTable() []Support {
	acted := func(key string) Support { return Support{Key: key} }
	ignored := func(key, msg string) Support { return Support{Key: key, Level: Ignored, Msg: msg} }
	refused := func(key, msg string) Support { return Support{Key: key, Level: Refused, Msg: msg} }
	return []Support{
		// Shared by server and agent.
		{Key: "config", Level: Ignored, FileOnly: true, // Load: --config / K3S_CONFIG_FILE
			Msg: "a config file cannot name another: k3s reads only the file given by --config or K3S_CONFIG_FILE and its config.yaml.d drop-ins, and ballast's init always writes /etc/rancher/k3s/config.yaml from the k3s: block; put the settings in the k3s: block, or in a /etc/rancher/k3s/config.yaml.d/*.yaml drop-in written with write_files"},
		ignored("debug", "ballast's runtime has no debug level of its own; raise the components' verbosity with v: 2 (kube-apiserver, kubelet and the others get --v), and read /var/log/k3s.log and <data-dir>/server/logs or agent/logs"),
		acted("v"),       // componentargs verbosity: every component's --v
		acted("vmodule"), // componentargs verbosity: --vmodule
		ignored("log", "k3s's output is not sent to a file of your choice: the init already keeps it in /var/log/k3s.log (rotated), and each component's in <data-dir>/server/logs or agent/logs; remove the key"),
		ignored("alsologtostderr", "k3s's output already goes to stderr, which the init keeps in /var/log/k3s.log; remove the key"),
		acted("data-dir"),     // datadir.Layout everywhere
		acted("token"),        // token.EnsureServer, agent join
		acted("token-file"),   // valueOrFile
		acted("server"),       // agent join, joining servers' etcd
		acted("node-name"),    // nodeIdentity
		acted("with-node-id"), // nodeIdentity
		acted("node-label"),   // kubelet --node-labels
		acted("node-taint"),   // kubelet --register-with-taints
		ignored("image-credential-provider-bin-dir", msgCredentials),
		ignored("image-credential-provider-config", msgCredentials),
		refused("docker", "cri-dockerd is not built into ballast's runtime, so pods cannot run under Docker; remove the key to use the embedded containerd (the default), or set container-runtime-endpoint to a CRI socket you run yourself"),
		acted("container-runtime-endpoint"), // kubelet containerRuntimeEndpoint, no embedded containerd
		acted("default-runtime"),            // containerd default_runtime_name
		ignored("image-service-endpoint", "the kubelet pulls through the container runtime's own image service; to use another, pass kubelet-arg: image-service-endpoint=unix:///PATH.sock"),
		refused("disable-default-registry-endpoint", "ballast's runtime keeps the registry itself as the last fallback after the registries.yaml mirrors (hosts.toml server =), so images would still be pulled from the upstream registry; remove the key, and block the upstream registry in your network if pulls must not reach it"),
		refused("nonroot-devices", "ballast's containerd config sets device_ownership_from_security_context = false, so devices in non-root containers would stay owned by root; remove the key and set it to true in your own containerd template (<data-dir>/agent/etc/containerd/config-v3.toml.tmpl, written with write_files)"),
		acted("pause-image"), // containerd pinned sandbox image
		{Key: "snapshotter", Level: Refused, // containerd and image-import --snapshotter
			Msg: "not a snapshotter of ballast's containerd; " + msgUseOverlay,
			Values: []ValueSupport{
				{Value: "overlayfs"},
				{Value: "native"},
				{Value: "stargz"}, // linked into containerd; the kubelet pulls through its image service
				{Value: "fuse-overlayfs", Level: Refused, Msg: "the fuse-overlayfs snapshotter is not linked into ballast's containerd, whose CRI plugin would then fail to start; " + msgUseOverlay},
				{Value: "btrfs", Level: Refused, Msg: "containerd's btrfs snapshotter needs cgo, and ballast's runtime is built without it; " + msgUseOverlay},
				{Value: "zfs", Level: Refused, Msg: "containerd's zfs snapshotter needs the ZFS kernel module, the zfs tools and the containerd root on a ZFS dataset, which ballast images do not have; " + msgUseOverlay},
			}},
		acted("private-registry"),        // registries.yaml -> containerd hosts.toml
		acted("system-default-registry"), // packaged manifests' images
		acted("node-ip"),                 // kubelet --node-ip, certificates, flannel
		acted("node-external-ip"),        // k3s.io/external-ip annotation -> cloud controller
		ignored("node-internal-dns", "ballast's cloud controller sets a node's IP addresses and hostname only, so the node gets no InternalDNS address; remove the key"),
		ignored("node-external-dns", "ballast's cloud controller sets a node's IP addresses and hostname only, so the node gets no ExternalDNS address; remove the key"),
		acted("resolv-conf"),             // kubelet resolvConf
		acted("flannel-iface"),           // flannel --iface
		acted("flannel-conf"),            // flannel net-conf.json
		acted("flannel-cni-conf"),        // CNI conflist override
		acted("kubelet-arg"),             // merged into the kubelet's flags
		acted("kube-proxy-arg"),          // merged into kube-proxy's flags
		acted("protect-kernel-defaults"), // kubelet protectKernelDefaults
		// Read (containerd's enable_selinux), but no image carries a policy yet.
		refused("selinux", "ballast images carry no SELinux policy yet (the selinux overlay), so containerd's enable_selinux would confine nothing and pods would run unconfined; remove the key"),
		acted("lb-server-port"), // the agent's load balancer
		// Read (the kubelet's KubeletInUserNamespace gate), but k3s still runs as root.
		refused("rootless", "rootlesskit and slirp4netns are not in ballast's runtime, so k3s would run as root all the same; remove the key (the appliance runs k3s as root)"),
		refused("prefer-bundled-bin", "ballast images carry no bundled iptables, ipset and conntrack yet (the iptables overlay), so the image's own would be used all the same; remove the key"),
		ignored("airgap-extra-registry", "used by the embedded registry mirror, which ballast's runtime does not build; images imported from agent/images keep the names they were saved with: remove the key"),
		refused("vpn-auth", msgVPN),
		refused("vpn-auth-file", msgVPN),
		ignored("disable-apiserver-lb", "the agent always reaches the servers through its load balancer on 127.0.0.1:lb-server-port, which follows the server list; remove the key"),
		ignored("enable-pprof", "the supervisor serves no /debug/pprof; remove the key"),
		acted("bind-address"), // supervisor listener, apiserver

		// Server only.
		acted("advertise-address"), // apiserver --advertise-address, the supervisor's endpoints
		refused("advertise-port", "the kubernetes Service's endpoints always carry https-listen-port, so pods would call the API on that port, not this one; remove the key, or make https-listen-port the port nodes and pods reach"),
		acted("tls-san"), // serving certificate SANs
		ignored("tls-san-security", "the serving certificate never takes names from client requests (k3s's tls-san-security: true); it holds the node's names and addresses and tls-san only, so the key changes nothing: list every name clients use in tls-san"),
		acted("cluster-cidr"),            // controller-manager, kube-proxy, flannel
		acted("service-cidr"),            // apiserver, controller-manager, certificates
		acted("service-node-port-range"), // apiserver
		acted("cluster-dns"),             // kubelet clusterDNS, CoreDNS
		acted("cluster-domain"),          // kubelet, CoreDNS, certificates
		{Key: "flannel-backend", Level: Refused, // net-conf.json Backend
			Msg: "not a flannel backend of ballast's runtime: use vxlan (the default), host-gw, or none with a CNI of your own",
			Values: []ValueSupport{
				{Value: "vxlan"},
				{Value: "host-gw"},
				{Value: "none"},
				{Value: "wireguard-native", Level: Refused, Msg: "flannel's WireGuard backend is not linked into ballast's runtime, and flannel would fail to start; use vxlan (the default) or host-gw, and encrypt between nodes outside k3s"},
				{Value: "ipsec", Level: Refused, Msg: "k3s removed the ipsec backend, and ballast's runtime links vxlan and host-gw only; use vxlan (the default) or host-gw"},
				{Value: "wireguard", Level: Refused, Msg: "k3s removed the wireguard backend (wireguard-native replaced it), and ballast's runtime links vxlan and host-gw only; use vxlan (the default) or host-gw"},
			}},
		acted("flannel-ipv6-masq"),     // flannel --ipv6-masq
		acted("flannel-external-ip"),   // apiserver address types, packaged manifests
		acted("egress-selector-mode"),  // egress selector config, apiserver flags
		acted("servicelb-namespace"),   // where ServiceLB's DaemonSets run
		acted("write-kubeconfig"),      // admin kubeconfig path
		acted("write-kubeconfig-mode"), // admin kubeconfig mode
		ignored("write-kubeconfig-group", "the admin kubeconfig keeps group root (its mode from write-kubeconfig-mode); remove the key, and give users a kubeconfig of their own"),
		acted("helm-job-image"),              // the Helm controller's job image
		acted("agent-token"),                 // token.EnsureServer
		acted("agent-token-file"),            // valueOrFile
		acted("cluster-init"),                // embedded etcd
		acted("cluster-reset"),               // etcd reset
		acted("cluster-reset-restore-path"),  // etcd restore
		acted("kube-apiserver-arg"),          // merged into the apiserver's flags
		acted("etcd-arg"),                    // etcd's config
		acted("kube-controller-manager-arg"), // merged into its flags
		acted("kube-scheduler-arg"),          // merged into its flags
		ignored("kube-cloud-controller-manager-arg", "ballast's cloud controller runs inside the k3s process and takes no flags; remove the key (disable-cloud-controller turns it off)"),
		{Key: "datastore-endpoint", Level: Refused, // kine --endpoint, or the apiserver's --etcd-servers
			Msg: "kine in ballast's runtime links only its sqlite driver; use sqlite://PATH or an etcd URL (https://HOST:2379), or leave the key out for the default sqlite datastore (cluster-init: true for embedded etcd)",
			Values: []ValueSupport{
				{Value: "sqlite://*"},
				{Value: "http://*"},
				{Value: "https://*"},
			}},
		acted("datastore-cafile"),   // apiserver --etcd-cafile
		acted("datastore-certfile"), // apiserver --etcd-certfile
		acted("datastore-keyfile"),  // apiserver --etcd-keyfile
		ignored("kine-tls", "kine listens only on a unix socket in the data dir that the apiserver alone uses, so there is no listener to put TLS on; remove the key"),
		acted("etcd-expose-metrics"),         // etcd's metrics listener
		acted("etcd-disable-snapshots"),      // no scheduled snapshots
		acted("etcd-snapshot-name"),          // scheduled snapshots' name
		acted("etcd-snapshot-schedule-cron"), // snapshot schedule
		acted("etcd-snapshot-retention"),     // snapshot pruning
		acted("etcd-snapshot-dir"),           // snapshot directory
		acted("etcd-snapshot-compress"),      // .zip snapshots
		refused("etcd-s3", "etcd snapshots to S3 are not built into ballast's runtime; remove the key: snapshots stay in etcd-snapshot-dir (<data-dir>/server/db/snapshots), copy them off the node yourself"),
		ignored("etcd-s3-endpoint", msgEtcdS3),
		ignored("etcd-s3-endpoint-ca", msgEtcdS3),
		ignored("etcd-s3-skip-ssl-verify", msgEtcdS3),
		ignored("etcd-s3-access-key", msgEtcdS3),
		ignored("etcd-s3-secret-key", msgEtcdS3),
		ignored("etcd-s3-bucket", msgEtcdS3),
		ignored("etcd-s3-region", msgEtcdS3),
		ignored("etcd-s3-folder", msgEtcdS3),
		ignored("etcd-s3-insecure", msgEtcdS3),
		ignored("etcd-s3-timeout", msgEtcdS3),
		ignored("etcd-s3-proxy", msgEtcdS3),
		ignored("etcd-s3-config-secret", msgEtcdS3),
		acted("default-local-storage-path"), // local-path-provisioner's path
		acted("disable"),                    // packaged manifests, the kubelet's sysctls
		refused("disable-scheduler", "leaving kube-scheduler out "+msgSplitRoles+"; a scheduler of your own can run beside it under its own schedulerName"),
		acted("disable-cloud-controller"), // no cloud controller, no --cloud-provider=external
		acted("disable-kube-proxy"),       // no kube-proxy
		acted("disable-network-policy"),   // no network-policy component on any node
		acted("disable-helm-controller"),  // no Helm controller
		acted("disable-agent"),            // control plane only
		refused("disable-apiserver", "a server without kube-apiserver "+msgSplitRoles),
		refused("disable-controller-manager", "a server without kube-controller-manager "+msgSplitRoles),
		refused("disable-etcd", "a server without etcd (control plane only) "+msgSplitRoles),
		// Would point the apiserver at server/cred/encryption-config.json, which nothing writes.
		acted("secrets-encryption"),          // server/cred/encryption-config.json, kube-apiserver
		acted("secrets-encryption-provider"), // aescbc or secretbox
		ignored("enable-servicelb", "an RKE2 flag that k3s hides: ServiceLB runs on every k3s server unless disable: servicelb; remove the key"),
		ignored("supervisor-metrics", "the supervisor serves no /metrics; remove the key"),
		ignored("embedded-registry", "the embedded registry mirror (Spegel) is not built into ballast's runtime, so nodes pull from the registries and registries.yaml mirrors, never from each other; remove the key"),
		acted("https-listen-port"), // supervisor listener
		refused("supervisor-port", "the supervisor (the join API) always listens on https-listen-port, so agents sent to this port could not join; remove the key, and join at https://SERVER:<https-listen-port>"),
		acted("apiserver-port"), // apiserver --secure-port
		ignored("apiserver-bind-address", "kube-apiserver binds 127.0.0.1 behind the supervisor, which serves the API on bind-address:https-listen-port (or binds bind-address itself when apiserver-port equals https-listen-port); remove the key, and reach the API through https-listen-port"),
	}
}

// checkSupport classifies every value set (defaults are not) by its key's
// Support: ignored ones join Warnings, refused ones Refused, each message
// once per key. A value from an environment variable that is not k3s's own
// (AWS_ACCESS_KEY_ID for etcd-s3-access-key) is left alone: other
// programs on the node set those.
func (l *Loaded) checkSupport() {
	idx := flagIndex()
	for _, s := range supportTable() {
		if l.Origins[s.Key] == FromDefault || s.FileOnly {
			continue // FileOnly keys in files: readConfigFiles warned
		}
		srcs := l.sources[s.Key]
		said := map[string]bool{}
		for i, v := range l.Values[s.Key] {
			if i >= len(srcs) {
				break
			}
			src := srcs[i]
			if src.Env != "" && !strings.HasPrefix(src.Env, "K3S_") {
				continue
			}
			level, msg := s.Classify(idx[s.Key].Kind, v)
			if level == Acted || said[msg] {
				continue
			}
			said[msg] = true
			w := Warning{File: src.File, Line: src.Line, Key: s.Key, Msg: msg}
			if level == Refused {
				l.Refused = append(l.Refused, w)
			} else {
				l.Warnings = append(l.Warnings, w)
			}
		}
	}
}

// ErrUnsupported marks a refusal to start with a key this runtime refuses.
var ErrUnsupported = errors.New("not supported by ballast's runtime")

// UnsupportedError lists the keys set that this runtime refuses, with
// where each was set and what to do instead.
type UnsupportedError struct {
	Keys []Warning
}

func (e *UnsupportedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config: not starting: %d setting(s) %s (a node started without them would not be what they ask for):", len(e.Keys), ErrUnsupported)
	for _, w := range e.Keys {
		b.WriteString("\n  " + w.String())
	}
	return b.String()
}

func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// Unsupported returns an *UnsupportedError when a key this runtime refuses
// is set, else nil. k3s server and agent call it before they change
// anything on the node.
func (l *Loaded) Unsupported() error {
	if len(l.Refused) == 0 {
		return nil
	}
	return &UnsupportedError{Keys: append([]Warning(nil), l.Refused...)}
}
