package componentargs

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/runtime/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got\n%s", name, path, got)
	}
}

func node(t *testing.T, args ...string) *Node {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, nil, 0o644)
	l, err := config.Load(config.Options{Command: "server", Args: append([]string{"--config", cfg}, args...), LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	return &Node{Server: s, NodeName: "node1", NodeIPs: []netip.Addr{netip.MustParseAddr("10.0.2.15")}, ResolvConf: "/etc/resolv.conf", CloudController: true}
}

func lines(args []string) string { return strings.Join(args, "\n") + "\n" }

func TestDefaultSingleNodeGolden(t *testing.T) {
	n := node(t)
	golden(t, "kube-apiserver", lines(n.APIServer()))
	golden(t, "kube-controller-manager", lines(n.ControllerManager()))
	golden(t, "kube-scheduler", lines(n.Scheduler()))
	golden(t, "kubelet", lines(n.Kubelet()))
	golden(t, "kube-proxy", lines(n.KubeProxy()))
	golden(t, "containerd", lines(n.Containerd()))
	golden(t, "kine", lines(n.Kine()))
	kc, err := n.KubeletConfig()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kubelet-config", string(kc))
}

func TestOverridesGolden(t *testing.T) {
	n := node(t,
		"--kube-apiserver-arg", "audit-log-maxage=30",
		"--kube-apiserver-arg", "enable-admission-plugins+=PodSecurity",
		"--kube-apiserver-arg", "--profiling=true",
		"--kubelet-arg", "max-pods=250",
		"--kube-proxy-arg", "proxy-mode=nftables",
		"--kube-controller-manager-arg", "node-monitor-period=5s",
		"--kube-scheduler-arg", "v=4",
		"--egress-selector-mode", "disabled",
		"--cluster-init",
		"--node-taint", "CriticalAddonsOnly=true:NoExecute",
	)
	golden(t, "override-kube-apiserver", lines(n.APIServer()))
	golden(t, "override-kubelet", lines(n.Kubelet()))
	golden(t, "override-kube-proxy", lines(n.KubeProxy()))
	golden(t, "override-kube-controller-manager", lines(n.ControllerManager()))
	golden(t, "override-kube-scheduler", lines(n.Scheduler()))
}

func TestDisableAgent(t *testing.T) {
	n := node(t, "--disable-agent")
	if n.Kubelet() != nil || n.KubeProxy() != nil || n.Containerd() != nil {
		t.Error("--disable-agent still starts node components")
	}
	if n.APIServer() == nil {
		t.Error("apiserver missing")
	}
	n = node(t, "--disable-kube-proxy", "--container-runtime-endpoint", "/run/containerd/containerd.sock")
	if n.KubeProxy() != nil || n.Containerd() != nil || n.Kubelet() == nil {
		t.Error("disable-kube-proxy / external runtime not honoured")
	}
	kc, _ := n.KubeletConfig()
	if !strings.Contains(string(kc), "unix:///run/containerd/containerd.sock") || strings.Contains(string(kc), "failCgroupV1") {
		t.Errorf("kubelet config %s", kc)
	}
	n.CgroupV1 = true
	if kc, _ := n.KubeletConfig(); !strings.Contains(string(kc), "failCgroupV1: false") {
		t.Errorf("kubelet config on cgroup v1 %s", kc)
	}
}

func TestAPIServerPortAndBind(t *testing.T) {
	flagOf := func(args []string, name string) string {
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v
			}
		}
		return ""
	}
	for _, tc := range []struct {
		args                 []string
		port, bind, reconcil string
	}{
		// Behind the supervisor listener, as in k3s.
		{nil, "6444", "127.0.0.1", "none"},
		{[]string{"--https-listen-port", "7443"}, "7444", "127.0.0.1", "none"},
		{[]string{"--bind-address", "10.0.2.15"}, "6444", "127.0.0.1", "none"},
		// The apiserver serving https-listen-port itself publishes its endpoints.
		{[]string{"--apiserver-port", "6443"}, "6443", "0.0.0.0", ""},
		{[]string{"--apiserver-port", "6443", "--bind-address", "10.0.2.15"}, "6443", "10.0.2.15", ""},
	} {
		a := node(t, tc.args...).APIServer()
		if got := flagOf(a, "endpoint-reconciler-type"); got != tc.reconcil {
			t.Errorf("%v: endpoint-reconciler-type %q, want %q", tc.args, got, tc.reconcil)
		}
		if got := flagOf(a, "secure-port"); got != tc.port {
			t.Errorf("%v: secure-port %s, want %s", tc.args, got, tc.port)
		}
		if got := flagOf(a, "bind-address"); got != tc.bind {
			t.Errorf("%v: bind-address %s, want %s", tc.args, got, tc.bind)
		}
	}
}

func TestKineOnlyForItsDatastores(t *testing.T) {
	if k := node(t, "--cluster-init").Kine(); k != nil {
		t.Errorf("cluster-init runs kine: %v", k)
	}
	if k := node(t, "--datastore-endpoint", "https://etcd:2379").Kine(); k != nil {
		t.Errorf("external etcd runs kine: %v", k)
	}
	k := node(t, "--datastore-endpoint", "postgres://u:p@db/k3s").Kine()
	if len(k) != 2 || k[1] != "--endpoint=postgres://u:p@db/k3s" {
		t.Errorf("external SQL endpoint not passed to kine: %v", k)
	}
}

func TestMerge(t *testing.T) {
	def := map[string]string{"a": "1", "b": "2", "c": "3"}
	got := Merge(def, []string{"b=x", "b=y", "c+=4", "a-=0", "flag", "--d=5"})
	want := []string{"--a=0", "--a=1", "--b=x", "--b=y", "--c=3", "--c=4", "--d=5", "--flag=true"}
	if !slices.Equal(got, want) {
		t.Errorf("Merge = %v, want %v", got, want)
	}
	if def["a"] != "1" || len(def) != 3 {
		t.Error("Merge modified its defaults")
	}
}

// Without a cloud controller to initialize the node, the kubelet must not
// register with --cloud-provider=external: its uninitialized taint would
// never be removed and no pod would schedule.
func TestKubeletCloudProviderOnlyWithCloudController(t *testing.T) {
	n := node(t)
	if !slices.Contains(n.Kubelet(), "--cloud-provider=external") {
		t.Errorf("with a cloud controller: kubelet args lack --cloud-provider=external: %v", n.Kubelet())
	}
	n.CloudController = false
	for _, a := range n.Kubelet() {
		if strings.HasPrefix(a, "--cloud-provider") {
			t.Errorf("without a cloud controller: kubelet got %s", a)
		}
	}
}
