package deploy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// request is what the fake apiserver saw.
type request struct {
	method, path, contentType, fieldManager, force string
	body                                           map[string]any
}

// fakeAPI answers every PATCH with the applied object and records it.
func fakeAPI(t *testing.T) (*httptest.Server, func() []request) {
	var mu sync.Mutex
	var reqs []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rq := request{method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"),
			fieldManager: r.URL.Query().Get("fieldManager"), force: r.URL.Query().Get("force")}
		if err := json.Unmarshal(b, &rq.body); err != nil {
			t.Errorf("body %q: %v", b, err)
		}
		mu.Lock()
		reqs = append(reqs, rq)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []request { mu.Lock(); defer mu.Unlock(); return append([]request(nil), reqs...) }
}

// resettable adds a Reset counter to a static mapper.
type resettable struct {
	meta.RESTMapper
	resets int
}

func (r *resettable) Reset() { r.resets++ }

func staticMapper() *resettable {
	m := meta.NewDefaultRESTMapper(nil)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot)
	m.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	return &resettable{RESTMapper: m}
}

func TestApplyServerSide(t *testing.T) {
	srv, seen := fakeAPI(t)
	dyn, err := dynamic.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	mapper := staticMapper()
	a := &Applier{Client: dyn, Mapper: mapper}
	docs := [][]byte{
		[]byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  namespace: ignored\n"),
		[]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: no-ns\ndata:\n  k: v\n"),
		[]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"demo"}},{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c2","namespace":"demo"}}]}`),
	}
	if err := a.Apply(context.Background(), "/m/demo.yaml", docs); err != nil {
		t.Fatal(err)
	}
	want := []struct{ path, name string }{
		{"/api/v1/namespaces/demo", "demo"},
		{"/api/v1/namespaces/kube-system/configmaps/no-ns", "no-ns"},
		{"/apis/apps/v1/namespaces/demo/deployments/web", "web"},
		{"/api/v1/namespaces/demo/configmaps/c2", "c2"},
	}
	got := seen()
	if len(got) != len(want) {
		t.Fatalf("%d requests, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.method != http.MethodPatch || g.path != w.path || g.contentType != "application/apply-patch+yaml" || g.fieldManager != "k3s" || g.force != "true" {
			t.Errorf("request %d: %+v, want PATCH %s apply-patch fieldManager=k3s force=true", i, g, w.path)
		}
		md, _ := g.body["metadata"].(map[string]any)
		if md["name"] != w.name {
			t.Errorf("request %d body names %v, want %s", i, md["name"], w.name)
		}
	}
	if md, _ := got[0].body["metadata"].(map[string]any); md["namespace"] != nil {
		t.Errorf("cluster-scoped Namespace sent with a namespace: %v", md)
	}
	if mapper.resets != 0 {
		t.Errorf("mapper reset %d times for known kinds", mapper.resets)
	}
}

func TestApplyErrors(t *testing.T) {
	srv, seen := fakeAPI(t)
	dyn, _ := dynamic.NewForConfig(&rest.Config{Host: srv.URL})
	mapper := staticMapper()
	a := &Applier{Client: dyn, Mapper: mapper}
	for _, tc := range []struct {
		doc, want string
	}{
		{"apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n", `/m/x.yaml: document 1: Widget w: no matches for kind "Widget"`},
		{"kind: ConfigMap\nmetadata:\n  name: c\n", "/m/x.yaml: document 1: ConfigMap c: apiVersion and kind are required"},
		{"apiVersion: v1\nkind: ConfigMap\n", "/m/x.yaml: document 1: ConfigMap : metadata.name is required"},
		{"apiVersion: v1\nkind: [\n", "/m/x.yaml: document 1: "},
	} {
		err := a.Apply(context.Background(), "/m/x.yaml", [][]byte{[]byte(tc.doc)})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want prefix %q", tc.doc, err, tc.want)
		}
	}
	if mapper.resets != 1 {
		t.Errorf("unknown kind reset the mapper %d times, want 1", mapper.resets)
	}
	if n := len(seen()); n != 0 {
		t.Errorf("%d requests sent for invalid documents", n)
	}
}

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"--kubeconfig=/k", "--manifests-dir", "/m", "--disable=coredns, metrics-server", "--disable", "local-storage"})
	if err != nil || o.kubeconfig != "/k" || o.dir != "/m" || strings.Join(o.disable, "|") != "coredns|metrics-server|local-storage" {
		t.Errorf("%+v %v", o, err)
	}
	for _, args := range [][]string{{"--kubeconfig=/k"}, {"--manifests-dir=/m"}, {"--kubeconfig=/k", "--manifests-dir=/m", "extra"}, {"--bogus"}} {
		if _, err := parseArgs(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
