package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/supervisor"
	"github.com/ballast-os/ballast/runtime/token"
)

// ServerClient is the join API of the server at serverURL for another
// server (or `k3s token rotate`): the server's CA checked against the
// token like a join, and the token sent as user "server" whatever user
// it names.
type ServerClient struct{ c *client }

// NewServerClient fetches and checks the CA of the server at serverURL.
func NewServerClient(ctx context.Context, serverURL string, tok token.Token) (*ServerClient, error) {
	tok.Username = "server" // checked against the CA with the hash it carries, whatever user it names
	c, err := connect(ctx, serverURL, tok)
	if err != nil {
		return nil, err
	}
	return &ServerClient{c: c}, nil
}

// Bootstrap fetches the cluster's CAs, keys and passwords
// (/v1-k3s/server-bootstrap).
func (s *ServerClient) Bootstrap(ctx context.Context) (supervisor.Bootstrap, error) {
	var b supervisor.Bootstrap
	return b, s.c.getJSON(ctx, "/server-bootstrap", &b)
}

// DBInfo decodes the server's /db/info (its etcd members) into out.
func (s *ServerClient) DBInfo(ctx context.Context, out any) error {
	return s.c.getJSONAt(ctx, "/db/info", out)
}

// EncryptStatus decodes the server's /v1-k3s/encrypt/status into out
// (`k3s secrets-encrypt status`).
func (s *ServerClient) EncryptStatus(ctx context.Context, out any) error {
	return s.c.getJSON(ctx, "/encrypt/status", out)
}

// EncryptConfig sends req to the server's /v1-k3s/encrypt/config (the
// other `k3s secrets-encrypt` commands) and returns its answer's line.
// rotate-keys answers once every Secret is re-encrypted: minutes, not the
// join API's 30 seconds.
func (s *ServerClient) EncryptConfig(ctx context.Context, req any) (string, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return "", err
	}
	c, hc := *s.c, *s.c.http
	hc.Timeout = 10 * time.Minute
	c.http = &hc
	out, err := c.do(ctx, http.MethodPut, "/encrypt/config", http.Header{"Content-Type": {"application/json"}}, body)
	return strings.TrimSpace(string(out)), err
}

// RotateCA sends new CA files to the server's /v1-k3s/cert/cacerts
// (`k3s certificate rotate-ca`); force stages them even when they do not
// chain to the current CAs.
func (s *ServerClient) RotateCA(ctx context.Context, req supervisor.RotateCARequest, force bool) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	path := "/cert/cacerts?force=false"
	if force {
		path = "/cert/cacerts?force=true"
	}
	_, err = s.c.do(ctx, http.MethodPut, path, http.Header{"Content-Type": {"application/json"}}, body)
	return err
}
