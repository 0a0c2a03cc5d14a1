package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ballast-os/ballast/runtime/agent"
	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/supervisor"
	"github.com/ballast-os/ballast/runtime/token"
)

// fakeAPI is kube-apiserver as the supervisor sees it: secrets kept in a
// map, and every other request answered with the identity it arrived with.
type fakeAPI struct {
	mu      sync.Mutex
	secrets map[string][]byte
	applied map[string]string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	const secrets = "/api/v1/namespaces/kube-system/secrets"
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, secrets+"/"):
		body, ok := f.secrets[strings.TrimPrefix(r.URL.Path, secrets+"/")]
		if !ok {
			http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
			return
		}
		_, _ = w.Write(body)
	case r.Method == http.MethodPost && r.URL.Path == secrets:
		body, _ := io.ReadAll(r.Body)
		var s struct{ Metadata struct{ Name string } }
		_ = json.Unmarshal(body, &s)
		if _, ok := f.secrets[s.Metadata.Name]; ok {
			http.Error(w, `{"message":"exists"}`, http.StatusConflict)
			return
		}
		f.secrets[s.Metadata.Name] = body
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodPost && r.URL.Path == "/apis/authentication.k8s.io/v1/tokenreviews":
		var tr struct{ Spec struct{ Token string } }
		_ = json.NewDecoder(r.Body).Decode(&tr)
		ok := tr.Spec.Token == "abcdef.0123456789abcdef"
		writeJSONTest(w, map[string]any{"status": map[string]any{"authenticated": ok, "user": map[string]any{
			"username": "system:bootstrap:abcdef", "groups": []string{"system:bootstrappers", "system:bootstrappers:k3s:default-node-token"}}}})
	case r.Method == http.MethodPatch:
		body, _ := io.ReadAll(r.Body)
		f.applied[r.URL.Path] = string(body)
	default:
		// The proxy test: say who the request came as.
		var peer string
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			peer = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		writeJSONTest(w, map[string]any{"path": r.URL.Path, "peer": peer, "user": r.Header.Get("X-Remote-User"), "groups": r.Header.Values("X-Remote-Group"), "authorization": r.Header.Get("Authorization")})
	}
}

