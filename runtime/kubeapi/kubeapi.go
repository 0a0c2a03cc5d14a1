// Package kubeapi is the little of the Kubernetes REST API that the k3s
// process itself needs (node-password secrets, the kubernetes Endpoints,
// token reviews, bootstrap tokens), spoken as JSON over plain HTTP so
// that the k3s process and the CLI stay light: client-go would add its
// caches and tens of MB to a process that does a few requests a minute.
package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Client asks one API server.
type Client struct {
	Base string // https://127.0.0.1:6444
	HTTP *http.Client
}

// New is a client of base that trusts caPEM and authenticates with the
// client certificate pair (nil: none).
func New(base string, caPEM []byte, cert *tls.Certificate) (*Client, error) {
	var get func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	if cert != nil {
		get = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return NewWithClientCert(base, caPEM, get)
}

// NewWithClientCert is New with the client certificate asked for at each
// handshake (certs.KeyPair.GetClientCertificate: a rotated certificate is
// used from the next connection on); nil: none.
func NewWithClientCert(base string, caPEM []byte, get func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) (*Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("kubeapi: no CA certificates")
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, GetClientCertificate: get}
	return &Client{Base: strings.TrimSuffix(base, "/"), HTTP: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}}, nil
}

// ErrNotFound and ErrConflict are the API's 404 and 409.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("already exists")
)

// StatusError is any other non-2xx answer.
type StatusError struct {
	Method, Path, Status, Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.Path, e.Status, e.Message)
}

// Do sends body (JSON-encoded unless nil) with contentType and decodes a
// 2xx answer into out (when not nil; a *[]byte gets the body as it is).
func (k *Client) Do(ctx context.Context, method, path, contentType string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.Base+path, rd)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s %s: %w", method, path, ErrNotFound)
	case resp.StatusCode == http.StatusConflict:
		return fmt.Errorf("%s %s: %w", method, path, ErrConflict)
	case resp.StatusCode/100 != 2:
		var st struct{ Message string }
		_ = json.Unmarshal(data, &st)
		return &StatusError{Method: method, Path: path, Status: resp.Status, Message: st.Message}
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*[]byte); ok { // the body as it came (/metrics)
		*raw = data
		return nil
	}
	return json.Unmarshal(data, out)
}

// Apply is a server-side apply of obj (JSON is valid apply YAML) by
// fieldManager, forced: the caller owns what it writes.
func (k *Client) Apply(ctx context.Context, path, fieldManager string, obj any) error {
	return k.Do(ctx, http.MethodPatch, path+"?fieldManager="+url.QueryEscape(fieldManager)+"&force=true", "application/apply-patch+yaml", obj, nil)
}

// ObjectMeta is the metadata this package's callers write.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Secret is a core/v1 Secret.
type Secret struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   ObjectMeta        `json:"metadata"`
	Immutable  bool              `json:"immutable,omitempty"`
	Type       string            `json:"type,omitempty"`
	Data       map[string][]byte `json:"data,omitempty"`
	StringData map[string]string `json:"stringData,omitempty"`
}

// FromKubeconfig is a client for the current context of a kubeconfig
// that holds its credentials inline (k3s.yaml) or names their files.
func FromKubeconfig(path string) (*Client, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var kc struct {
		CurrentContext string `yaml:"current-context"`
		Contexts       []struct {
			Name    string
			Context struct{ Cluster, User string }
		}
		Clusters []struct {
			Name    string
			Cluster struct {
				Server   string
				CAData   string `yaml:"certificate-authority-data"`
				CAFile   string `yaml:"certificate-authority"`
				Insecure bool   `yaml:"insecure-skip-tls-verify"`
			}
		}
		Users []struct {
			Name string
			User struct {
				CertData string `yaml:"client-certificate-data"`
				KeyData  string `yaml:"client-key-data"`
				CertFile string `yaml:"client-certificate"`
				KeyFile  string `yaml:"client-key"`
			}
		}
	}
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	clusterName, userName := "", ""
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext || kc.CurrentContext == "" {
			clusterName, userName = c.Context.Cluster, c.Context.User
			break
		}
	}
	blob := func(inline, file string) ([]byte, error) {
		if inline != "" {
			return base64.StdEncoding.DecodeString(inline)
		}
		if file == "" {
			return nil, nil
		}
		return os.ReadFile(file)
	}
	for _, c := range kc.Clusters {
		if c.Name != clusterName {
			continue
		}
		ca, err := blob(c.Cluster.CAData, c.Cluster.CAFile)
		if err != nil || len(ca) == 0 {
			return nil, fmt.Errorf("kubeconfig %s: cluster %s: no usable certificate authority (%v)", path, clusterName, err)
		}
		var cert *tls.Certificate
		for _, u := range kc.Users {
			if u.Name != userName {
				continue
			}
			certPEM, err1 := blob(u.User.CertData, u.User.CertFile)
			keyPEM, err2 := blob(u.User.KeyData, u.User.KeyFile)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("kubeconfig %s: user %s: %w", path, userName, err)
			}
			if len(certPEM) > 0 {
				pair, err := tls.X509KeyPair(certPEM, keyPEM)
				if err != nil {
					return nil, fmt.Errorf("kubeconfig %s: user %s: %w", path, userName, err)
				}
				cert = &pair
			}
		}
		return New(c.Cluster.Server, ca, cert)
	}
	return nil, fmt.Errorf("kubeconfig %s: no cluster for context %q", path, kc.CurrentContext)
}

// Event is one watch event.
type Event struct {
	Type   string // ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
	Object json.RawMessage
}

// Watch streams the events of a collection path (e.g. /api/v1/nodes,
// or /api/v1/pods?labelSelector=app)
// from resourceVersion until ctx ends, the server closes the stream (its
// request timeout), or f returns an error; it returns that error, or nil
// when the stream ended. An ERROR event (e.g. 410 Gone: the version is too
// old) is returned as an error: list again.
func (k *Client) Watch(ctx context.Context, path, resourceVersion string, f func(Event) error) error {
	q := url.Values{"watch": {"1"}, "resourceVersion": {resourceVersion}, "allowWatchBookmarks": {"true"}}
	sep := "?" // path may carry a query of its own (a labelSelector)
	if strings.Contains(path, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.Base+path+sep+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	// A watch lasts as long as the server keeps it: no client timeout.
	hc := *k.HTTP
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return &StatusError{Method: "WATCH", Path: path, Status: resp.Status, Message: strings.TrimSpace(string(body))}
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch %s: %w", path, err)
		}
		if ev.Type == "ERROR" {
			return fmt.Errorf("watch %s: %s", path, ev.Object)
		}
		if err := f(ev); err != nil {
			return err
		}
	}
}

// Follow runs f (typically a list, then a watch from its version) again
// and again until ctx ends, retry apart (2 s when 0): a watch ends when
// the API server restarts or times it out, and the caller lists again.
// report gets each error, but not the same one twice in a row.
func Follow(ctx context.Context, retry time.Duration, report func(error), f func(context.Context) error) {
	if retry == 0 {
		retry = 2 * time.Second
	}
	last := ""
	for ctx.Err() == nil {
		if err := f(ctx); err != nil && ctx.Err() == nil && err.Error() != last {
			last = err.Error()
			report(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}
