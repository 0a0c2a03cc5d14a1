// Package agent is what `k3s agent` does before it starts the node's
// components (k3s pkg/agent/config): pin the server's CA through the join
// token, fetch the cluster's settings, have the server sign certificates
// for the node's own keys, and write the kubeconfigs that point at the
// agent's load balancer.
package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/supervisor"
	"github.com/ballast-os/ballast/runtime/token"
)

// Join is one agent's join to a server.
type Join struct {
	ServerURL    string // --server, https://host:6443
	Token        token.Token
	NodeName     string
	NodePassword string // /etc/rancher/node/password
	NodeIPs      []netip.Addr
	DataDir      string
	LBPort       int // lb-server-port (6444): where the kubeconfigs point
	// Now is the clock for the renewal checks; nil means time.Now.
	Now func() time.Time

	c *client // after Run: the join API with the pinned CA
}

// Joined is what the server told the agent.
type Joined struct {
	Cluster    supervisor.ClusterConfig
	APIServers []string // host:port of every server's supervisor
	// Fetched lists the certificates that were (re)issued this time.
	Fetched []string
}

// Errors a person must act on; each Join error wraps one, so that the
// agent can say which in one line.
var (
	ErrUnreachable = errors.New("cannot reach the server")
	ErrWrongToken  = errors.New("the server refused the token")
	// ErrConflict: the server's state does not allow the request (409).
	ErrConflict     = errors.New("refused by the server")
	ErrNodeRejected = errors.New("the server refused this node")
)

// Run does the join. It is safe to repeat: keys are kept, and certificates
// are fetched again only when missing, due for renewal, or signed by
// another CA.
func (j *Join) Run(ctx context.Context) (*Joined, error) {
	c, err := connect(ctx, j.ServerURL, j.Token)
	if err != nil {
		return nil, err
	}
	j.c = c
	out := &Joined{}
	if err := c.getJSON(ctx, "/config", &out.Cluster); err != nil {
		return nil, err
	}
	lay := datadir.Layout{Root: j.DataDir}
	cas := map[string][]byte{}
	for _, name := range []string{"server-ca.crt", "client-ca.crt"} {
		data, err := c.get(ctx, "/"+name)
		if err != nil {
			return nil, err
		}
		if _, err := certs.ParseCert(data); err != nil {
			return nil, fmt.Errorf("%s/v1-%s/%s: %w", c.base, supervisor.Program, name, err)
		}
		if err := certs.WriteFile(lay.AgentFile(name), data, 0o644); err != nil {
			return nil, err
		}
		cas[name] = data
	}
	if out.Fetched, err = j.certificates(ctx, c, lay, cas); err != nil {
		return nil, err
	}
	if err := c.getJSON(ctx, "/apiservers", &out.APIServers); err != nil {
		return nil, err
	}
	if err := j.kubeconfigs(lay); err != nil {
		return nil, err
	}
	return out, nil
}

// APIServers asks the server again for the servers' supervisor
// addresses (after Run), for the load balancer to follow.
func (j *Join) APIServers(ctx context.Context) ([]string, error) {
	if j.c == nil {
		return nil, errors.New("agent: APIServers before a successful join")
	}
	var out []string
	return out, j.c.getJSON(ctx, "/apiservers", &out)
}

// connect fetches the CA bundle of the server at serverURL, checks it
// against the token's hash, and returns the join API trusting that CA
// and authenticating with tok.
func connect(ctx context.Context, serverURL string, tok token.Token) (*client, error) {
	base, err := url.Parse(strings.TrimSuffix(serverURL, "/"))
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("--server %q: want https://HOST:PORT", serverURL)
	}
	caPEM, err := cacerts(ctx, base)
	if err != nil {
		return nil, err
	}
	if err := tok.VerifyCA(caPEM); err != nil {
		return nil, fmt.Errorf("%s/cacerts: %w (is --token from this server's %s?)", base, err, "/var/lib/rancher/k3s/server/token")
	}
	return pinnedClient(base, caPEM, tok)
}

// cacerts fetches the server's CA bundle without trusting anything yet:
// the token's hash is what makes it trusted.
func cacerts(ctx context.Context, base *url.URL) ([]byte, error) {
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		// The answer is checked against the token's hash before use.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.String()+"/cacerts", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrUnreachable, base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrUnreachable, base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/cacerts: %s (is this a k3s server's https-listen-port?)", base, resp.Status)
	}
	return data, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// leafSpec is one certificate the agent holds.
type leafSpec struct {
	endpoint string // under /v1-k3s/
	file     string // agent/<file>.crt and .key
	cn       string
	ca       string // which CA signs it
}

func (j *Join) leaves() []leafSpec {
	return []leafSpec{
		{"serving-kubelet.crt", "serving-kubelet", j.NodeName, "server-ca.crt"},
		{"client-kubelet.crt", "client-kubelet", "system:node:" + j.NodeName, "client-ca.crt"},
		{"client-kube-proxy.crt", "client-kube-proxy", "system:kube-proxy", "client-ca.crt"},
		{"client-" + supervisor.Program + "-controller.crt", "client-" + supervisor.Program + "-controller", "system:" + supervisor.Program + "-controller", "client-ca.crt"},
	}
}

