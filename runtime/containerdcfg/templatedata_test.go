package containerdcfg

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// k3sNode is a node as the k3s-template tests render it: registries.yaml,
// an NVIDIA runtime, a node name and address.
func k3sNode(t *testing.T) *Config {
	t.Helper()
	c := base()
	r, err := ParseRegistries("registries.yaml", []byte(registries))
	if err != nil {
		t.Fatal(err)
	}
	c.Registry, c.PrivateRegistry = r, "/etc/rancher/k3s/registries.yaml"
	c.Runtimes = []Runtime{{Name: "nvidia", BinaryName: "/usr/bin/nvidia-container-runtime"}}
	c.NodeName = "node-1"
	c.NodeIPs = []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00::10")}
	return c
}

// k3sTemplates are user templates written for k3s, in testdata as
// k3s-<case>.<the name k3s reads>: the "Base template" example from k3s's
// documentation (docs/advanced.md, "Configuring containerd"), a full
// version 2 template and a full version 3 one in the shape of k3s's own.
// components/containerd loads what they render with containerd's own
// config loader.
func k3sTemplates(t *testing.T) []string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join("testdata", "k3s-*.tmpl"))
	if len(names) < 3 {
		t.Fatalf("k3s templates in testdata: %v", names)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	return names
}

// renderTestdataTemplate renders testdata/<name> as the user template
// it is named for.
func renderTestdataTemplate(t *testing.T, c *Config, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	_, k3sName, _ := strings.Cut(name, ".")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, k3sName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, used, err := Render(c, dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(used) != k3sName {
		t.Fatalf("used %q, want %s", used, k3sName)
	}
	return out
}

func TestK3sTemplatesGolden(t *testing.T) {
	for _, name := range k3sTemplates(t) {
		t.Run(name, func(t *testing.T) {
			out := renderTestdataTemplate(t, k3sNode(t), name)
			golden(t, strings.TrimSuffix(name, ".tmpl")+".golden", out)
		})
	}
}

// The k3s names hold the values the base config is made of.
func TestK3sNames(t *testing.T) {
	c := k3sNode(t)
	c.SELinux, c.DefaultRuntime, c.Snapshotter = true, "nvidia", "stargz"
	c.ImageServiceSocket = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"
	dir := t.TempDir()
	tmpl := strings.Join([]string{
		"{{ .NodeConfig.AgentConfig.PauseImage }}",
		"{{ .NodeConfig.AgentConfig.Snapshotter }}",
		"{{ .NodeConfig.AgentConfig.CNIBinDir }} {{ .NodeConfig.AgentConfig.CNIConfDir }}",
		"{{ .NodeConfig.Containerd.Root }} {{ .NodeConfig.Containerd.State }} {{ .NodeConfig.Containerd.Address }}",
		"{{ .NodeConfig.Containerd.Opt }} {{ .NodeConfig.Containerd.Registry }}",
		"{{ .NodeConfig.Containerd.Config }} {{ .NodeConfig.Containerd.Template }}",
		"{{ .NodeConfig.SELinux }} {{ .NodeConfig.DefaultRuntime }} {{ .NodeConfig.NoFlannel }}",
		"{{ .NodeConfig.AgentConfig.NodeName }} {{ .NodeConfig.AgentConfig.NodeIP }} {{ index .NodeConfig.AgentConfig.NodeIPs 1 }}",
		"{{ .NodeConfig.AgentConfig.ImageServiceSocket }} {{ .NodeConfig.AgentConfig.RuntimeSocket }}",
		"{{ .NodeConfig.AgentConfig.PrivateRegistry }} {{ len .NodeConfig.AgentConfig.Registry.Mirrors }}",
		"{{ .IsRunningInUserNS }} {{ .EnableUnprivileged }} {{ .SystemdCgroup }} {{ .DisableCgroup }} {{ .NonrootDevices }} {{ .NoDefaultEndpoint }}",
		"{{ range $k, $v := .ExtraRuntimes }}{{ $k }}={{ $v.RuntimeType }},{{ $v.BinaryName }}{{ end }}",
		"{{ .Program }} {{ .SandboxImage }}",
	}, "\n")
	os.WriteFile(filepath.Join(dir, "config-v3.toml.tmpl"), []byte(tmpl), 0o644)
	out, _, err := Render(c, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"rancher/mirrored-pause:3.6",
		"stargz",
		"/usr/lib/ballast/cni /var/lib/rancher/k3s/agent/etc/cni/net.d",
		"/var/lib/rancher/k3s/agent/containerd /run/k3s/containerd /run/k3s/containerd/containerd.sock",
		"/var/lib/rancher/k3s/agent/containerd/opt /var/lib/rancher/k3s/agent/etc/containerd/certs.d",
		filepath.Join(dir, "config.toml") + " " + dir,
		"true nvidia false",
		"node-1 192.168.1.10 fd00::10",
		"/run/containerd-stargz-grpc/containerd-stargz-grpc.sock /run/k3s/containerd/containerd.sock",
		"/etc/rancher/k3s/registries.yaml 2",
		"false true false false false false",
		"nvidia=io.containerd.runc.v2,/usr/bin/nvidia-container-runtime",
		"k3s rancher/mirrored-pause:3.6",
	}, "\n")
	if string(out) != want {
		t.Errorf("rendered:\n%s\nwant:\n%s", out, want)
	}
}

// Without registries.yaml a k3s template still ranges over the mirrors
// and configs, as k3s hands it an empty registry; without flannel a k3s
// version 2 template leaves the CNI directories to the user's CNI.
func TestK3sTemplateBareNode(t *testing.T) {
	c := base()
	c.NoFlannel, c.InUserNS = true, true
	out := string(renderTestdataTemplate(t, c, "k3s-v2.config.toml.tmpl"))
	if strings.Contains(out, "registry.mirrors") || strings.Contains(out, ".cni]") {
		t.Errorf("mirrors or CNI section rendered:\n%s", out)
	}
	if !strings.Contains(out, "restrict_oom_score_adj = true") {
		t.Errorf("IsRunningInUserNS not seen:\n%s", out)
	}
}

// A template error names the file and the line, for a parse error, a
// field neither ballast nor k3s has, and a k3s field ballast leaves out.
func TestTemplateErrorsNameFileAndLine(t *testing.T) {
	for _, c := range []struct{ tmpl, want string }{
		{"# ok\n{{ if }}\n", "config-v3.toml.tmpl:2"},
		{"# ok\n\n{{ .Nope }}\n", "config-v3.toml.tmpl:3"},
		{"{{ .NodeConfig.Token }}\n", "config-v3.toml.tmpl:1"},
		{"{{ .NodeConfig.AgentConfig.ClusterDomain }}\n", "config-v3.toml.tmpl:1"},
	} {
		dir := t.TempDir()
		p := filepath.Join(dir, "config-v3.toml.tmpl")
		os.WriteFile(p, []byte(c.tmpl), 0o644)
		_, _, err := Render(base(), dir)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v; want %s and %s", c.tmpl, err, p, c.want)
		}
	}
}

func TestToJSON(t *testing.T) {
	if s, err := toJSON(map[string]RuntimeConfig{"a": {"t", "b"}}); err != nil || s != `{"a":{"RuntimeType":"t","BinaryName":"b"}}` {
		t.Errorf("toJson = %s, %v", s, err)
	}
	if _, err := toJSON(func() {}); err == nil {
		t.Error("toJson of a func: no error")
	}
}
