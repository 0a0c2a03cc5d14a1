package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	l, err := Load(Options{Command: "server", Args: []string{"--config", filepath.Join(dir, "none.yaml")}, LookupEnv: env(map[string]string{})})
	if err == nil {
		t.Fatalf("an explicit missing config file should be an error, got %+v", l.Files)
	}
	// With no config at all: point K3S_CONFIG_FILE nowhere is also explicit,
	// so use a drop-in directory with an empty file.
	writeFile(t, filepath.Join(dir, "config.yaml"), "")
	l, err = Load(Options{Command: "server", Args: []string{"--config", filepath.Join(dir, "config.yaml")}, LookupEnv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string][2]any{
		"cluster-cidr":     {s.ClusterCIDRs, []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}},
		"service-cidr":     {s.ServiceCIDRs, []netip.Prefix{netip.MustParsePrefix("10.43.0.0/16")}},
		"cluster-dns":      {s.ClusterDNS, []netip.Addr{netip.MustParseAddr("10.43.0.10")}},
		"cluster-domain":   {s.ClusterDomain, "cluster.local"},
		"https-port":       {s.HTTPSListenPort, 6443},
		"apiserver-port":   {s.APIServerPortOrDefault(), 6444},
		"data-dir":         {s.DataDir, "/var/lib/rancher/k3s"},
		"write-kubeconfig": {s.WriteKubeconfig, "/etc/rancher/k3s/k3s.yaml"},
		"mode":             {s.WriteKubeconfigMode, os.FileMode(0o600)},
		"flannel":          {s.FlannelBackend, "vxlan"},
		"snapshotter":      {s.Snapshotter, "overlayfs"},
		"nodeport":         {s.ServiceNodePortRange, "30000-32767"},
		"egress":           {s.EgressSelectorMode, "agent"},
		"registries":       {s.PrivateRegistry, "/etc/rancher/k3s/registries.yaml"},
	}
	for name, c := range checks {
		if !reflect.DeepEqual(c[0], c[1]) {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
}

func TestMergeOrderAndAppend(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, `
write-kubeconfig-mode: 644
token: from-main
node-label:
  - a=1
disable: traefik
kube-apiserver-arg: ["audit-log-maxage=30"]
`)
	// Lexical order: 10 before 20; .yml counted; .txt ignored.
	writeFile(t, filepath.Join(dir, "config.yaml.d", "20-late.yml"), "token: from-20\nnode-label+: [c=3]\n")
	writeFile(t, filepath.Join(dir, "config.yaml.d", "10-early.yaml"), "token: from-10\nnode-label+:\n  - b=2\ndisable: [servicelb, metrics-server]\n")
	writeFile(t, filepath.Join(dir, "config.yaml.d", "30-ignored.txt"), "token: nope\n")

	l, err := Load(Options{Command: "server", Args: []string{"--config=" + cfg, "--node-label", "d=4", "--disable", "coredns"}, LookupEnv: env(map[string]string{"K3S_TOKEN": "from-env", "K3S_NODE_NAME": "envnode"})})
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if s.Token != "from-20" {
		t.Errorf("token = %q: later drop-in should override, and the file should beat K3S_TOKEN", s.Token)
	}
	if s.NodeName != "envnode" {
		t.Errorf("node-name = %q, want K3S_NODE_NAME's value", s.NodeName)
	}
	if want := []string{"a=1", "b=2", "c=3", "d=4"}; !reflect.DeepEqual(s.NodeLabels, want) {
		t.Errorf("node-label = %v, want %v (files append with key+, the command line appends)", s.NodeLabels, want)
	}
	// 10-early replaced the main file's disable list (no +), CLI appended.
	if want := []string{"servicelb", "metrics-server", "coredns"}; !reflect.DeepEqual(s.Disable, want) {
		t.Errorf("disable = %v, want %v", s.Disable, want)
	}
	if s.WriteKubeconfigMode != 0o644 {
		t.Errorf("mode = %o, want 644", s.WriteKubeconfigMode)
	}
	if want := []string{cfg, filepath.Join(dir, "config.yaml.d", "10-early.yaml"), filepath.Join(dir, "config.yaml.d", "20-late.yml")}; !reflect.DeepEqual(l.Files, want) {
		t.Errorf("files = %v, want %v", l.Files, want)
	}
	if l.Origins["token"] != FromFile || l.Origins["node-name"] != FromEnv || l.Origins["node-label"] != FromFlag || l.Origins["cluster-cidr"] != FromDefault {
		t.Errorf("origins wrong: %v", l.Origins)
	}
}

