package cloudconfig

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t *testing.T, name, doc string) *Config {
	t.Helper()
	cfg, err := Parse(name, []byte(doc))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cfg
}

func TestMerge(t *testing.T) {
	keyA, keyB := sshKey("ssh-ed25519", "a"), sshKey("ssh-rsa", "b")
	baked := mustParse(t, "baked", "#cloud-config\n"+
		"hostname: baked\n"+
		"ssh_authorized_keys: ["+keyA+"]\n"+
		"users: [{name: ops, shell: /bin/sh}, {name: backup}]\n"+
		"write_files: [{path: /etc/a, content: baked}]\n"+
		"bootcmd: [echo baked]\n"+
		"runcmd: [[echo, baked]]\n"+
		"ntp: {enabled: true, servers: [ntp.baked]}\n"+
		"network: {dhcp: true, nameservers: [10.0.0.1, 10.0.0.2]}\n"+
		"proxy: {http_proxy: \"http://baked:3128\", no_proxy: baked}\n"+
		"manifests: [{name: a.yaml, content: baked}, {name: b.yaml, content: baked}]\n"+
		"k3s: {token: baked, disable: [traefik], cluster-init: true}\n"+
		"ballast: {modules: [br_netfilter], sysctls: {a.b: \"1\", c.d: \"1\"}, environment: {A: baked}, agent: {privileged: true}, ssh: {port: 2222, enabled: true}, runtime: k3s}\n")
	user := mustParse(t, "user-data", "#cloud-config\n"+
		"ssh_authorized_keys: [\"  "+keyA+"  \", "+keyB+"]\n"+
		"users: [{name: ops, shell: /bin/bash}, {name: dev}]\n"+
		"write_files: [{path: /etc/a, content: user, append: true}]\n"+
		"bootcmd: [echo user]\n"+
		"ntp: {enabled: false}\n"+
		"network: {nameservers: [1.1.1.1]}\n"+
		"proxy: {https_proxy: \"http://user:3128\"}\n"+
		"manifests: [{name: a.yaml, content: user}]\n"+
		"k3s: {token: user, disable: [servicelb], node-label: [example.com/a=b]}\n"+
		"ballast: {modules: [br_netfilter, overlay], sysctls: {a.b: \"2\"}, agent: {privileged: false}, ssh: {password_authentication: true}}\n")

	got := Merge(baked, nil, user)

	if got.Hostname != "baked" {
		t.Errorf("unset scalar must not override: hostname %q", got.Hostname)
	}
	if want := []string{keyA, keyB}; !reflect.DeepEqual(got.SSHAuthorizedKeys, want) {
		t.Errorf("ssh keys append, identical ones once: %q", got.SSHAuthorizedKeys)
	}
	if len(got.Users) != 3 || got.Users[0].Name != "ops" || got.Users[0].Shell != "/bin/bash" || got.Users[1].Name != "backup" || got.Users[2].Name != "dev" {
		t.Errorf("users append, same name replaces in place: %+v", got.Users)
	}
	if len(got.WriteFiles) != 2 || got.WriteFiles[1].Content != "user" || !got.WriteFiles[1].Append {
		t.Errorf("write_files append: %+v", got.WriteFiles)
	}
	if len(got.BootCmd) != 2 || got.BootCmd[1].Shell != "echo user" || len(got.RunCmd) != 1 {
		t.Errorf("commands append: %+v %+v", got.BootCmd, got.RunCmd)
	}
	if got.NTPEnabled() || !reflect.DeepEqual(got.NTPServersOrDefault(), []string{"ntp.baked"}) {
		t.Errorf("a later false turns ntp off, servers kept: %+v", got.NTP)
	}
	if !got.DHCPOrDefault() || !reflect.DeepEqual(got.Network.Nameservers, []string{"1.1.1.1"}) {
		t.Errorf("nameservers replaced as a whole: %+v", got.Network)
	}
	if got.Proxy.HTTPProxy != "http://baked:3128" || got.Proxy.HTTPSProxy != "http://user:3128" || got.Proxy.NoProxy != "baked" {
		t.Errorf("proxy field by field: %+v", got.Proxy)
	}
	if len(got.Manifests) != 2 || got.Manifests[0].Content != "user" || got.Manifests[1].Name != "b.yaml" {
		t.Errorf("manifests by name: %+v", got.Manifests)
	}
	wantK3s := map[string]any{"token": "user", "disable": []any{"servicelb"}, "cluster-init": true, "node-label": []any{"example.com/a=b"}}
	if !reflect.DeepEqual(got.K3s, wantK3s) {
		t.Errorf("k3s key by key, later value replaces:\n got %#v\nwant %#v", got.K3s, wantK3s)
	}
	b := got.Ballast
	if !reflect.DeepEqual(b.Modules, []string{"br_netfilter", "overlay"}) {
		t.Errorf("modules append once: %q", b.Modules)
	}
	if !reflect.DeepEqual(b.Sysctls, map[string]string{"a.b": "2", "c.d": "1"}) || b.Environment["A"] != "baked" {
		t.Errorf("maps key by key: %v %v", b.Sysctls, b.Environment)
	}
	if got.AgentPrivileged() || got.SSHPort() != 2222 || !got.SSHEnabled() || !got.SSHPasswordAuth() || got.RuntimeOrDefault() != "k3s" {
		t.Errorf("ballast pointers and scalars: %+v %+v %+v", b.Agent, b.SSH, b)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("merged config: %v", err)
	}

	// The inputs are untouched and share nothing with the result.
	got.K3s["disable"].([]any)[0] = "changed"
	got.Ballast.Sysctls["a.b"] = "changed"
	got.Users[0].Groups = append(got.Users[0].Groups, "x")
	if user.K3s["disable"].([]any)[0] != "servicelb" || user.Ballast.Sysctls["a.b"] != "2" || baked.Hostname != "baked" {
		t.Errorf("Merge changed or shares its inputs")
	}

	if m := Merge(); m == nil || !reflect.DeepEqual(m, &Config{}) {
		t.Errorf("Merge() = %+v, want an empty config", m)
	}
}

