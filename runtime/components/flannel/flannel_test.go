package flannel

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cniflannel "github.com/ballast-os/ballast/runtime/cni/flannel"
	"github.com/ballast-os/ballast/runtime/cniconf"
	"github.com/flannel-io/flannel/pkg/ip"
	"github.com/flannel-io/flannel/pkg/subnet"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	o, err := ParseFlags([]string{"--kubeconfig-file=/k", "--node-name=n1", "--net-config-path=/nc", "--iface=192.168.1.5", "--ipv6-masq", "--v=2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Kubeconfig: "/k", NodeName: "n1", NetConfPath: "/nc", SubnetFile: "/run/flannel/subnet.env", Iface: "192.168.1.5", IPMasq: true, IPv6Masq: true, ResyncSeconds: 60}
	if o != want {
		t.Errorf("got  %+v\nwant %+v", o, want)
	}

	t.Setenv("NODE_NAME", "from-env")
	if o, err := ParseFlags([]string{"--kubeconfig-file=/k", "--net-config-path=/nc", "--ip-masq=false"}, io.Discard); err != nil || o.NodeName != "from-env" || o.IPMasq {
		t.Errorf("NODE_NAME, --ip-masq=false: %+v %v", o, err)
	}

	t.Setenv("NODE_NAME", "")
	_, err = ParseFlags([]string{"--subnet-file=", "--iptables-resync=0"}, io.Discard)
	for _, want := range []string{"--kubeconfig-file is required", "--node-name (or NODE_NAME) is required", "--net-config-path is required", "--subnet-file is required", "--iptables-resync 0: must be at least 1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if _, err := ParseFlags([]string{"--bogus"}, io.Discard); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := ParseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func writeNetConf(t *testing.T, n cniconf.NetConf) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "net-conf.json")
	if err := cniconf.WriteNetConf(p, n); err != nil {
		t.Fatal(err)
	}
	return p
}

var clusterV4 = []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}

// TestReadNetConf parses what cniconf writes with flannel's own parser.
func TestReadNetConf(t *testing.T) {
	c, err := readNetConf(writeNetConf(t, cniconf.NetConf{ClusterCIDRs: clusterV4}))
	if err != nil {
		t.Fatal(err)
	}
	if c.BackendType != "vxlan" || c.Network.String() != "10.42.0.0/16" || !c.EnableIPv4 || c.EnableIPv6 || !c.IPv6Network.Empty() {
		t.Errorf("k3s default net-conf: %+v", c)
	}
	dual := append(clusterV4, netip.MustParsePrefix("fd42::/56"))
	c, err = readNetConf(writeNetConf(t, cniconf.NetConf{ClusterCIDRs: dual, Backend: "host-gw"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.BackendType != "host-gw" || !c.EnableIPv6 || c.IPv6Network.String() != "fd42::/56" {
		t.Errorf("dual-stack host-gw net-conf: %+v", c)
	}

	if _, err := readNetConf(writeNetConf(t, cniconf.NetConf{ClusterCIDRs: clusterV4, Backend: "wireguard-native"})); err == nil ||
		!strings.Contains(err.Error(), `Backend.Type "wireguard" is not built into this runtime`) {
		t.Errorf("wireguard: %v", err)
	}
	dir := t.TempDir()
	for body, want := range map[string]string{
		`{"Network":"10.42.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}`: "EnableNFTables",
		`{"Backend":{"Type":"vxlan"}}`:                                      "EnableIPv4 without a Network",
		`{"EnableIPv6":true,"EnableIPv4":false,"Backend":{"Type":"vxlan"}}`: "EnableIPv6 without an IPv6Network",
		`{"Network":"10.42.0.0"}`:                                           "invalid CIDR address",
	} {
		p := filepath.Join(dir, "net-conf.json")
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := readNetConf(p); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want %q and the path", body, err, want)
		}
	}
	if _, err := readNetConf(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestSubnetFileForPlugin: the file flannel's subnet manager writes
// (HandleSubnetFile -> subnet.WriteSubnetFile) is what the CNI plugin reads.
func TestSubnetFileForPlugin(t *testing.T) {
	dual := append(clusterV4, netip.MustParsePrefix("fd42::/56"))
	c, err := readNetConf(writeNetConf(t, cniconf.NetConf{ClusterCIDRs: dual}))
	if err != nil {
		t.Fatal(err)
	}
	_, sn, _ := net.ParseCIDR("10.42.3.0/24")
	_, sn6, _ := net.ParseCIDR("fd42:0:0:3::/64")
	p := filepath.Join(t.TempDir(), "run", "flannel", "subnet.env")
	if err := subnet.WriteSubnetFile(p, c, true, ip.FromIPNet(sn), ip.FromIP6Net(sn6), 1450); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("subnet.env: %v %v", fi, err)
	}
	if err := cniflannel.SubnetFileReady(p)(context.Background()); err != nil {
		t.Errorf("readiness check: %v", err)
	}
	env, err := cniflannel.ReadSubnetEnv(p)
	if err != nil {
		t.Fatal(err)
	}
	want := cniflannel.SubnetEnv{
		Networks: clusterV4, Subnet: netip.MustParsePrefix("10.42.3.0/24"),
		IPv6Networks: []netip.Prefix{netip.MustParsePrefix("fd42::/56")}, IPv6Subnet: netip.MustParsePrefix("fd42:0:0:3::/64"),
		MTU: 1450, IPMasq: true,
	}
	if !reflect.DeepEqual(*env, want) {
		b, _ := os.ReadFile(p)
		t.Errorf("plugin reads %+v\nwant %+v\nfile:\n%s", *env, want, b)
	}

	// The next run reads it back as the previous lease.
	prev := readPrevLease(p)
	if prev.network.String() != "10.42.0.0/16" || prev.subnet.String() != "10.42.3.0/24" ||
		prev.ipv6Network.String() != "fd42::/56" || prev.ipv6Subnet.String() != "fd42:0:0:3::/64" {
		t.Errorf("previous lease %+v", prev)
	}
	none := readPrevLease(filepath.Join(t.TempDir(), "none"))
	if !none.network.Empty() || !none.subnet.Empty() || !none.ipv6Network.Empty() || none.ipv6Subnet.IP == nil {
		t.Errorf("no previous lease: %+v", none)
	}
}

func TestCheckBridgeNetfilter(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bridge-nf-call-iptables")
	if err := checkBridgeNetfilter(p); err == nil || !strings.Contains(err.Error(), "modprobe br_netfilter") {
		t.Errorf("missing: %v", err)
	}
	os.WriteFile(p, []byte("1\n"), 0o644)
	if err := checkBridgeNetfilter(p); err != nil {
		t.Error(err)
	}
}

func fastPolls(t *testing.T) {
	old := pollInterval
	pollInterval = 10 * time.Millisecond
	t.Cleanup(func() { pollInterval = old })
}

func TestWaitForNodeAccess(t *testing.T) {
	fastPolls(t)
	c := fake.NewClientset()
	var reviews atomic.Int32
	var seen []string
	c.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		n := reviews.Add(1)
		ra := r.Spec.ResourceAttributes
		seen = append(seen, ra.Verb+" "+ra.Resource+"/"+ra.Subresource)
		if n == 1 {
			return true, nil, errors.New("connection refused")
		}
		// RBAC arrives after a few rounds.
		r.Status.Allowed = n > 10
		return true, r, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitForNodeAccess(ctx, c); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"list nodes/", "watch nodes/", "get nodes/", "patch nodes/status"} {
		found := false
		for _, s := range seen {
			found = found || s == want
		}
		if !found {
			t.Errorf("never asked %q (asked %v)", want, seen)
		}
	}

	// Never allowed: the wait ends with its context.
	denied := fake.NewClientset()
	denied.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, a.(k8stesting.CreateAction).GetObject(), nil // Allowed stays false
	})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if err := waitForNodeAccess(ctx2, denied); err == nil {
		t.Error("waitForNodeAccess returned nil without access")
	}
}

func TestWaitForPodCIDR(t *testing.T) {
	fastPolls(t)
	c := fake.NewClientset()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		// The kubelet registers the node, then the node IPAM controller
		// assigns its range.
		time.Sleep(50 * time.Millisecond)
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
		c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		time.Sleep(50 * time.Millisecond)
		n.Spec.PodCIDR = "10.42.3.0/24"
		c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	}()
	cidr, err := waitForPodCIDR(ctx, c, "n1")
	if err != nil || cidr != "10.42.3.0/24" {
		t.Fatalf("waitForPodCIDR = %q, %v", cidr, err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := waitForPodCIDR(ctx2, c, "other"); err == nil || !strings.Contains(err.Error(), "node other's podCIDR") {
		t.Errorf("missing node: %v", err)
	}
}
