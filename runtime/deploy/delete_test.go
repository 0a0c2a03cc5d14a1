package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ballast-os/ballast/runtime/manifests"
	"github.com/ballast-os/ballast/runtime/packaged"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// store is a fake apiserver that keeps objects by URL path: server-side
// apply (PATCH) creates or replaces an object and records the field
// manager in managedFields, as the real apiserver does; GET and DELETE
// answer from the store, with 404 Status bodies for missing objects and
// 409 for a failed UID precondition.
type store struct {
	mu      sync.Mutex
	objs    map[string]map[string]any
	uids    int
	deletes []deleteReq
}

type deleteReq struct {
	path, propagation, uid string
}

func newStore(t *testing.T) (*store, *rest.Config) {
	s := &store{objs: map[string]map[string]any{}}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	// No client-side rate limit: the packaged manifests are ~50 objects.
	return s, &rest.Config{Host: srv.URL, QPS: 1000, Burst: 1000}
}

func status(w http.ResponseWriter, code int, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":%q,"code":%d}`, reason, code)
}

func (s *store) put(path string, obj map[string]any, manager, operation string) {
	s.uids++
	md, _ := obj["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		obj["metadata"] = md
	}
	md["uid"] = fmt.Sprintf("uid-%d", s.uids)
	md["managedFields"] = []any{map[string]any{"manager": manager, "operation": operation, "apiVersion": obj["apiVersion"]}}
	s.objs[path] = obj
}

