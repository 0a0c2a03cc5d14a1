package flannel

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/klog/v2"
)

// Options are the flags of `k3s flannel`. The names follow flanneld's
// where flanneld has one.
type Options struct {
	// Kubeconfig is the identity flannel uses (--kubeconfig-file). It
	// must be allowed to list and watch all nodes and patch nodes/status:
	// k3s uses agent/k3scontroller.kubeconfig (system:k3s-controller),
	// since the Node authorizer lets a kubelet watch only its own node.
	Kubeconfig string
	// NodeName is this node's name (--node-name, else $NODE_NAME).
	NodeName string
	// NetConfPath is flannel's net-conf.json (--net-config-path).
	NetConfPath string
	// SubnetFile is where the lease is written for the CNI plugin
	// (--subnet-file, /run/flannel/subnet.env).
	SubnetFile string
	// Iface is the interface for node-to-node traffic, by name or by one
	// of its addresses (--iface, k3s flannel-iface or the node IP); empty
	// means the interface of the default route.
	Iface string
	// IPMasq masquerades traffic from pods leaving the cluster network
	// (--ip-masq, true as in k3s).
	IPMasq bool
	// IPv6Masq does the same for IPv6 (--ipv6-masq, k3s flannel-ipv6-masq).
	IPv6Masq bool
	// ResyncSeconds is how often the iptables rules are checked and
	// restored (--iptables-resync, 60 s as k3s passes).
	ResyncSeconds int
}

// DefaultSubnetFile is where flannel writes its lease.
const DefaultSubnetFile = "/run/flannel/subnet.env"

// ParseFlags parses args (flags only) into Options, and klog's -v and
// -vmodule. It returns flag.ErrHelp for -h.
func ParseFlags(args []string, output io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("flannel", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&o.Kubeconfig, "kubeconfig-file", "", "kubeconfig of an identity that may list/watch nodes and patch nodes/status (required)")
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&o.NetConfPath, "net-config-path", "", "flannel net-conf.json (required)")
	fs.StringVar(&o.SubnetFile, "subnet-file", DefaultSubnetFile, "where the node's lease is written for the CNI plugin")
	fs.StringVar(&o.Iface, "iface", "", "interface (name or IP address) for traffic between nodes; default: the default route's")
	fs.BoolVar(&o.IPMasq, "ip-masq", true, "masquerade pod traffic leaving the cluster network")
	fs.BoolVar(&o.IPv6Masq, "ipv6-masq", false, "masquerade IPv6 pod traffic leaving the cluster network")
	fs.IntVar(&o.ResyncSeconds, "iptables-resync", 60, "seconds between checks of flannel's iptables rules")
	kfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(kfs)
	for _, name := range []string{"v", "vmodule"} {
		f := kfs.Lookup(name)
		fs.Var(f.Value, f.Name, f.Usage)
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var missing []error
	for _, r := range []struct{ flag, value string }{
		{"--kubeconfig-file", o.Kubeconfig},
		{"--node-name (or NODE_NAME)", o.NodeName},
		{"--net-config-path", o.NetConfPath},
		{"--subnet-file", o.SubnetFile},
	} {
		if r.value == "" {
			missing = append(missing, fmt.Errorf("%s is required", r.flag))
		}
	}
	if o.ResyncSeconds < 1 {
		missing = append(missing, fmt.Errorf("--iptables-resync %d: must be at least 1", o.ResyncSeconds))
	}
	return o, errors.Join(missing...)
}