func TestMergeLaterHostnameWins(t *testing.T) {
	a := &Config{Hostname: "a", InstanceID: "i-1"}
	b := &Config{Hostname: "b"}
	got := Merge(a, b)
	if got.Hostname != "b" || got.InstanceID != "i-1" {
		t.Errorf("got %+v", got)
	}
}

// A config as k3OS users write it (github.com/rancher/k3os README).
const k3osConfig = `#cloud-config
ssh_authorized_keys:
  - SSH_KEY
hostname: myhost
write_files:
  - encoding: ""
    content: |-
      #!/bin/bash
      echo hello, local service start
    owner: root
    path: /etc/local.d/example.start
    permissions: '0755'
run_cmd:
  - "echo hi && echo bye"
k3os:
  data_sources:
    - aws
    - cdrom
  modules:
    - kvm
    - nvme
  sysctls:
    kernel.printk: "4 4 1 7"
    kernel.kptr_restrict: "1"
  dns_nameservers:
    - 8.8.8.8
    - 1.1.1.1
  ntp_servers:
    - 0.us.pool.ntp.org
    - 1.us.pool.ntp.org
  password: rancher
  server_url: https://someserver:6443
  token: TOKEN_VALUE
  labels:
    region: us-west-1
    somekey: somevalue
  k3s_args:
    - server
    - "--cluster-init"
    - "--disable=traefik"
    - "--disable"
    - "servicelb"
    - "--node-label"
    - "example.com/rack=r1"
    - "--flannel-backend=host-gw"
    - "--kube-apiserver-arg=feature-gates=A=true"
    - "--kube-apiserver-arg"
    - "audit-log-maxage=30"
    - "-t"
    - "OTHER_TOKEN"
  environment:
    http_proxy: http://myserver
    https_proxy: http://myserver
  taints:
    - key1=value1:NoSchedule
    - key1=value1:NoExecute
`

