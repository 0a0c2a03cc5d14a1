package cloudprovider

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

func TestAddresses(t *testing.T) {
	for _, tc := range []struct {
		ann     map[string]string
		current []Address
		want    []Address
	}{
		{map[string]string{ProvidedNodeIP: "10.0.0.5"}, nil, []Address{{"InternalIP", "10.0.0.5"}, {"Hostname", "n1"}}},
		{map[string]string{ProvidedNodeIP: "10.0.0.5", InternalIPKey: "10.0.0.6,fd00::6", ExternalIPKey: "203.0.113.9", HostnameKey: "n1.lan"}, nil,
			[]Address{{"InternalIP", "10.0.0.6"}, {"InternalIP", "fd00::6"}, {"ExternalIP", "203.0.113.9"}, {"Hostname", "n1.lan"}}},
		{nil, []Address{{"InternalIP", "10.0.0.7"}, {"Hostname", "x"}}, []Address{{"InternalIP", "10.0.0.7"}, {"Hostname", "n1"}}},
	} {
		if got := Addresses("n1", tc.ann, tc.current); !slices.Equal(got, tc.want) {
			t.Errorf("%v %v: %v, want %v", tc.ann, tc.current, got, tc.want)
		}
	}
}

func TestSync(t *testing.T) {
	var mu sync.Mutex
	patches := map[string]map[string]any{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPatch || r.Header.Get("Content-Type") != "application/merge-patch+json" {
			http.Error(w, "want a merge patch", http.StatusBadRequest)
			return
		}
		var p map[string]any
		_ = json.NewDecoder(r.Body).Decode(&p)
		mu.Lock()
		patches[r.URL.Path] = p
		mu.Unlock()
	}))
	defer srv.Close()
	c := &Controller{API: &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}}
	var n node
	n.Metadata.Name = "agent1"
	n.Metadata.ResourceVersion = "41"
	n.Metadata.Annotations = map[string]string{ProvidedNodeIP: "10.0.0.3", ExternalIPKey: "203.0.113.3"}
	n.Spec.Taints = []taint{{Key: UninitializedTaint, Value: "true", Effect: "NoSchedule"}, {Key: "dedicated", Value: "edge", Effect: "NoSchedule"}}
	if err := c.Sync(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(patches["/api/v1/nodes/agent1/status"])
	if string(st) != `{"status":{"addresses":[{"address":"10.0.0.3","type":"InternalIP"},{"address":"203.0.113.3","type":"ExternalIP"},{"address":"agent1","type":"Hostname"}]}}` {
		t.Errorf("status patch %s", st)
	}
	sp, _ := json.Marshal(patches["/api/v1/nodes/agent1"])
	if string(sp) != `{"metadata":{"labels":{"node.kubernetes.io/instance-type":"k3s"},"resourceVersion":"41"},"spec":{"providerID":"k3s://agent1","taints":[{"effect":"NoSchedule","key":"dedicated","value":"edge"}]}}` {
		t.Errorf("node patch %s", sp)
	}
	// An initialized node with the right addresses costs no request.
	patches = map[string]map[string]any{}
	n.Spec.Taints = nil
	n.Spec.ProviderID = "k3s://agent1"
	n.Status.Addresses = Addresses("agent1", n.Metadata.Annotations, nil)
	if err := c.Sync(context.Background(), n); err != nil || len(patches) != 0 {
		t.Errorf("initialized node: %v, patches %v", err, patches)
	}
}

// A watch event older than the node: the taint write is refused (409) and
// the node read again; already initialized by then, it is left alone, so a
// taint the stale event lacked (or one removed since) is not written back.
func TestSyncStaleEvent(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		mu.Unlock()
		switch {
		case r.Method == http.MethodPatch && r.URL.Path == "/api/v1/nodes/agent2":
			var p struct {
				Metadata struct{ ResourceVersion string }
			}
			_ = json.NewDecoder(r.Body).Decode(&p)
			if p.Metadata.ResourceVersion != "7" {
				t.Errorf("taint patch at resourceVersion %q, want the event's 7", p.Metadata.ResourceVersion)
			}
			http.Error(w, `{"message":"the object has been modified"}`, http.StatusConflict)
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/nodes/agent2":
			_, _ = w.Write([]byte(`{"metadata":{"name":"agent2","resourceVersion":"9","annotations":{"alpha.kubernetes.io/provided-node-ip":"10.0.0.4"}},
				"spec":{"providerID":"k3s://agent2","taints":[{"key":"node.kubernetes.io/unreachable","effect":"NoExecute","timeAdded":"2026-12-07T13:00:00Z"}]},
				"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.4"},{"type":"Hostname","address":"agent2"}]}}`))
		default:
			http.Error(w, "unexpected", http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	c := &Controller{API: &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}}
	var n node
	n.Metadata.Name = "agent2"
	n.Metadata.ResourceVersion = "7"
	n.Metadata.Annotations = map[string]string{ProvidedNodeIP: "10.0.0.4"}
	n.Status.Addresses = Addresses("agent2", n.Metadata.Annotations, nil)
	n.Spec.Taints = []taint{{Key: UninitializedTaint, Value: "true", Effect: "NoSchedule"}, {Key: "node.kubernetes.io/not-ready", Effect: "NoSchedule"}}
	if err := c.Sync(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	if want := []string{"PATCH /api/v1/nodes/agent2", "GET /api/v1/nodes/agent2"}; !slices.Equal(calls, want) {
		t.Errorf("requests %v, want %v", calls, want)
	}
}
