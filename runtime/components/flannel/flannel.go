// Package flannel runs flannel's daemon as the `k3s flannel` component, the
// way k3s runs it inside its agent: the kube subnet manager against the
// node object (lease = spec.podCIDR, backend data in node annotations), the
// vxlan (or host-gw) backend on the node's interface, iptables masquerade
// and forward rules, and the lease written to /run/flannel/subnet.env for
// the CNI plugin (runtime/cni/flannel).
//
// Only the flannel packages this needs are linked: not flannel's main
// package, whose imports include cloud backends.
package flannel

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	cniflannel "github.com/ballast-os/ballast/runtime/cni/flannel"
	"github.com/flannel-io/flannel/pkg/backend"
	_ "github.com/flannel-io/flannel/pkg/backend/hostgw" // registers host-gw
	_ "github.com/flannel-io/flannel/pkg/backend/vxlan"  // registers vxlan
	"github.com/flannel-io/flannel/pkg/ip"
	"github.com/flannel-io/flannel/pkg/ipmatch"
	"github.com/flannel-io/flannel/pkg/subnet/kube"
	"github.com/flannel-io/flannel/pkg/trafficmngr/iptables"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// AnnotationPrefix is the prefix of flannel's node annotations (k3s's).
const AnnotationPrefix = "flannel.alpha.coreos.com"

// Main runs flannel with args (flags only) until SIGTERM or SIGINT and
// returns its exit code: 0 after a signal, 1 on failure, 2 on bad flags.
func Main(args []string) int {
	o, err := ParseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "flannel: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, o); err != nil && ctx.Err() == nil {
		klog.Errorf("flannel: %v", err)
		klog.Flush()
		return 1
	}
	klog.Info("flannel: stopped")
	klog.Flush()
	return 0
}