func TestK3OSConfig(t *testing.T) {
	key := sshKey("ssh-ed25519", "admin")
	doc := strings.Replace(k3osConfig, "SSH_KEY", key, 1)

	// k3OS's run_cmd was never a cloud-config key: the strict parser says so.
	_, err := Parse("config.yaml", []byte(doc))
	if err == nil || err.Error() != `config.yaml:13:1: run_cmd: unknown key "run_cmd" (did you mean "runcmd"?)` {
		t.Fatalf("err = %v", err)
	}
	doc = strings.Replace(doc, "run_cmd:", "runcmd:", 1)
	cfg, warns, err := ParseWithWarnings("config.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 2 || warns[0].Key != "k3os.data_sources" || warns[1].Key != "k3os.password" {
		t.Errorf("warnings: %v", warns)
	}

	eff := cfg.Effective()
	if eff.K3OS != nil {
		t.Errorf("Effective keeps the k3os block")
	}
	if cfg.K3OS == nil {
		t.Errorf("Effective changed its receiver")
	}
	if !reflect.DeepEqual(eff.Ballast.Modules, []string{"kvm", "nvme"}) {
		t.Errorf("modules: %q", eff.Ballast.Modules)
	}
	if !reflect.DeepEqual(eff.Ballast.Sysctls, map[string]string{"kernel.printk": "4 4 1 7", "kernel.kptr_restrict": "1"}) {
		t.Errorf("sysctls: %v", eff.Ballast.Sysctls)
	}
	if !reflect.DeepEqual(eff.Ballast.Environment, map[string]string{"http_proxy": "http://myserver", "https_proxy": "http://myserver"}) {
		t.Errorf("environment: %v", eff.Ballast.Environment)
	}
	if !reflect.DeepEqual(eff.NTPServersOrDefault(), []string{"0.us.pool.ntp.org", "1.us.pool.ntp.org"}) {
		t.Errorf("ntp: %+v", eff.NTP)
	}
	if !reflect.DeepEqual(eff.Network.Nameservers, []string{"8.8.8.8", "1.1.1.1"}) {
		t.Errorf("nameservers: %+v", eff.Network)
	}
	if eff.Ballast.Role != "server" || eff.RoleOrDefault() != "server" {
		t.Errorf("role: %q", eff.Ballast.Role)
	}
	want := map[string]any{
		"cluster-init":       true,
		"disable":            []any{"traefik", "servicelb"},
		"node-label":         []any{"example.com/rack=r1", "region=us-west-1", "somekey=somevalue"},
		"node-taint":         []any{"key1=value1:NoSchedule", "key1=value1:NoExecute"},
		"flannel-backend":    "host-gw",
		"kube-apiserver-arg": []any{"feature-gates=A=true", "audit-log-maxage=30"},
		// -t in k3s_args is the token flag; it wins over k3os.token, as
		// k3s's command line would over k3OS's K3S_TOKEN environment.
		"token":  "OTHER_TOKEN",
		"server": "https://someserver:6443",
	}
	if !reflect.DeepEqual(eff.K3s, want) {
		t.Errorf("k3s:\n got %#v\nwant %#v", eff.K3s, want)
	}
	if err := eff.Validate(); err != nil {
		t.Errorf("effective config: %v", err)
	}

	// Merge folds too, and a later ballast source overrides k3OS's values.
	later := mustParse(t, "user-data", "#cloud-config\nntp: {servers: [time.example.com]}\nk3s: {token: NEW}\n")
	m := Merge(cfg, later)
	if m.K3OS != nil || m.K3s["token"] != "NEW" || m.NTPServersOrDefault()[0] != "time.example.com" || m.K3s["cluster-init"] != true {
		t.Errorf("merge: %+v %v", m, m.K3s)
	}

	out, err := cfg.K3sConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	wantYAML := `# Written by ballast's init from the cloud-config k3s: block; changes here are lost at boot.

cluster-init: true
disable:
  - traefik
  - servicelb
flannel-backend: host-gw
kube-apiserver-arg:
  - feature-gates=A=true
  - audit-log-maxage=30
node-label:
  - example.com/rack=r1
  - region=us-west-1
  - somekey=somevalue
node-taint:
  - key1=value1:NoSchedule
  - key1=value1:NoExecute
server: https://someserver:6443
token: OTHER_TOKEN
`
	if string(out) != wantYAML {
		t.Errorf("K3sConfigYAML:\n%s\nwant:\n%s", out, wantYAML)
	}
}

