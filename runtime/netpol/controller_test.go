package netpol

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

type countingTables struct{ applied []Ruleset }

func (f *countingTables) Apply(_ context.Context, rs Ruleset) error {
	f.applied = append(f.applied, rs)
	return nil
}

// A sync installs the rules once; a change that changes no rule (a pod's
// status) installs nothing, a forced resync does, and a new policy does.
func TestSyncSkipsUnchangedRules(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/nodes/node1" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"spec":{"podCIDRs":["10.42.0.0/24"]},"status":{"addresses":[{"type":"InternalIP","address":"10.0.2.15"},{"type":"Hostname","address":"node1"}]}}`))
	}))
	defer srv.Close()
	tables := &countingTables{}
	c := &Controller{API: &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}, NodeName: "node1", Tables: tables}
	st := cluster(t)
	raw := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	c.objects = map[string]map[string]json.RawMessage{"pods": {}, "namespaces": {}, "networkpolicies": {}}
	for _, p := range st.Pods {
		c.objects["pods"][p.Metadata.Namespace+"/"+p.Metadata.Name] = raw(p)
	}
	ctx := context.Background()
	for i, force := range []bool{false, false, true} {
		if err := c.sync(ctx, force); err != nil {
			t.Fatal(err)
		}
		if want := map[int]int{0: 1, 1: 1, 2: 2}[i]; len(tables.applied) != want {
			t.Errorf("sync %d (force %v): %d applies, want %d", i, force, len(tables.applied), want)
		}
	}
	c.objects["networkpolicies"]["default/deny"] = json.RawMessage(`{"metadata":{"namespace":"default","name":"deny"},"spec":{"podSelector":{}}}`)
	if err := c.sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	if len(tables.applied) != 3 {
		t.Fatalf("a new policy installed nothing")
	}
	last := tables.applied[2]
	// The node's addresses come from its object: InternalIP and the pod bridge.
	if !strings.Contains(last.Filter, "-s 10.0.2.15 ") || !strings.Contains(last.Filter, "-s 10.42.0.1 ") {
		t.Errorf("the node's own addresses are not accepted:\n%s", last.Filter)
	}
}
