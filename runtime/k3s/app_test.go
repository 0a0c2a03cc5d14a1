package k3s

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runApp(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{args: args, stdout: &out, stderr: &errb, lookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	return a.run(context.Background()), out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		code, out, _ := runApp(t, nil, "/usr/local/bin/k3s", flag)
		if code != 0 || !strings.Contains(out, "ballast's k3s-compatible runtime") || !strings.Contains(out, "kubernetes") || !strings.Contains(out, "containerd") {
			t.Errorf("%s: %d %q", flag, code, out)
		}
	}
}

func TestDispatchNotBuilt(t *testing.T) {
	for _, args := range [][]string{{"/bin/kubectl", "get", "nodes"}, {"crictl", "ps"}, {"ctr"}, {"k3s", "kubectl", "get", "pods"}, {"k3s", "kube-apiserver", "--secure-port=6444"}} {
		code, _, errOut := runApp(t, nil, args...)
		if code != 1 || !strings.Contains(errOut, "not built into this runtime yet") {
			t.Errorf("%v: %d %q", args, code, errOut)
		}
	}
	if code, _, _ := runApp(t, nil, "k3s", "frobnicate"); code != 2 {
		t.Errorf("unknown command exit %d, want 2", code)
	}
	// secrets-encrypt's flags are checked before the server is asked.
	for _, args := range [][]string{{"k3s", "secrets-encrypt", "frob"}, {"k3s", "secrets-encrypt", "rotate-keys", "--force"}, {"k3s", "secrets-encrypt", "prepare", "--skip"}, {"k3s", "secrets-encrypt", "rotate", "-o", "json"}} {
		if code, _, errOut := runApp(t, nil, args...); code != 2 || !strings.Contains(errOut, "secrets-encrypt") {
			t.Errorf("%v: exit %d %q, want a usage error", args, code, errOut)
		}
	}
}

func TestTokenGenerate(t *testing.T) {
	code, out, _ := runApp(t, nil, "k3s", "token", "generate")
	if code != 0 || len(strings.TrimSpace(out)) != 23 {
		t.Errorf("%d %q", code, out)
	}
}

// TestRefusedKeysStopStart: a key the runtime refuses stops k3s server and
// agent before they change anything, naming the file and line; an ignored
// key is a warning.
func TestRefusedKeysStopStart(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte("debug: true\ndocker: true\n"), 0o644)
	dataDir := filepath.Join(dir, "k3s")
	for _, cmd := range []string{"server", "agent"} {
		code, _, errOut := runApp(t, map[string]string{"K3S_TOKEN": "secret", "K3S_URL": "https://10.0.0.1:6443"}, "k3s", cmd, "--config", cfg, "--data-dir", dataDir)
		if code != 1 || !strings.Contains(errOut, cfg+`:2: key "docker": cri-dockerd is not built into ballast's runtime`) {
			t.Errorf("%s: exit %d: %s", cmd, code, errOut)
		}
		if !strings.Contains(errOut, "warning: "+cfg+`:1: key "debug"`) {
			t.Errorf("%s: no warning for debug: %s", cmd, errOut)
		}
		if _, err := os.Stat(dataDir); err == nil {
			t.Fatalf("%s: the data dir was created before the refusal", cmd)
		}
	}
}

func TestServerPreparesThenStops(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte("write-kubeconfig-mode: \"0644\"\nnode-name: testnode\nnode-ip: 10.0.2.15\nbogus-key: 1\n"), 0o644)
	dataDir := filepath.Join(dir, "k3s")
	kubeconfig := filepath.Join(dir, "k3s.yaml")
	code, _, errOut := runApp(t, map[string]string{"K3S_TOKEN": "secret"}, "k3s", "server", "--config", cfg, "--data-dir", dataDir, "--write-kubeconfig", kubeconfig, "--private-registry", filepath.Join(dir, "none.yaml"))
	if code != 1 || !strings.Contains(errOut, "not built into this runtime yet") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, `"bogus-key": unknown key`) {
		t.Errorf("no warning for the unknown key: %s", errOut)
	}
	if !strings.Contains(errOut, "would run: kube-apiserver ") || !strings.Contains(errOut, "--hostname-override=testnode") {
		t.Errorf("component args not shown: %s", errOut)
	}
	fi, err := os.Stat(kubeconfig)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("kubeconfig: %v %v", fi, err)
	}
	tok, _ := os.ReadFile(filepath.Join(dataDir, "server", "node-token"))
	if !strings.HasPrefix(string(tok), "K10") || !strings.HasSuffix(strings.TrimSpace(string(tok)), "::server:secret") {
		t.Errorf("node-token %q", tok)
	}
	for _, f := range []string{"server/tls/serving-kube-apiserver.crt", "agent/client-kubelet.crt", "agent/etc/containerd/config.toml", "agent/etc/kubelet.conf.d/00-ballast-defaults.conf", "server/cred/admin.kubeconfig"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err != nil {
			t.Error(err)
		}
	}
	// certificate check and rotate then work on that data dir, named by
	// the config file's data-dir (it wins over $K3S_DATA_DIR, as in k3s).
	moved := filepath.Join(dir, "moved.yaml")
	os.WriteFile(moved, []byte("data-dir: "+dataDir+"\n"), 0o644)
	code, out, errOut := runApp(t, map[string]string{"K3S_DATA_DIR": filepath.Join(dir, "elsewhere")}, "k3s", "certificate", "check", "--config", moved)
	if code != 0 || !strings.Contains(out, "client-admin.crt") {
		t.Errorf("check with the config's data-dir: %d %q %q", code, out, errOut)
	}
	code, out, errOut = runApp(t, map[string]string{"K3S_CONFIG_FILE": moved, "K3S_DATA_DIR": filepath.Join(dir, "elsewhere")}, "k3s", "certificate", "rotate", "--service", "admin,kubelet")
	if code != 0 || !strings.Contains(out, "client-admin.crt") || !strings.Contains(out, "client-kubelet.crt") {
		t.Errorf("rotate: %d %q %q", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "server", "tls", "client-admin.crt")); !os.IsNotExist(err) {
		t.Error("client-admin.crt still there after rotate")
	}
}

