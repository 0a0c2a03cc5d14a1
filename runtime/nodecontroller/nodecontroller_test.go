package nodecontroller

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

type fakeAPI struct {
	mu      sync.Mutex
	nodes   map[string]string // name -> InternalIP
	hosts   *string           // the ConfigMap's NodeHosts; nil: no ConfigMap
	applied int
	deleted []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/nodes":
		var items []any
		for n, ip := range f.nodes {
			items = append(items, map[string]any{"metadata": map[string]any{"name": n}, "status": map[string]any{"addresses": []any{
				map[string]string{"type": "InternalIP", "address": ip}, map[string]string{"type": "Hostname", "address": n}}}})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"items": items})
	case r.URL.Path == "/api/v1/namespaces/kube-system/configmaps/coredns":
		if f.hosts == nil {
			http.Error(w, "{}", http.StatusNotFound)
			return
		}
		if r.Method == http.MethodPatch {
			if r.URL.Query().Get("fieldManager") != FieldManager || r.Header.Get("Content-Type") != "application/apply-patch+yaml" {
				http.Error(w, "not an apply by the node controller", http.StatusBadRequest)
				return
			}
			var cm struct{ Data map[string]string }
			body, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(body, &cm)
			h := cm.Data["NodeHosts"]
			f.hosts = &h
			f.applied++
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]string{"Corefile": ".:53 {}", "NodeHosts": *f.hosts}})
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/kube-system/secrets/"):
		f.deleted = append(f.deleted, strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/kube-system/secrets/"))
	default:
		http.NotFound(w, r)
	}
}

func TestSync(t *testing.T) {
	empty := ""
	f := &fakeAPI{nodes: map[string]string{"server": "10.0.0.2", "agent1": "10.0.0.3"}, hosts: &empty}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := &Controller{API: &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}}
	ctx := context.Background()
	known, err := c.Sync(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "10.0.0.3 agent1\n10.0.0.2 server\n"; *f.hosts != want || f.applied != 1 {
		t.Fatalf("NodeHosts %q (%d applies), want %q", *f.hosts, f.applied, want)
	}
	// Unchanged: no write.
	if known, err = c.Sync(ctx, known); err != nil || f.applied != 1 {
		t.Fatalf("second pass: %v, %d applies", err, f.applied)
	}
	// agent1 deleted: its line and its password secret go.
	delete(f.nodes, "agent1")
	if _, err := c.Sync(ctx, known); err != nil {
		t.Fatal(err)
	}
	if *f.hosts != "10.0.0.2 server\n" || len(f.deleted) != 1 || f.deleted[0] != "agent1.node-password.k3s" {
		t.Errorf("after deleting agent1: hosts %q, deleted %v", *f.hosts, f.deleted)
	}
	// No CoreDNS (disabled): nothing to write, no error.
	f.hosts = nil
	if _, err := c.Sync(ctx, nil); err != nil {
		t.Errorf("without coredns: %v", err)
	}
}