func (s *store) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	switch r.Method {
	case http.MethodPatch:
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err != nil {
			status(w, 400, "BadRequest")
			return
		}
		s.put(r.URL.Path, obj, r.URL.Query().Get("fieldManager"), "Apply")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(obj)
	case http.MethodGet:
		obj, ok := s.objs[r.URL.Path]
		if !ok {
			status(w, 404, "NotFound")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(obj)
	case http.MethodDelete:
		var opts struct {
			PropagationPolicy string
			Preconditions     struct{ UID string }
		}
		json.Unmarshal(body, &opts)
		s.deletes = append(s.deletes, deleteReq{r.URL.Path, opts.PropagationPolicy, opts.Preconditions.UID})
		obj, ok := s.objs[r.URL.Path]
		if !ok {
			status(w, 404, "NotFound")
			return
		}
		if uid := obj["metadata"].(map[string]any)["uid"]; opts.Preconditions.UID != "" && uid != opts.Preconditions.UID {
			status(w, 409, "Conflict")
			return
		}
		delete(s.objs, r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Success"}`)
	default:
		status(w, 405, "MethodNotAllowed")
	}
}

func (s *store) paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for p := range s.objs {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// packagedMapper knows every kind the packaged manifests use.
func packagedMapper() *resettable {
	m := meta.NewDefaultRESTMapper(nil)
	for _, k := range []struct {
		gvk   schema.GroupVersionKind
		scope meta.RESTScope
	}{
		{schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Version: "v1", Kind: "Service"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "storage.k8s.io", Version: "v1", Kind: "StorageClass"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Group: "node.k8s.io", Version: "v1", Kind: "RuntimeClass"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Group: "apiregistration.k8s.io", Version: "v1", Kind: "APIService"}, meta.RESTScopeRoot},
	} {
		m.Add(k.gvk, k.scope)
	}
	return &resettable{RESTMapper: m}
}

// TestDisablePackaged stages the packaged manifests, applies them through
// the controller, then restarts with coredns and metrics-server disabled:
// their objects are deleted from the API server and their files removed;
// every other object stays.
func TestDisablePackaged(t *testing.T) {
	st, cfg := newStore(t)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	v := packaged.Values{}
	if _, err := packaged.Stage(dir, v, nil); err != nil {
		t.Fatal(err)
	}
	c := &manifests.Controller{Dir: dir, Applier: &Applier{Client: dyn, Mapper: packagedMapper()}}
	res, err := c.Sync(context.Background(), true)
	if err != nil || len(res.Failed) != 0 || len(res.Applied) != 12 {
		t.Fatalf("first start: applied %d, failed %v (%v)", len(res.Applied), res.Failed, err)
	}
	before := st.paths()
	for _, want := range []string{
		"/apis/apps/v1/namespaces/kube-system/deployments/coredns",
		"/api/v1/namespaces/kube-system/services/kube-dns",
		"/apis/apps/v1/namespaces/kube-system/deployments/metrics-server",
		"/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io",
		"/apis/storage.k8s.io/v1/storageclasses/local-path",
		"/apis/node.k8s.io/v1/runtimeclasses/nvidia",
	} {
		if !slices.Contains(before, want) {
			t.Errorf("%s not applied (have %v)", want, before)
		}
	}

	// The next start, with coredns and metrics-server disabled.
	sres, err := packaged.Stage(dir, v, []string{"coredns", "metrics-server", "traefik"})
	if err != nil {
		t.Fatal(err)
	}
	if len(sres.Pending) != 8 {
		t.Errorf("pending %v", sres.Pending)
	}
	c = &manifests.Controller{Dir: dir, Applier: &Applier{Client: dyn, Mapper: packagedMapper()}, Disable: sres.Disabled}
	res, err = c.Sync(context.Background(), true)
	if err != nil || len(res.Failed) != 0 || len(res.Deleted) != 8 || len(res.Applied) != 4 {
		t.Fatalf("disabling start: applied %v deleted %v failed %v (%v)", res.Applied, res.Deleted, res.Failed, err)
	}
	after := st.paths()
	var gone []string
	for _, p := range before {
		if !slices.Contains(after, p) {
			gone = append(gone, p)
		}
	}
	wantGone := []string{
		"/api/v1/namespaces/kube-system/configmaps/coredns",
		"/api/v1/namespaces/kube-system/serviceaccounts/coredns",
		"/api/v1/namespaces/kube-system/serviceaccounts/metrics-server",
		"/api/v1/namespaces/kube-system/services/kube-dns",
		"/api/v1/namespaces/kube-system/services/metrics-server",
		"/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io",
		"/apis/apps/v1/namespaces/kube-system/deployments/coredns",
		"/apis/apps/v1/namespaces/kube-system/deployments/metrics-server",
		"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/metrics-server:system:auth-delegator",
		"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:coredns",
		"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:metrics-server",
		"/apis/rbac.authorization.k8s.io/v1/clusterroles/system:aggregated-metrics-reader",
		"/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns",
		"/apis/rbac.authorization.k8s.io/v1/clusterroles/system:metrics-server",
		"/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings/metrics-server-auth-reader",
	}
	if !slices.Equal(gone, wantGone) {
		t.Errorf("deleted objects\n%v\nwant\n%v", strings.Join(gone, "\n"), strings.Join(wantGone, "\n"))
	}
	for _, d := range st.deletes {
		if d.propagation != "Background" || !strings.HasPrefix(d.uid, "uid-") {
			t.Errorf("delete %+v: want Background propagation and a UID precondition", d)
		}
	}
	for _, p := range sres.Pending {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s kept after its objects were deleted: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "metrics-server")); !os.IsNotExist(err) {
		t.Errorf("metrics-server/ kept: %v", err)
	}

	// A third start: nothing more to delete, nothing of theirs written.
	sres, err = packaged.Stage(dir, v, []string{"coredns", "metrics-server"})
	if err != nil || len(sres.Pending) != 0 || len(sres.Written) != 0 {
		t.Fatalf("third stage %+v (%v)", sres, err)
	}
	n := len(st.deletes)
	res, err = c.Sync(context.Background(), true)
	if err != nil || len(res.Deleted) != 0 || len(st.deletes) != n {
		t.Errorf("third start deleted %v (%d requests)", res.Deleted, len(st.deletes)-n)
	}
}