func TestCLIOverridesScalar(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, "token: file\ncluster-init: true\n")
	l, err := Load(Options{Command: "server", Args: []string{"-c", cfg, "-t", "cli", "--debug", "extra"}, LookupEnv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if s.Token != "cli" || !s.ClusterInit || !s.Debug {
		t.Errorf("token=%q cluster-init=%v debug=%v", s.Token, s.ClusterInit, s.Debug)
	}
	if !reflect.DeepEqual(l.Positional, []string{"extra"}) {
		t.Errorf("positional = %v", l.Positional)
	}
}

func TestEnvConfigFileWinsOverFlag(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	writeFile(t, a, "node-name: a\n")
	writeFile(t, b, "node-name: b\n")
	l, err := Load(Options{Command: "agent", Args: []string{"--config", a}, LookupEnv: env(map[string]string{"K3S_CONFIG_FILE": b})})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Get("node-name"); got != "b" {
		t.Errorf("node-name = %q; K3S_CONFIG_FILE should win over --config, as in k3s", got)
	}
}

func TestUnknownKeysWarn(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, "token: x\nnot-a-flag: 1\ncluster-cidr: 10.52.0.0/16\n")
	l, err := Load(Options{Command: "agent", Args: []string{"--config", cfg}, LookupEnv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Warnings) != 2 {
		t.Fatalf("warnings = %v, want 2", l.Warnings)
	}
	w := l.Warnings[0]
	if w.File != cfg || w.Line != 2 || w.Key != "not-a-flag" || !strings.Contains(w.String(), "unknown key") {
		t.Errorf("warning = %+v", w)
	}
	if l.Warnings[1].Key != "cluster-cidr" || !strings.Contains(l.Warnings[1].Msg, "server only") {
		t.Errorf("warning = %+v", l.Warnings[1])
	}
	if _, err := l.AgentConfig(); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownFlagIsError(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(Options{Command: "agent", Args: []string{"--config", filepath.Join(dir, "x"), "--cluster-cidr", "1.2.3.0/24"}, LookupEnv: env(nil)})
	if !errors.Is(err, ErrUsage) {
		t.Fatalf("err = %v, want ErrUsage", err)
	}
}

func TestBadFiles(t *testing.T) {
	for name, data := range map[string]string{
		"not a mapping": "- a\n- b\n",
		"nested value":  "node-label:\n  a: b\n",
		"bad yaml":      "token: [\n",
	} {
		if _, err := ParseFile("f.yaml", []byte(data)); err == nil || !strings.Contains(err.Error(), "f.yaml") {
			t.Errorf("%s: err = %v, want an error naming the file", name, err)
		}
	}
}

func TestValidation(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "none.yaml"), "")
	cases := []struct {
		args []string
		flag string
		is   error
	}{
		{[]string{"--node-label", "node-role.kubernetes.io/worker=true"}, "node-label", ErrRestrictedLabel},
		{[]string{"--node-label", "foo.k8s.io/x=y"}, "node-label", ErrRestrictedLabel},
		{[]string{"--node-label", "noequals"}, "node-label", nil},
		{[]string{"--node-taint", "key=v:Sometimes"}, "node-taint", nil},
		{[]string{"--cluster-cidr", "10.42.0.1/16"}, "cluster-cidr", nil},
		{[]string{"--service-cidr", "10.42.0.0/24"}, "service-cidr", nil},
		{[]string{"--cluster-dns", "10.99.0.10"}, "cluster-dns", nil},
		{[]string{"--write-kubeconfig-mode", "rw"}, "write-kubeconfig-mode", nil},
		{[]string{"--disable", "traefk"}, "disable", nil},
		{[]string{"--flannel-backend", "udp"}, "flannel-backend", nil},
		{[]string{"--https-listen-port", "x"}, "https-listen-port", nil},
		{[]string{"--snapshotter", "aufs"}, "snapshotter", nil},
	}
	for _, c := range cases {
		l, err := Load(Options{Command: "server", Args: append([]string{"--config", filepath.Join(dir, "none.yaml")}, c.args...), LookupEnv: env(nil)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.ServerConfig()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Flag != c.flag {
			t.Errorf("%v: err = %v, want a FieldError for --%s", c.args, err, c.flag)
			continue
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%v: err = %v, want %v", c.args, err, c.is)
		}
	}
}

func TestAllowedLabels(t *testing.T) {
	for _, l := range []string{
		"foo=bar", "example.com/role=db", "node.kubernetes.io/instance-type=m1",
		"topology.kubernetes.io/zone=a", "x.kubelet.kubernetes.io/y=z", "kubernetes.io/arch=arm64",
		"empty=", "node.kubernetes.io/custom=1",
	} {
		if err := ValidateNodeLabel(l); err != nil {
			t.Errorf("%s: %v", l, err)
		}
	}
	for _, tt := range []string{"CriticalAddonsOnly=true:NoExecute", "node-role.kubernetes.io/control-plane:NoSchedule", "a=b:PreferNoSchedule"} {
		if err := ValidateNodeTaint(tt); err != nil {
			t.Errorf("%s: %v", tt, err)
		}
	}
}

func TestEnvList(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "c.yaml"), "")
	l, err := Load(Options{Command: "server", Args: []string{"--config", filepath.Join(dir, "c.yaml")}, LookupEnv: env(map[string]string{
		"K3S_KUBECONFIG_MODE": "0640", "K3S_URL": "https://10.0.0.1:6443", "K3S_DATA_DIR": "/data", "K3S_SELINUX": "true",
	})})
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if s.WriteKubeconfigMode != 0o640 || s.ServerURL != "https://10.0.0.1:6443" || s.DataDir != "/data" || !s.SELinux {
		t.Errorf("env not applied: %+v", s)
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte("token: x\nnode-label+: [a=b]\n"))
	f.Add([]byte("---\n"))
	f.Add([]byte("a: &x 1\nb: *x\nc: [*x]\n"))
	f.Add([]byte("- 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseFile("fuzz.yaml", data)
		if err != nil {
			return
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Key, "+") && !e.Append {
				t.Fatalf("key %q kept its + suffix", e.Key)
			}
		}
	})
}
