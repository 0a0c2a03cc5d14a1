package kubenode

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// kubeconfigFor is a kubeconfig pointing at srv with its CA embedded and
// a bearer token.
func kubeconfigFor(srv *httptest.Server) []byte {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- cluster:
    server: %s
    certificate-authority-data: %s
  name: default
users:
- name: default
  user:
    token: secret
`, srv.URL, base64.StdEncoding.EncodeToString(ca))
}

func TestNodeReadyThroughKubeconfig(t *testing.T) {
	nodes := map[string]string{
		"ready":    `{"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True","lastHeartbeatTime":"2026-11-26T10:00:05Z"}]}}`,
		"notready": `{"status":{"conditions":[{"type":"Ready","status":"False","lastHeartbeatTime":"2026-11-26T10:00:05Z"}]}}`,
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/readyz" {
			fmt.Fprint(w, "ok")
			return
		}
		body, ok := nodes[r.URL.Path[len("/api/v1/nodes/"):]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	c, err := ParseKubeconfig("k3s.yaml", kubeconfigFor(srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.APIReady(ctx); err != nil {
		t.Fatalf("APIReady: %v", err)
	}
	boot := time.Date(2026, 11, 26, 10, 0, 5, 700e6, time.UTC) // same second as the heartbeat
	if r, err := c.NodeReady(ctx, "ready", boot); err != nil || !r {
		t.Errorf("NodeReady(ready) = %v, %v; want true", r, err)
	}
	// A Ready the previous boot's kubelet reported is not this boot's.
	if r, err := c.NodeReady(ctx, "ready", boot.Add(time.Second)); err != nil || r {
		t.Errorf("NodeReady(ready, heartbeat before this boot) = %v, %v; want false", r, err)
	}
	if r, err := c.NodeReady(ctx, "notready", boot); err != nil || r {
		t.Errorf("NodeReady(notready) = %v, %v; want false", r, err)
	}
	_, err = c.NodeReady(ctx, "absent", boot)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Errorf("NodeReady(absent) error = %v; want HTTP 404", err)
	}
}

func TestParseKubeconfigErrorsNameTheFile(t *testing.T) {
	for _, data := range []string{"clusters: [", "clusters: []", "clusters:\n- cluster:\n    server: https://x\n    certificate-authority-data: bm90IGEgY2VydA==\n"} {
		if _, err := ParseKubeconfig("/etc/rancher/k3s/k3s.yaml", []byte(data)); err == nil || !strings.Contains(err.Error(), "/etc/rancher/k3s/k3s.yaml") {
			t.Errorf("%q: error %v does not name the file", data, err)
		}
	}
}
