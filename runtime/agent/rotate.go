package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/ballast-os/ballast/runtime/supervisor"
	"github.com/ballast-os/ballast/runtime/token"
)

// RotateToken asks the server at serverURL to change its token to
// newToken (a random one when empty), as `k3s token rotate` does: current
// is the server's token, checked against the server's CA like a join,
// and sent as user "server" whatever user it names.
func RotateToken(ctx context.Context, serverURL string, current token.Token, newToken string) error {
	base, err := url.Parse(strings.TrimSuffix(serverURL, "/"))
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return fmt.Errorf("--server %q: want https://HOST:PORT", serverURL)
	}
	j := &Join{Token: current}
	caPEM, err := j.cacerts(ctx, base)
	if err != nil {
		return err
	}
	if err := current.VerifyCA(caPEM); err != nil {
		return fmt.Errorf("%s/cacerts: %w", base, err)
	}
	current.Username = "server"
	c, err := pinnedClient(base, caPEM, current)
	if err != nil {
		return err
	}
	body, err := json.Marshal(supervisor.TokenRotateRequest{NewToken: &newToken})
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPut, "/token", http.Header{"Content-Type": {"application/json"}}, body)
	return err
}