func (j *Join) certificates(ctx context.Context, c *client, lay datadir.Layout, cas map[string][]byte) ([]string, error) {
	now := time.Now
	if j.Now != nil {
		now = j.Now
	}
	var fetched []string
	for _, l := range j.leaves() {
		certFile, keyFile := lay.AgentFile(l.file+".crt"), lay.AgentFile(l.file+".key")
		if err := certs.CheckLeaf(certFile, keyFile, cas[l.ca], l.cn, now()); err == nil {
			continue
		}
		csr, err := certs.KeyAndCSR(keyFile, l.cn)
		if err != nil {
			return nil, err
		}
		hdr := http.Header{}
		hdr.Set(supervisor.HeaderNodeName, j.NodeName)
		hdr.Set(supervisor.HeaderNodePassword, j.NodePassword)
		var ips []string
		for _, a := range j.NodeIPs {
			ips = append(ips, a.String())
		}
		hdr.Set(supervisor.HeaderNodeIP, strings.Join(ips, ","))
		chain, err := c.post(ctx, "/"+l.endpoint, hdr, csr)
		if err != nil {
			return nil, err
		}
		if _, err := certs.ParseCert(chain); err != nil {
			return nil, fmt.Errorf("%s: %w", l.endpoint, err)
		}
		if err := certs.WriteFile(certFile, chain, 0o644); err != nil {
			return nil, err
		}
		fetched = append(fetched, certFile)
	}
	return fetched, nil
}

// kubeconfigs point the kubelet, kube-proxy and flannel (as
// system:k3s-controller) at the load balancer.
func (j *Join) kubeconfigs(lay datadir.Layout) error {
	server := fmt.Sprintf("https://127.0.0.1:%d", j.LBPort)
	ca := lay.AgentFile("server-ca.crt")
	for kc, leaf := range map[string]string{
		"kubelet.kubeconfig":       "client-kubelet",
		"kubeproxy.kubeconfig":     "client-kube-proxy",
		"k3scontroller.kubeconfig": "client-" + supervisor.Program + "-controller",
	} {
		data, err := certs.Kubeconfig(server, ca, lay.AgentFile(leaf+".crt"), lay.AgentFile(leaf+".key"), false)
		if err != nil {
			return err
		}
		if err := certs.WriteFile(filepath.Join(lay.Agent(), kc), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// client speaks the join API with the token's credentials.
// pinnedClient is the join API at base, trusting caPEM (checked against
// the token already) and authenticating with tok.
func pinnedClient(base *url.URL, caPEM []byte, tok token.Token) (*client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s/cacerts: no certificates in the answer", base)
	}
	return &client{base: base.String(), token: tok, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}}, nil
}

type client struct {
	base  string
	token token.Token
	http  *http.Client
}

func (c *client) do(ctx context.Context, method, path string, hdr http.Header, body []byte) ([]byte, error) {
	return c.doURL(ctx, method, c.base+"/v1-"+supervisor.Program+path, hdr, body)
}

// doURL is do for a path outside /v1-k3s (/db/info).
func (c *client) doURL(ctx context.Context, method, u string, hdr http.Header, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	switch user := c.token.Username; {
	case c.token.Bootstrap():
		req.Header.Set("Authorization", "Bearer "+c.token.Password)
	case user == "":
		req.SetBasicAuth("node", c.token.Password) // a bare password joins as an agent, as in k3s
	default:
		req.SetBasicAuth(user, c.token.Password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrUnreachable, c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	msg := strings.TrimSpace(string(data))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("%w (%s): check --token / K3S_TOKEN against the server's /var/lib/rancher/k3s/server/token", ErrWrongToken, resp.Status)
	case resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("%w: %s", ErrNodeRejected, msg)
	case resp.StatusCode == http.StatusConflict:
		return nil, fmt.Errorf("%w: %s", ErrConflict, msg)
	case resp.StatusCode/100 != 2:
		return nil, fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, msg)
	}
	return data, nil
}

func (c *client) get(ctx context.Context, path string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, path, nil, nil)
}

func (c *client) getJSON(ctx context.Context, path string, out any) error {
	data, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s/v1-%s%s: %w", c.base, supervisor.Program, path, err)
	}
	return nil
}

// getJSONAt is getJSON for a path outside /v1-k3s.
func (c *client) getJSONAt(ctx context.Context, path string, out any) error {
	data, err := c.doURL(ctx, http.MethodGet, c.base+path, nil, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s%s: %w", c.base, path, err)
	}
	return nil
}

func (c *client) post(ctx context.Context, path string, hdr http.Header, body []byte) ([]byte, error) {
	return c.do(ctx, http.MethodPost, path, hdr, body)
}
