package flannel

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ballast-os/ballast/runtime/cniconf"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// TestMain lets the test binary be the plugin: linked as "flannel" into a
// CNI bin dir it answers to argv[0] as the k3s binary does.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "flannel" {
		os.Exit(Main(os.Args))
	}
	os.Exit(m.Run())
}

// buildPlugins builds the upstream plugins pinned in runtime/tools.go (the
// ones the image ships) into a temp dir, with the test binary as flannel.
func buildPlugins(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+string(filepath.Separator),
		"github.com/containernetworking/plugins/plugins/main/bridge",
		"github.com/containernetworking/plugins/plugins/main/loopback",
		"github.com/containernetworking/plugins/plugins/ipam/host-local",
		"github.com/containernetworking/plugins/plugins/meta/portmap",
		"github.com/containernetworking/plugins/plugins/meta/bandwidth",
	)
	cmd.Dir = filepath.Join("..", "..") // the runtime module
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build CNI plugins: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, "flannel")); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestPluginInNetns runs k3s's conflist (flannel -> bridge + host-local,
// portmap, bandwidth) through libcni, as containerd does, against a pod
// network namespace. The "host" is a namespace of its own, so the test's
// cni0 bridge and rules never touch the machine's.
func TestPluginInNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: builds the CNI plugins and needs root")
	}
	if os.Geteuid() != 0 {
		t.Fatal("TestPluginInNetns needs root (network namespaces, bridges); run it as root or skip it with -short")
	}
	bin := buildPlugins(t)
	dir := t.TempDir()
	subnetFile := filepath.Join(dir, "subnet.env")
	dataDir := filepath.Join(dir, "cni-flannel")
	ipamDir := filepath.Join(dir, "ipam")
	if err := os.WriteFile(subnetFile, []byte("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// k3s's conflist, pointed at the test's files.
	var raw map[string]any
	if err := json.Unmarshal(cniconf.Conflist(), &raw); err != nil {
		t.Fatal(err)
	}
	fl := raw["plugins"].([]any)[0].(map[string]any)
	fl["subnetFile"], fl["dataDir"] = subnetFile, dataDir
	fl["ipam"] = map[string]any{"dataDir": ipamDir}
	b, _ := json.Marshal(raw)
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}

	hostNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hostNS.Close(); testutils.UnmountNS(hostNS) })
	podNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { podNS.Close(); testutils.UnmountNS(podNS) })

	cni := libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(dir, "cache"), nil)
	rt := &libcni.RuntimeConf{ContainerID: "ballast-test-1", NetNS: podNS.Path(), IfName: "eth0"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Plugins run as children of a thread inside hostNS, so they see it
	// as the host's namespace.
	inHost := func(f func() error) error { return hostNS.Do(func(ns.NetNS) error { return f() }) }

	// loopback, as containerd runs it before the pod network.
	lo, err := libcni.ConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"cni-loopback","type":"loopback"}`))
	if err != nil {
		t.Fatal(err)
	}
	loRT := &libcni.RuntimeConf{ContainerID: rt.ContainerID, NetNS: rt.NetNS, IfName: "lo"}
	if err := inHost(func() error { _, err := cni.AddNetwork(ctx, lo, loRT); return err }); err != nil {
		t.Fatalf("loopback ADD: %v", err)
	}

	var gotIP netip.Addr
	if err := inHost(func() error {
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(res)
		var r struct {
			CNIVersion string
			IPs        []struct{ Address, Gateway string }
		}
		json.Unmarshal(b, &r)
		if r.CNIVersion != "1.0.0" || len(r.IPs) != 1 || r.IPs[0].Gateway != "10.42.7.1" {
			t.Errorf("ADD result %s", b)
		} else {
			gotIP = netip.MustParsePrefix(r.IPs[0].Address).Addr()
		}
		return nil
	}); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	subnet := netip.MustParsePrefix("10.42.7.0/24")
	if !subnet.Contains(gotIP) {
		t.Fatalf("pod address %v not in %v", gotIP, subnet)
	}

	// Inside the pod: eth0 has the address and flannel's MTU, lo is up,
	// the default route and the cluster route go through the bridge.
	if err := podNS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if mtu := link.Attrs().MTU; mtu != 1450 {
			t.Errorf("eth0 MTU %d, want 1450", mtu)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].IP.String() != gotIP.String() || addrs[0].Mask.String() != net.CIDRMask(24, 32).String() {
			t.Errorf("eth0 addresses %v, want %v/24", addrs, gotIP)
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var def, cluster bool
		for _, r := range routes {
			gw := r.Gw.String()
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && gw == "10.42.7.1" {
				def = true
			}
			if r.Dst != nil && r.Dst.String() == "10.42.0.0/16" && gw == "10.42.7.1" {
				cluster = true
			}
		}
		if !def || !cluster {
			t.Errorf("pod routes %v: default via 10.42.7.1 %v, 10.42.0.0/16 via 10.42.7.1 %v", routes, def, cluster)
		}
		l, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Error("lo is down in the pod")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// On the host: the cni0 bridge holds the gateway address, with
	// flannel's MTU.
	if err := hostNS.Do(func(ns.NetNS) error {
		br, err := netlink.LinkByName("cni0")
		if err != nil {
			return err
		}
		addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.42.7.1/24" {
			t.Errorf("cni0 addresses %v, want 10.42.7.1/24", addrs)
		}
		return nil
	}); err != nil {
		t.Fatalf("host side: %v", err)
	}

	stored := filepath.Join(dataDir, rt.ContainerID)
	if b, err := os.ReadFile(stored); err != nil {
		t.Errorf("delegate configuration not stored: %v", err)
	} else if fi, _ := os.Stat(stored); fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want 0600", stored, fi.Mode().Perm())
	} else if n, _ := delegateType(b); n != "bridge" {
		t.Errorf("stored delegate type %q", n)
	}

	lease := filepath.Join(ipamDir, "cbr0", gotIP.String())
	if _, err := os.Stat(lease); err != nil {
		t.Errorf("host-local lease: %v", err)
	}

	if err := inHost(func() error { return cni.CheckNetworkList(ctx, list, rt) }); err != nil {
		t.Errorf("CHECK: %v", err)
	}

	// A lease change (new subnet.env) must not stop DEL from releasing
	// what ADD took: DEL uses the stored configuration.
	os.WriteFile(subnetFile, []byte("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644)
	if err := inHost(func() error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := podNS.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Error("eth0 still in the pod after DEL")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stored); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stored configuration after DEL: %v", err)
	}
	if _, err := os.Stat(lease); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("host-local still holds %v after DEL: %v", gotIP, err)
	}
	// A second DEL (the runtime retries) succeeds with nothing left.
	if err := inHost(func() error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}
