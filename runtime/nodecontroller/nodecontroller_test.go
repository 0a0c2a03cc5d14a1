package nodecontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

func nodeJSON(name, ip string) map[string]any {
	return map[string]any{"metadata": map[string]any{"name": name}, "status": map[string]any{"addresses": []any{
		map[string]string{"type": "InternalIP", "address": ip}, map[string]string{"type": "Hostname", "address": name}}}}
}

// fakeAPI lists two nodes, then streams the events the test sends.
type fakeAPI struct {
	events  chan map[string]any
	mu      sync.Mutex
	hosts   string
	deleted []string
	items   []any // the list; two nodes when nil
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/api/v1/nodes" && r.URL.Query().Get("watch") == "1":
		if r.URL.Query().Get("resourceVersion") != "42" {
			http.Error(w, "watch must start at the list's resourceVersion", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-f.events:
				if ev["type"] == "CLOSE" { // the watch ends
					return
				}
				_ = json.NewEncoder(w).Encode(ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	case r.URL.Path == "/api/v1/nodes":
		f.mu.Lock()
		items := f.items
		f.mu.Unlock()
		if items == nil {
			items = []any{nodeJSON("server", "10.0.0.2"), nodeJSON("agent1", "10.0.0.3")}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"resourceVersion": "42"}, "items": items})
	case r.URL.Path == "/api/v1/namespaces/kube-system/configmaps/coredns":
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.Method == http.MethodPatch {
			if r.URL.Query().Get("fieldManager") != FieldManager || r.Header.Get("Content-Type") != "application/apply-patch+yaml" {
				http.Error(w, "not an apply by the node controller", http.StatusBadRequest)
				return
			}
			var cm struct{ Data map[string]string }
			body, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(body, &cm)
			f.hosts = cm.Data["NodeHosts"]
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]string{"Corefile": ".:53 {}", "NodeHosts": f.hosts}})
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/kube-system/secrets/"):
		f.mu.Lock()
		f.deleted = append(f.deleted, strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/kube-system/secrets/"))
		f.mu.Unlock()
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeAPI) wait(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		done := ok()
		f.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			f.mu.Lock()
			defer f.mu.Unlock()
			t.Fatalf("%s: hosts %q, deleted %v", what, f.hosts, f.deleted)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRun(t *testing.T) {
	f := &fakeAPI{events: make(chan map[string]any)}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := &Controller{API: &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}, Logf: t.Logf}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); srv.CloseClientConnections(); <-done }()

	f.wait(t, "NodeHosts after the list", func() bool { return f.hosts == "10.0.0.3 agent1\n10.0.0.2 server\n" })
	f.events <- map[string]any{"type": "ADDED", "object": nodeJSON("agent2", "10.0.0.4")}
	f.wait(t, "agent2 added", func() bool { return strings.Contains(f.hosts, "10.0.0.4 agent2\n") })
	f.events <- map[string]any{"type": "DELETED", "object": nodeJSON("agent1", "10.0.0.3")}
	f.wait(t, "agent1 deleted", func() bool {
		return !strings.Contains(f.hosts, "agent1") && fmt.Sprint(f.deleted) == "[agent1.node-password.k3s]"
	})
}

func TestNodeHosts(t *testing.T) {
	got := NodeHosts(map[string]Node{"b": {Name: "b", Addresses: []string{"10.0.0.9", "10.0.0.1"}}, "a": {Name: "a", Addresses: []string{"fd00::1"}}})
	if want := "fd00::1 a\n10.0.0.1 b\n10.0.0.9 b\n"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

// TestDeletedWhileNotWatching: a node deleted between a watch's end and
// the next list is still handled (its password secret, the Deleted hook
// with its last annotations).
func TestDeletedWhileNotWatching(t *testing.T) {
	f := &fakeAPI{events: make(chan map[string]any)}
	srv := httptest.NewServer(f)
	defer srv.Close()
	var mu sync.Mutex
	var hooked []string
	c := &Controller{API: &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}, Logf: t.Logf, Retry: 10 * time.Millisecond,
		Deleted: func(_ context.Context, node string, annotations map[string]string) error {
			mu.Lock()
			defer mu.Unlock()
			hooked = append(hooked, node+"="+annotations["member"])
			return nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); srv.CloseClientConnections(); <-done }()

	f.wait(t, "NodeHosts after the list", func() bool { return strings.Contains(f.hosts, "agent1") })
	server2 := nodeJSON("server2", "10.0.0.5")
	server2["metadata"].(map[string]any)["annotations"] = map[string]string{"member": "server2-0123abcd"}
	f.events <- map[string]any{"type": "ADDED", "object": server2}
	f.wait(t, "server2 added", func() bool { return strings.Contains(f.hosts, "server2") })
	f.mu.Lock()
	f.items = []any{nodeJSON("server", "10.0.0.2")} // agent1 and server2 deleted while no watch runs
	f.mu.Unlock()
	f.events <- map[string]any{"type": "CLOSE"}
	f.wait(t, "deletions seen at the next list", func() bool {
		return !strings.Contains(f.hosts, "agent1") && len(f.deleted) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(hooked) != "[agent1= server2=server2-0123abcd]" && fmt.Sprint(hooked) != "[server2=server2-0123abcd agent1=]" {
		t.Errorf("Deleted hook calls %v", hooked)
	}
}