func TestServerRefusesRestrictedLabel(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte("node-label: [node-role.kubernetes.io/worker=true]\n"), 0o644)
	code, _, errOut := runApp(t, nil, "k3s", "server", "--config", cfg, "--data-dir", filepath.Join(dir, "d"))
	if code != 1 || !strings.Contains(errOut, "node-role.kubernetes.io/worker") {
		t.Errorf("%d %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); !os.IsNotExist(err) {
		t.Error("data dir created despite invalid config")
	}
}

func TestKubectlKubeconfig(t *testing.T) {
	exists := func(string) (os.FileInfo, error) { return nil, nil }
	missing := func(p string) (os.FileInfo, error) { return nil, os.ErrNotExist }
	noEnv := func(string) (string, bool) { return "", false }
	env := func(k string) (string, bool) { return "/root/.kube/config", k == "KUBECONFIG" }
	for _, tc := range []struct {
		args []string
		env  func(string) (string, bool)
		stat func(string) (os.FileInfo, error)
		want string
	}{
		{[]string{"get", "nodes"}, noEnv, exists, DefaultKubeconfig},
		{[]string{"get", "nodes"}, noEnv, missing, ""},
		{[]string{"get", "nodes"}, env, exists, ""},
		{[]string{"--kubeconfig", "x", "get", "nodes"}, noEnv, exists, ""},
		{[]string{"get", "--kubeconfig=x", "nodes"}, noEnv, exists, ""},
		{[]string{"exec", "p", "--", "--kubeconfig=x"}, noEnv, exists, DefaultKubeconfig},
	} {
		if got := KubectlKubeconfig(tc.args, tc.env, tc.stat); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestNeedsContainerInit(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	pid := func(p int) func() int { return func() int { return p } }
	for _, tc := range []struct {
		args []string
		pid  int
		env  map[string]string
		want bool
	}{
		{[]string{"k3s", "server"}, 1, nil, true},
		{[]string{"k3s", "agent"}, 1, nil, true},
		{[]string{"k3s", "server"}, 1, map[string]string{containerInitEnv: "1"}, false},
		{[]string{"k3s", "server"}, 42, nil, false},
		{[]string{"k3s", "kubectl"}, 1, nil, false},
		{[]string{"k3s"}, 1, nil, false},
	} {
		if got := needsContainerInit(tc.args, pid(tc.pid), env(tc.env)); got != tc.want {
			t.Errorf("%v pid %d env %v: %v, want %v", tc.args, tc.pid, tc.env, got, tc.want)
		}
	}
}

func TestValueOrFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte("  from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ value, file, want string }{
		{"flag", f, "flag"}, {"", f, "from-file"}, {"", "", ""},
	} {
		if got, err := valueOrFile(tc.value, tc.file, "token-file"); err != nil || got != tc.want {
			t.Errorf("%q %q: %q %v, want %q", tc.value, tc.file, got, err, tc.want)
		}
	}
	if _, err := valueOrFile("", "/nonexistent/token", "agent-token-file"); err == nil || !strings.Contains(err.Error(), "--agent-token-file") {
		t.Errorf("missing file: %v", err)
	}
}

// --with-node-id appends the id kept in /etc/rancher/node/id, the same at
// every start.
func TestNodeIdentityWithNodeID(t *testing.T) {
	old := nodeIDFile
	nodeIDFile = filepath.Join(t.TempDir(), "node", "id")
	defer func() { nodeIDFile = old }()
	name, _, err := nodeIdentity("pi", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := os.ReadFile(nodeIDFile)
	if len(strings.TrimSpace(string(id))) != 8 || name != "pi-"+strings.TrimSpace(string(id)) {
		t.Errorf("name %q, id file %q", name, id)
	}
	again, _, err := nodeIdentity("pi", nil, true)
	if err != nil || again != name {
		t.Errorf("second start: %q %v, want %q", again, err, name)
	}
	if plain, _, _ := nodeIdentity("pi", nil, false); plain != "pi" {
		t.Errorf("without --with-node-id: %q", plain)
	}
}
