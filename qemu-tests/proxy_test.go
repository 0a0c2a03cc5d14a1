package qemutest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ballast-os/ballast/init/kubenode"
)

// proxiedRegistry is the host's side of the proxy scenario: an HTTP proxy
// on loopback (the guest reaches it through a guestfwd) that serves one
// small image for the registry registryHost itself, as a proxy in front
// of a site's registry would, and refuses every other destination. It
// records every request, so a test can show that the node pulled through
// it and that no cluster traffic (pod and service addresses, .svc names)
// reached it.
type proxiedRegistry struct {
	Addr  string // 127.0.0.1:port
	Image string // registryHost/repo:tag
	mu    sync.Mutex
	seen  []string // "GET http://host/path", "CONNECT host:port"
	blobs map[string][]byte
	manif []byte
}

// Names the scenario uses: the guest's address of the proxy and the
// registry host it reaches only through it (no DNS name resolves there).
const (
	guestProxyAddr = "10.0.2.100:3128"
	registryHost   = "registry.ballast.test:5000"
)

func startProxiedRegistry(t *testing.T) *proxiedRegistry {
	t.Helper()
	p := &proxiedRegistry{Image: registryHost + "/ballast/proxied:v1", blobs: map[string][]byte{}}
	p.buildImage(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = ln.Addr().String()
	srv := &http.Server{Handler: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

// buildImage makes a one-layer OCI image (a single text file) in memory.
func (p *proxiedRegistry) buildImage(t *testing.T) {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	content := []byte("pulled through the proxy\n")
	if err := tw.WriteHeader(&tar.Header{Name: "proxied.txt", Mode: 0o644, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	tw.Write(content)
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(layer.Bytes())
	zw.Close()
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"/proxied.txt"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest(layer.Bytes())}},
	})
	p.blobs[digest(config)] = config
	p.blobs[digest(gz.Bytes())] = gz.Bytes()
	p.manif, _ = json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(gz.Bytes()), "size": gz.Len()}},
	})
	p.blobs[digest(p.manif)] = p.manif
}