func TestDeleteKeepsOthersObjects(t *testing.T) {
	st, cfg := newStore(t)
	dyn, _ := dynamic.NewForConfig(cfg)
	mapper := packagedMapper()
	a := &Applier{Client: dyn, Mapper: mapper}
	// The user made kube-dns by hand (kubectl create): not k3s's.
	st.put("/api/v1/namespaces/kube-system/services/kube-dns", map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "kube-dns", "namespace": "kube-system"}}, "kubectl-create", "Update")
	st.put("/api/v1/namespaces/kube-system/configmaps/coredns", map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "coredns", "namespace": "kube-system"}}, "k3s", "Apply")
	docs := [][]byte{
		[]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns\n"),
		[]byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: kube-dns\n  namespace: kube-system\n"),
		[]byte("apiVersion: v1\nkind: Secret\nmetadata:\n  name: never-applied\n"),
		[]byte("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: crd-gone\n"),
	}
	if err := a.Delete(context.Background(), "/m/coredns.yaml", docs); err != nil {
		t.Fatal(err)
	}
	if got := st.paths(); !slices.Equal(got, []string{"/api/v1/namespaces/kube-system/services/kube-dns"}) {
		t.Errorf("left %v, want only the user's kube-dns", got)
	}
	// The unknown kinds (Secret is not in this mapper, Widget's CRD is
	// gone) were skipped after one mapper reset each, and no DELETE was
	// sent for them or for the user's Service.
	if len(st.deletes) != 1 || st.deletes[0].path != "/api/v1/namespaces/kube-system/configmaps/coredns" {
		t.Errorf("deletes %+v", st.deletes)
	}
	if mapper.resets != 2 {
		t.Errorf("mapper reset %d times, want 2", mapper.resets)
	}
	// Deleting again: everything already gone is fine.
	if err := a.Delete(context.Background(), "/m/coredns.yaml", docs[:1]); err != nil {
		t.Errorf("second delete: %v", err)
	}
	err := a.Delete(context.Background(), "/m/x.yaml", [][]byte{[]byte("apiVersion: v1\nkind: ConfigMap\n")})
	if err == nil || !strings.HasPrefix(err.Error(), "/m/x.yaml: document 1: ConfigMap : deleting: metadata.name is required") {
		t.Errorf("nameless object: %v", err)
	}
}

func TestDeleteUIDPrecondition(t *testing.T) {
	st, cfg := newStore(t)
	dyn, _ := dynamic.NewForConfig(cfg)
	a := &Applier{Client: dyn, Mapper: packagedMapper()}
	path := "/api/v1/namespaces/kube-system/configmaps/coredns"
	st.put(path, map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "coredns"}}, "k3s", "Apply")
	// Between the Get and the Delete the object is replaced: the server
	// answers 409 to the UID precondition and the new object stays.
	replaced := false
	a.Client = &replacingClient{Interface: dyn, before: func() {
		if !replaced {
			replaced = true
			st.mu.Lock()
			st.put(path, map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "coredns"}}, "someone", "Update")
			st.mu.Unlock()
		}
	}}
	if err := a.Delete(context.Background(), "/m/coredns.yaml", [][]byte{[]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns\n")}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(st.paths(), path) || len(st.deletes) != 1 || st.deletes[0].uid != "uid-1" {
		t.Errorf("objects %v deletes %+v", st.paths(), st.deletes)
	}
}

// replacingClient runs before() ahead of every Delete.
type replacingClient struct {
	dynamic.Interface
	before func()
}

func (c *replacingClient) Resource(r schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return &replacingResource{NamespaceableResourceInterface: c.Interface.Resource(r), before: c.before}
}

type replacingResource struct {
	dynamic.NamespaceableResourceInterface
	before func()
}

func (r *replacingResource) Namespace(ns string) dynamic.ResourceInterface {
	return &replacingNS{ResourceInterface: r.NamespaceableResourceInterface.Namespace(ns), before: r.before}
}

type replacingNS struct {
	dynamic.ResourceInterface
	before func()
}

func (r *replacingNS) Delete(ctx context.Context, name string, opts metav1.DeleteOptions, sub ...string) error {
	r.before()
	return r.ResourceInterface.Delete(ctx, name, opts, sub...)
}