func TestEffectiveBallastKeysWin(t *testing.T) {
	cfg := mustParse(t, "user-data", "#cloud-config\n"+
		"ntp: {servers: [mine]}\n"+
		"network: {search: [lan]}\n"+
		"k3s: {server: \"https://a:6443\", node-label: [x.io/a=1], token: mine}\n"+
		"ballast: {sysctls: {a.b: mine}, modules: [overlay], role: agent}\n"+
		"k3os:\n"+
		"  ntp_servers: [theirs]\n"+
		"  dns_searches: [theirs]\n"+
		"  dns_nameservers: [9.9.9.9]\n"+
		"  server_url: \"https://b:6443\"\n"+
		"  token: theirs\n"+
		"  labels: {x.io/a: \"1\", x.io/b: \"2\"}\n"+
		"  sysctls: {a.b: theirs, c.d: theirs}\n"+
		"  modules: [overlay, kvm]\n"+
		"  k3s_args: [server]\n")
	eff := cfg.Effective()
	if eff.NTP.Servers[0] != "mine" || eff.Network.Search[0] != "lan" || eff.Network.Nameservers[0] != "9.9.9.9" {
		t.Errorf("lists: %+v %+v", eff.NTP, eff.Network)
	}
	if eff.K3s["server"] != "https://a:6443" || eff.K3s["token"] != "mine" {
		t.Errorf("k3s scalars: %v", eff.K3s)
	}
	if !reflect.DeepEqual(eff.K3s["node-label"], []any{"x.io/a=1", "x.io/b=2"}) {
		t.Errorf("node-label lists join without duplicates: %v", eff.K3s["node-label"])
	}
	if !reflect.DeepEqual(eff.Ballast.Sysctls, map[string]string{"a.b": "mine", "c.d": "theirs"}) {
		t.Errorf("sysctls: %v", eff.Ballast.Sysctls)
	}
	if !reflect.DeepEqual(eff.Ballast.Modules, []string{"overlay", "kvm"}) || eff.Ballast.Role != "agent" {
		t.Errorf("modules %q role %q", eff.Ballast.Modules, eff.Ballast.Role)
	}
	// Without a k3os block Effective is a faithful copy.
	plain := mustParse(t, "user-data", "#cloud-config\nhostname: a\nk3s: {token: x}\n")
	if e := plain.Effective(); !reflect.DeepEqual(e, plain) || e.Hash() != plain.Hash() {
		t.Errorf("Effective of a plain config differs: %+v", e)
	}
}

func TestParseK3sArgs(t *testing.T) {
	role, keys, problems := parseK3sArgs([]string{
		"agent", "--node-ip", "10.0.0.5", "--with-node-id", "--debug=false", "-s", "https://x:6443",
		"--tls-san=a", "--unknown-bool", "--node-name", "n1", "--node-name=n2", "--selinux=maybe", "stray",
	})
	if role != "agent" {
		t.Errorf("role %q", role)
	}
	want := map[string]any{
		"node-ip": []any{"10.0.0.5"}, "with-node-id": true, "debug": false, "server": "https://x:6443",
		"tls-san": []any{"a"}, "unknown-bool": true, "node-name": []any{"n1", "n2"},
	}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("keys:\n got %#v\nwant %#v", keys, want)
	}
	if len(problems) != 2 || problems[0].index != 12 || problems[1].index != 13 {
		t.Errorf("problems: %+v", problems)
	}
}

func TestK3sArgsChecked(t *testing.T) {
	doc := "#cloud-config\nk3os:\n  k3s_args:\n" +
		"    - server\n" +
		"    - --node-label\n" +
		"    - node-role.kubernetes.io/worker=true\n" +
		"    - --node-taint=a=b:Sometimes\n" +
		"    - --disabel=traefik\n"
	cfg, warns, err := ParseWithWarnings("user-data", []byte(doc))
	if cfg != nil {
		t.Errorf("config returned with errors")
	}
	var list *ErrorList
	if !errors.As(err, &list) || len(list.Errors) != 2 {
		t.Fatalf("err = %v", err)
	}
	if e := list.Errors[0]; e.Line != 6 || e.Column != 7 || e.Key != "k3os.k3s_args[2]" || !strings.HasPrefix(e.Message, `node label "node-role.kubernetes.io/worker": the kubelet refuses`) {
		t.Errorf("label error: %v", e)
	}
	if e := list.Errors[1]; e.Line != 7 || e.Key != "k3os.k3s_args[3]" || !strings.Contains(e.Message, `effect "Sometimes"`) {
		t.Errorf("taint error: %v", e)
	}
	if len(warns) != 1 || warns[0].String() != `user-data:8:7: k3os.k3s_args[4]: unknown k3s option "disabel" (did you mean "disable"?); k3s ignores it` {
		t.Errorf("warnings: %v", warns)
	}
}
