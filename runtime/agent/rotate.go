package agent

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/ballast-os/ballast/runtime/supervisor"
	"github.com/ballast-os/ballast/runtime/token"
)

// RotateToken asks the server at serverURL to change its token to
// newToken (a random one when empty), as `k3s token rotate` does: current
// is the server's token, checked against the server's CA like a join,
// and sent as user "server" whatever user it names.
func RotateToken(ctx context.Context, serverURL string, current token.Token, newToken string) error {
	sc, err := NewServerClient(ctx, serverURL, current)
	if err != nil {
		return err
	}
	body, err := json.Marshal(supervisor.TokenRotateRequest{NewToken: &newToken})
	if err != nil {
		return err
	}
	_, err = sc.c.do(ctx, http.MethodPut, "/token", http.Header{"Content-Type": {"application/json"}}, body)
	return err
}