func writeJSONTest(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

type cluster struct {
	dataDir     string
	url         string
	serverToken token.ServerTokens
	api         *fakeAPI
}

// startServer lays out a server's PKI and tokens, a fake apiserver on
// loopback, and the supervisor in front of it.
func startServer(t *testing.T) *cluster {
	t.Helper()
	dir := t.TempDir()
	lay := datadir.Layout{Root: dir}
	if err := lay.Create(true, false); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Ensure(certs.Options{DataDir: dir, NodeName: "server0", NodeIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16"), APIServerPort: 6444}); err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(filepath.Join(lay.TLS(), "server-ca.crt"))
	tokens, err := token.EnsureServer(token.Files{Token: lay.TokenFile(), AgentToken: lay.AgentTokenFile(), Passwd: filepath.Join(lay.Cred(), "passwd")}, ca, "", "agentsecret")
	if err != nil {
		t.Fatal(err)
	}
	api := &fakeAPI{secrets: map[string][]byte{}, applied: map[string]string{}}
	apiSrv := httptest.NewUnstartedServer(api)
	serving, err := tls.LoadX509KeyPair(filepath.Join(lay.TLS(), "serving-kube-apiserver.crt"), filepath.Join(lay.TLS(), "serving-kube-apiserver.key"))
	if err != nil {
		t.Fatal(err)
	}
	apiSrv.TLS = &tls.Config{Certificates: []tls.Certificate{serving}, ClientAuth: tls.RequestClientCert}
	apiSrv.StartTLS()
	t.Cleanup(apiSrv.Close)

	s := &config.ServerConfig{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.43.0.0/16")},
		ClusterDNS: []netip.Addr{netip.MustParseAddr("10.43.0.10")}, ClusterDomain: "cluster.local", ServiceNodePortRange: "30000-32767",
		FlannelBackend: "vxlan", EgressSelectorMode: "agent", HTTPSListenPort: 6443,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sup := &supervisor.Server{DataDir: dir, Port: ln.Addr().(*net.TCPAddr).Port, AdvertiseAddress: netip.MustParseAddr("127.0.0.1"), APIServer: apiSrv.URL, Cluster: supervisor.ClusterConfigOf(s), Logf: t.Logf}
	if err := sup.Load(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sup.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return &cluster{dataDir: dir, url: "https://" + ln.Addr().String(), serverToken: tokens, api: api}
}

func (c *cluster) join(t *testing.T, tok token.Token, node, password string) (*agent.Joined, string, error) {
	dir := t.TempDir()
	j := &agent.Join{ServerURL: c.url, Token: tok, NodeName: node, NodePassword: password, NodeIPs: []netip.Addr{netip.MustParseAddr("192.0.2.7")}, DataDir: dir, LBPort: 6444}
	got, err := j.Run(context.Background())
	return got, dir, err
}

func TestJoin(t *testing.T) {
	c := startServer(t)
	joined, dir, err := c.join(t, c.serverToken.Agent, "agent1", "pw1")
	if err != nil {
		t.Fatal(err)
	}
	if got := joined.Cluster.ClusterDNS; len(got) != 1 || got[0] != "10.43.0.10" {
		t.Errorf("cluster DNS %v", got)
	}
	if len(joined.APIServers) != 1 || !strings.HasPrefix(joined.APIServers[0], "127.0.0.1:") {
		t.Errorf("apiservers %v", joined.APIServers)
	}
	lay := datadir.Layout{Root: dir}
	serverCA, _ := os.ReadFile(filepath.Join(c.dataDir, "server", "tls", "server-ca.crt"))
	clientCA, _ := os.ReadFile(filepath.Join(c.dataDir, "server", "tls", "client-ca.crt"))
	for file, want := range map[string]struct {
		cn, ca string
		orgs   []string
	}{
		"serving-kubelet":       {"agent1", string(serverCA), nil},
		"client-kubelet":        {"system:node:agent1", string(clientCA), []string{"system:nodes"}},
		"client-kube-proxy":     {"system:kube-proxy", string(clientCA), nil},
		"client-k3s-controller": {"system:k3s-controller", string(clientCA), nil},
	} {
		pair, err := tls.LoadX509KeyPair(lay.AgentFile(file+".crt"), lay.AgentFile(file+".key"))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		if leaf.Subject.CommonName != want.cn || strings.Join(leaf.Subject.Organization, ",") != strings.Join(want.orgs, ",") {
			t.Errorf("%s: subject %v", file, leaf.Subject)
		}
		caCert, _ := certs.ParseCert([]byte(want.ca))
		if err := leaf.CheckSignatureFrom(caCert); err != nil {
			t.Errorf("%s: %v", file, err)
		}
		if file == "serving-kubelet" && (len(leaf.IPAddresses) != 2 || leaf.IPAddresses[1].String() != "192.0.2.7") {
			t.Errorf("serving SANs %v", leaf.IPAddresses)
		}
	}
	for _, kc := range []string{"kubelet.kubeconfig", "kubeproxy.kubeconfig", "k3scontroller.kubeconfig"} {
		data, err := os.ReadFile(lay.AgentFile(kc))
		if err != nil || !strings.Contains(string(data), "https://127.0.0.1:6444") {
			t.Errorf("%s: %v\n%s", kc, err, data)
		}
	}
	if _, ok := c.api.secrets["agent1.node-password.k3s"]; !ok {
		t.Errorf("no node-password secret: %v", c.api.secrets)
	}

	// Joining again with the same dir keeps every certificate.
	j := &agent.Join{ServerURL: c.url, Token: c.serverToken.Agent, NodeName: "agent1", NodePassword: "pw1", NodeIPs: []netip.Addr{netip.MustParseAddr("192.0.2.7")}, DataDir: dir, LBPort: 6444}
	again, err := j.Run(context.Background())
	if err != nil || len(again.Fetched) != 0 {
		t.Errorf("rejoin: fetched %v, %v", again.Fetched, err)
	}

	// The server token and a bare password join too.
	if _, _, err := c.join(t, c.serverToken.Server, "agent2", "pw2"); err != nil {
		t.Errorf("server token: %v", err)
	}
	if _, _, err := c.join(t, token.Token{Password: "agentsecret"}, "agent3", "pw3"); err != nil {
		t.Errorf("bare password: %v", err)
	}
	// A bootstrap token (k3s token create) joins with bearer auth,
	// checked by the API server's TokenReview.
	boot, _ := token.Parse("K10" + c.serverToken.Agent.CAHash + "::abcdef.0123456789abcdef")
	if _, _, err := c.join(t, boot, "agent4", "pw4"); err != nil {
		t.Errorf("bootstrap token: %v", err)
	}
}

func TestJoinRefusals(t *testing.T) {
	c := startServer(t)
	wrongPass := c.serverToken.Agent
	wrongPass.Password = "nope"
	if _, _, err := c.join(t, wrongPass, "a", "pw"); !errors.Is(err, agent.ErrWrongToken) {
		t.Errorf("wrong password: %v", err)
	}
	expired, _ := token.Parse("K10" + c.serverToken.Agent.CAHash + "::zzzzzz.0000000000000000")
	if _, _, err := c.join(t, expired, "a", "pw"); !errors.Is(err, agent.ErrWrongToken) {
		t.Errorf("unknown bootstrap token: %v", err)
	}
	wrongCA := c.serverToken.Agent
	wrongCA.CAHash = strings.Repeat("0", 64)
	if _, _, err := c.join(t, wrongCA, "a", "pw"); !errors.Is(err, token.ErrCAHash) {
		t.Errorf("wrong CA hash: %v", err)
	}
	if _, _, err := c.join(t, c.serverToken.Agent, "taken", "pw-a"); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.join(t, c.serverToken.Agent, "taken", "pw-b")
	if !errors.Is(err, agent.ErrNodeRejected) || !strings.Contains(err.Error(), "node password rejected") {
		t.Errorf("same name, other password: %v", err)
	}
	j := &agent.Join{ServerURL: "https://127.0.0.1:1", Token: c.serverToken.Agent, NodeName: "x", NodePassword: "p", DataDir: t.TempDir(), LBPort: 6444}
	if _, err := j.Run(context.Background()); !errors.Is(err, agent.ErrUnreachable) {
		t.Errorf("unreachable: %v", err)
	}
}

// TestAPIProxy: the supervisor passes a client certificate's identity as
// front-proxy headers, passes bearer tokens through, and drops headers a
// client made up.
func TestAPIProxy(t *testing.T) {
	c := startServer(t)
	tlsDir := filepath.Join(c.dataDir, "server", "tls")
	caPEM, _ := os.ReadFile(filepath.Join(tlsDir, "server-ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	admin, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "client-admin.crt"), filepath.Join(tlsDir, "client-admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	ask := func(cert *tls.Certificate, hdr map[string]string) map[string]any {
		cfg := &tls.Config{RootCAs: pool}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		req, _ := http.NewRequest(http.MethodGet, c.url+"/api/v1/namespaces", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	got := ask(&admin, map[string]string{"X-Remote-User": "mallory", "Authorization": "Bearer x"})
	if got["user"] != "system:admin" || got["peer"] != "system:auth-proxy" || got["authorization"] != "" {
		t.Errorf("client certificate: %v", got)
	}
	if gs, _ := got["groups"].([]any); len(gs) != 1 || gs[0] != "system:masters" {
		t.Errorf("groups: %v", got["groups"])
	}
	got = ask(nil, map[string]string{"X-Remote-User": "mallory", "X-Remote-Group": "system:masters", "Authorization": "Bearer sa-token"})
	if got["user"] != "" || got["groups"] != nil || got["authorization"] != "Bearer sa-token" {
		t.Errorf("bearer token: %v", got)
	}
	// The kubernetes Service's endpoints name the supervisor's port.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.api.mu.Lock()
		ep := c.api.applied["/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes"]
		c.api.mu.Unlock()
		if strings.Contains(ep, `"port":`+strings.TrimPrefix(c.url[strings.LastIndex(c.url, ":"):], ":")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpointslice not applied with the supervisor port: %q", ep)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRotateToken: k3s token rotate needs the server token; afterwards the
// old server token no longer joins, the new one does, and the separate
// agent token is left alone.
func TestRotateToken(t *testing.T) {
	c := startServer(t)
	ctx := context.Background()
	if err := agent.RotateToken(ctx, c.url, c.serverToken.Agent, "newpw"); !errors.Is(err, agent.ErrWrongToken) {
		t.Errorf("rotate with the agent token: %v", err)
	}
	wrongCA := c.serverToken.Server
	wrongCA.CAHash = strings.Repeat("0", 64)
	if err := agent.RotateToken(ctx, c.url, wrongCA, "newpw"); !errors.Is(err, token.ErrCAHash) {
		t.Errorf("rotate against another CA: %v", err)
	}
	// A bare server password is sent as user "server".
	if err := agent.RotateToken(ctx, c.url, token.Token{Password: c.serverToken.Server.Password}, "newpw"); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if _, _, err := c.join(t, c.serverToken.Server, "agent1", "pw1"); !errors.Is(err, agent.ErrWrongToken) {
		t.Errorf("join with the old server token: %v", err)
	}
	newTok := c.serverToken.Server
	newTok.Password = "newpw"
	if _, _, err := c.join(t, newTok, "agent2", "pw2"); err != nil {
		t.Errorf("join with the new server token: %v", err)
	}
	if _, _, err := c.join(t, c.serverToken.Agent, "agent3", "pw3"); err != nil {
		t.Errorf("join with the agent token: %v", err)
	}
	data, _ := os.ReadFile(datadir.Layout{Root: c.dataDir}.TokenFile())
	if strings.TrimSpace(string(data)) != newTok.String() {
		t.Errorf("server/token = %q, want %q", data, newTok.String())
	}
}