func (p *proxiedRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if r.Method == http.MethodConnect {
		p.seen = append(p.seen, "CONNECT "+r.Host)
	} else {
		p.seen = append(p.seen, r.Method+" "+r.URL.String())
	}
	p.mu.Unlock()
	// A forward proxy's request names the whole URL; anything for
	// another destination (or a tunnel) is refused.
	if r.Method == http.MethodConnect || r.URL.Host != registryHost {
		http.Error(w, "this test proxy only reaches "+registryHost, http.StatusForbidden)
		return
	}
	const repo = "/v2/ballast/proxied/"
	switch path := r.URL.Path; {
	case path == "/v2/" || path == "/v2":
		w.WriteHeader(http.StatusOK)
	case path == repo+"manifests/v1" || strings.HasPrefix(path, repo+"manifests/sha256:"):
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", digest(p.manif))
		w.Header().Set("Content-Length", fmt.Sprint(len(p.manif)))
		if r.Method != http.MethodHead {
			w.Write(p.manif)
		}
	case strings.HasPrefix(path, repo+"blobs/"):
		b, ok := p.blobs[strings.TrimPrefix(path, repo+"blobs/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if r.Method != http.MethodHead {
			w.Write(b)
		}
	default:
		http.NotFound(w, r)
	}
}

// digest is an OCI content digest.
func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Seen is every request the proxy has had.
func (p *proxiedRegistry) Seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// proxyUserData is the cloud-config of the proxy scenario, added to the
// runtime's: k3s and its components behind the proxy (NO_PROXY: the
// node's own network; k3s adds the cluster's), a registries.yaml that
// sends registryHost over plain HTTP, a containerd template written for
// k3s (the base plus a runtime of its own), secrets-encryption, a node
// label and taint, and Traefik disabled.
func proxyUserData() string {
	return `proxy:
  http_proxy: http://` + guestProxyAddr + `
  https_proxy: http://` + guestProxyAddr + `
  no_proxy: 127.0.0.0/8,10.0.2.0/24,localhost
  containerd_http_proxy: http://` + guestProxyAddr + `
  containerd_no_proxy: 127.0.0.0/8,localhost
k3s:
  disable: [traefik]
  secrets-encryption: true
  node-label:
    - ballast.test/from=k3s-block
  node-taint:
    - ballast.test/dedicated=e2e:PreferNoSchedule
write_files:
  - path: /etc/rancher/k3s/registries.yaml
    content: |
      mirrors:
        "` + registryHost + `":
          endpoint:
            - "http://` + registryHost + `"
  - path: /var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl
    content: |
      {{ template "base" . }}
      # ballast e2e template on {{ .NodeConfig.AgentConfig.NodeName }}
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'e2e-custom']
        runtime_type = "io.containerd.runc.v2"
`
}

// checkProxyScenario checks what proxyUserData asked of a Ready node.
func checkProxyScenario(t *testing.T, m *Machine, api *kubenode.Client, proxy *proxiedRegistry) {
	t.Helper()
	// The node label and taint from the k3s block.
	var node struct {
		Metadata struct{ Labels map[string]string }
		Spec     struct {
			Taints []struct{ Key, Value, Effect string }
		}
	}
	if err := json.Unmarshal(apiGet(t, api, "/api/v1/nodes/node1"), &node); err != nil {
		t.Fatal(err)
	}
	if node.Metadata.Labels["ballast.test/from"] != "k3s-block" {
		t.Errorf("node labels %v lack ballast.test/from=k3s-block", node.Metadata.Labels)
	}
	tainted := false
	for _, tn := range node.Spec.Taints {
		tainted = tainted || tn.Key == "ballast.test/dedicated" && tn.Value == "e2e" && tn.Effect == "PreferNoSchedule"
	}
	if !tainted {
		t.Errorf("node taints %+v lack ballast.test/dedicated=e2e:PreferNoSchedule", node.Spec.Taints)
	}

	// The containerd template written for k3s: rendered over the base,
	// and containerd runs with the runtime it adds.
	if cfg := nodeExec(t, m, "cat", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"); !strings.Contains(cfg, "# ballast e2e template on node1") || !strings.Contains(cfg, "sandbox = ") {
		t.Errorf("config.toml is not the template over the base:\n%s", cfg)
	}
	if info := nodeExec(t, m, "k3s", "crictl", "info"); !strings.Contains(info, `"e2e-custom"`) {
		t.Errorf("containerd does not run with the template's runtime e2e-custom:\n%.2000s", info)
	}

	// The components' environment (kube-apiserver's: it calls the
	// aggregated APIs on service addresses): NO_PROXY extended with the
	// cluster's own destinations. (The k3s process's own /proc environ
	// is what it started with: it extends its environment at start.)
	env := nodeExec(t, m, "sh", "-c", `tr '\0' '\n' < /proc/$(pgrep -o -f '^/usr/bin/k3s kube-apiserver')/environ | grep -i '^no_proxy='`)
	for _, want := range []string{"10.0.2.0/24", "10.42.0.0/16", "10.43.0.0/16", ".svc", ".cluster.local"} {
		if !strings.Contains(env, want) {
			t.Errorf("kube-apiserver's NO_PROXY lacks %s:\n%s", want, env)
		}
	}
	if out := nodeExec(t, m, "k3s", "crictl", "pull", proxy.Image); !strings.Contains(out, "Image is up to date") {
		t.Errorf("crictl pull %s: %s", proxy.Image, out)
	}
	seen := proxy.Seen()
	pulled := false
	for _, s := range seen {
		// containerd asks for the tag (HEAD, or GET), then by digest.
		pulled = pulled || strings.HasSuffix(s, " http://"+registryHost+"/v2/ballast/proxied/manifests/v1")
		for _, cluster := range []string{"10.42.", "10.43.", ".svc", "cluster.local", "127.0.0.1", "10.0.2.15"} {
			if strings.Contains(s, cluster) {
				t.Errorf("cluster traffic went to the proxy: %s", s)
			}
		}
	}
	if !pulled {
		t.Errorf("the image was not pulled through the proxy; it saw %q", seen)
	}
	t.Logf("the proxy saw %d requests, the first %q", len(seen), seen[:min(3, len(seen))])

	// secrets-encryption: a Secret's value is not in the datastore's
	// files, which hold aescbc envelopes; the API reads it back.
	const plain = "ballast-e2e-secret-7c1d"
	nodeExec(t, m, "k3s", "kubectl", "create", "secret", "generic", "e2e-enc", "--from-literal=v="+plain)
	raw := func(pattern string) string {
		return strings.TrimSpace(nodeExec(t, m, "sh", "-c", "sync; cat /var/lib/rancher/k3s/server/db/state.db* | grep -a -c '"+pattern+"' || true"))
	}
	if n := raw(plain); n != "0" {
		t.Errorf("the Secret's value is in the datastore in the clear (%s matches)", n)
	}
	if n := raw("k8s:enc:aescbc:v1:aescbckey"); n == "0" {
		t.Error("no aescbc-encrypted object in the datastore")
	}
	if got := nodeExec(t, m, "k3s", "kubectl", "get", "secret", "e2e-enc", "-o", "jsonpath={.data.v}"); got != base64.StdEncoding.EncodeToString([]byte(plain)) {
		t.Errorf("the Secret through the API: %q", got)
	}
}