// RunInProcess is flannel as the k3s process runs it, as k3s does (no
// process of its own): args as Main takes them, klog's lines to log, until
// ctx ends. klog is process-global: the k3s process has no other klog
// output worth keeping apart.
func RunInProcess(ctx context.Context, args []string, log io.Writer) error {
	o, err := ParseFlags(args, log)
	if err != nil {
		return err
	}
	klog.LogToStderr(false)
	klog.SetOutput(log)
	defer klog.Flush()
	if err := Run(ctx, o); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// Run sets up the node's pod network and keeps it in step with the other
// nodes until ctx ends.
func Run(ctx context.Context, o Options) error {
	conf, err := readNetConf(o.NetConfPath)
	if err != nil {
		return err
	}
	if conf.EnableIPv4 {
		if err := checkBridgeNetfilter(bridgeNFCall); err != nil {
			return err
		}
	}
	rc, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", o.Kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", o.Kubeconfig, err)
	}
	if err := waitForNodeAccess(ctx, client); err != nil {
		return err
	}
	cidr, err := waitForPodCIDR(ctx, client, o.NodeName)
	if err != nil {
		return err
	}
	klog.Infof("flannel: node %s has podCIDR %s", o.NodeName, cidr)

	// The kube subnet manager takes the node name from the environment
	// only. In the k3s process the processes it starts after this inherit
	// it: the same node's name, which none of them reads.
	if err := os.Setenv("NODE_NAME", o.NodeName); err != nil {
		return err
	}
	sm, err := kube.NewSubnetManager(ctx, "", o.Kubeconfig, AnnotationPrefix, o.NetConfPath, false)
	if err != nil {
		return fmt.Errorf("kube subnet manager: %w", err)
	}
	config, err := sm.GetNetworkConfig(ctx)
	if err != nil {
		return fmt.Errorf("kube subnet manager: %w", err)
	}
	stack, err := ipmatch.GetIPFamily(config.EnableIPv4, config.EnableIPv6)
	if err != nil {
		return err
	}
	publicIP, publicIPv6 := sm.GetStoredPublicIP(ctx) // k3s flannel-external-ip annotations
	ext, err := ipmatch.LookupExtIface(o.Iface, "", "", stack, ipmatch.PublicIPOpts{PublicIP: publicIP, PublicIPv6: publicIPv6})
	if err != nil {
		return fmt.Errorf("flannel interface %q: %w", o.Iface, err)
	}
	klog.Infof("flannel: using interface %s (%s) with backend %s", ext.Iface.Name, ext.IfaceAddr, config.BackendType)

	var wg sync.WaitGroup
	// Whatever fails below, the goroutines started so far stop with ctx.
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()

	be, err := backend.NewManager(ctx, sm, ext).GetBackend(config.BackendType)
	if err != nil {
		return fmt.Errorf("flannel backend %s: %w", config.BackendType, err)
	}
	bn, err := be.RegisterNetwork(ctx, &wg, config)
	if err != nil {
		return fmt.Errorf("flannel backend %s: register network: %w", config.BackendType, err)
	}

	tm := &iptables.IPTablesManager{}
	if err := tm.Init(ctx); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	if o.IPMasq {
		prev := readPrevLease(o.SubnetFile)
		v6 := config.IPv6Network
		if !o.IPv6Masq {
			v6 = ip.IP6Net{} // as k3s: no IPv6 masquerade unless asked
		}
		if err := tm.SetupAndEnsureMasqRules(ctx, config.Network, prev.subnet, prev.network,
			v6, prev.ipv6Subnet, prev.ipv6Network, bn.Lease(), o.ResyncSeconds, false); err != nil {
			return fmt.Errorf("iptables masquerade rules: %w", err)
		}
	}
	tm.SetupAndEnsureForwardRules(ctx, config.Network, config.IPv6Network, o.ResyncSeconds)

	l := bn.Lease()
	if err := sm.HandleSubnetFile(o.SubnetFile, config, o.IPMasq, l.Subnet, l.IPv6Subnet, bn.MTU()); err != nil {
		return fmt.Errorf("write %s: %w", o.SubnetFile, err)
	}
	klog.Infof("flannel: wrote %s (subnet %s, MTU %d)", o.SubnetFile, l.Subnet, bn.MTU())

	wg.Add(1)
	go func() {
		defer wg.Done()
		bn.Run(ctx) // follows the other nodes' leases until ctx ends
	}()
	if err := sm.CompleteLease(ctx, l, &wg); err != nil {
		return fmt.Errorf("complete lease: %w", err)
	}
	<-ctx.Done()
	return nil
}

// prevLease is what the previous run wrote to subnet.env: masquerade rules
// for another network or subnet are removed before the new ones go in.
type prevLease struct {
	network, subnet         ip.IP4Net
	ipv6Network, ipv6Subnet ip.IP6Net
}

func readPrevLease(path string) prevLease {
	// Empty IPv6 values need a non-nil number: flannel compares them.
	p := prevLease{ipv6Network: emptyIP6Net(), ipv6Subnet: emptyIP6Net()}
	env, err := cniflannel.ReadSubnetEnv(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			klog.Warningf("flannel: previous lease unreadable, old masquerade rules stay: %v", err)
		}
		return p
	}
	ipnet := func(s fmt.Stringer) *net.IPNet {
		_, n, err := net.ParseCIDR(s.String())
		if err != nil {
			return nil
		}
		return n
	}
	if len(env.Networks) == 1 && env.Subnet.IsValid() {
		p.network, p.subnet = ip.FromIPNet(ipnet(env.Networks[0])), ip.FromIPNet(ipnet(env.Subnet))
	}
	if len(env.IPv6Networks) == 1 && env.IPv6Subnet.IsValid() {
		p.ipv6Network, p.ipv6Subnet = ip.FromIP6Net(ipnet(env.IPv6Networks[0])), ip.FromIP6Net(ipnet(env.IPv6Subnet))
	}
	return p
}

func emptyIP6Net() ip.IP6Net {
	return ip.IP6Net{IP: (*ip.IP6)(big.NewInt(0))}
}
