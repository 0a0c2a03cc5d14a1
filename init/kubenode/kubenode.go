// Package kubenode follows the Kubernetes node the image's runtime runs,
// for the init's status: it reads the admin kubeconfig k3s writes
// (/etc/rancher/k3s/k3s.yaml) and asks the API server for /readyz and the
// node's Ready condition over plain HTTPS, so it works the same for
// ballast's runtime and the official k3s binary and links no Kubernetes
// client.
package kubenode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Client talks to one API server as the kubeconfig's user.
type Client struct {
	Server string
	HTTP   *http.Client
}

type kubeconfig struct {
	Clusters []struct {
		Cluster struct {
			Server                   string `yaml:"server"`
			CertificateAuthorityData string `yaml:"certificate-authority-data"`
			CertificateAuthority     string `yaml:"certificate-authority"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		User struct {
			ClientCertificateData string `yaml:"client-certificate-data"`
			ClientKeyData         string `yaml:"client-key-data"`
			ClientCertificate     string `yaml:"client-certificate"`
			ClientKey             string `yaml:"client-key"`
			Token                 string `yaml:"token"`
		} `yaml:"user"`
	} `yaml:"users"`
}

// FromKubeconfig builds a client from the first cluster and user of the
// kubeconfig at path (embedded data or file paths, client certificate or
// bearer token).
func FromKubeconfig(path string) (*Client, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseKubeconfig(path, data)
}

// ParseKubeconfig is FromKubeconfig on data already read (name is for errors).
func ParseKubeconfig(name string, data []byte) (*Client, error) {
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(kc.Clusters) == 0 || kc.Clusters[0].Cluster.Server == "" {
		return nil, fmt.Errorf("%s: no cluster server", name)
	}
	cl := kc.Clusters[0].Cluster
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	ca, err := dataOrFile(cl.CertificateAuthorityData, cl.CertificateAuthority)
	if err != nil {
		return nil, fmt.Errorf("%s: certificate-authority: %w", name, err)
	}
	if len(ca) > 0 {
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("%s: certificate-authority: no certificates", name)
		}
	}
	var token string
	if len(kc.Users) > 0 {
		u := kc.Users[0].User
		token = u.Token
		cert, err := dataOrFile(u.ClientCertificateData, u.ClientCertificate)
		if err != nil {
			return nil, fmt.Errorf("%s: client-certificate: %w", name, err)
		}
		key, err := dataOrFile(u.ClientKeyData, u.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("%s: client-key: %w", name, err)
		}
		if len(cert) > 0 {
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				return nil, fmt.Errorf("%s: client certificate: %w", name, err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
	}
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: cfg}
	if token != "" {
		rt = bearer{token, rt}
	}
	return &Client{Server: strings.TrimSuffix(cl.Server, "/"), HTTP: &http.Client{Timeout: 5 * time.Second, Transport: rt}}, nil
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func dataOrFile(b64, path string) ([]byte, error) {
	if b64 != "" {
		return base64.StdEncoding.DecodeString(b64)
	}
	if path != "" {
		return os.ReadFile(path)
	}
	return nil, nil
}

// Get is the body of GET path; a *StatusError for an answer other than 200.
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) { return c.get(ctx, path) }

func (c *Client) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, &StatusError{Path: path, Code: resp.StatusCode}
	}
	return body, nil
}

// StatusError is a non-200 answer.
type StatusError struct {
	Path string
	Code int
}

func (e *StatusError) Error() string { return fmt.Sprintf("GET %s: HTTP %d", e.Path, e.Code) }

// APIReady is nil once the API server answers /readyz with ok.
func (c *Client) APIReady(ctx context.Context) error {
	_, err := c.get(ctx, "/readyz")
	return err
}

// NodeReady is the node's Ready condition, counted only when the kubelet
// reported it at or after since (the condition's lastHeartbeatTime): after
// a reboot the API server still holds the Ready the previous boot's kubelet
// wrote until this boot's kubelet reports. A *StatusError with Code 404
// while the node has not registered.
func (c *Client) NodeReady(ctx context.Context, name string, since time.Time) (bool, error) {
	body, err := c.get(ctx, "/api/v1/nodes/"+url.PathEscape(name))
	if err != nil {
		return false, err
	}
	var n struct {
		Status struct {
			Conditions []struct {
				Type, Status      string
				LastHeartbeatTime time.Time
			}
		}
	}
	if err := json.Unmarshal(body, &n); err != nil {
		return false, fmt.Errorf("node %s: %w", name, err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			// The API keeps whole seconds.
			return c.Status == "True" && !c.LastHeartbeatTime.Before(since.Truncate(time.Second)), nil
		}
	}
	return false, nil
}
