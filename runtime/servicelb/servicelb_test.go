package servicelb

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

func TestDaemonSetName(t *testing.T) {
	if got := DaemonSetName("web", "0123456789abcdef"); got != "svclb-web-01234567" {
		t.Errorf("got %q", got)
	}
	long := strings.Repeat("a", 47) + "-bbbb"
	if got := DaemonSetName(long, "0123456789abcdef"); got != "svclb-"+strings.Repeat("a", 47)+"-01234567" {
		t.Errorf("long name: %q", got)
	}
}

func TestSourceRanges(t *testing.T) {
	for _, tc := range []struct {
		spec     []string
		ann      string
		families []string
		want     string
		err      bool
	}{
		{nil, "", []string{"IPv4"}, "0.0.0.0/0", false},
		{nil, "", []string{"IPv4", "IPv6"}, "0.0.0.0/0,::/0", false},
		{[]string{"10.0.0.0/8", "192.168.1.5/24"}, "172.16.0.0/12", nil, "10.0.0.0/8,192.168.1.0/24", false},
		{nil, " 172.16.0.0/12 , 10.1.0.0/16", nil, "172.16.0.0/12,10.1.0.0/16", false},
		{[]string{"10.0.0.0"}, "", nil, "", true},
	} {
		got, err := SourceRanges(tc.spec, map[string]string{SourceRangesKey: tc.ann}, tc.families)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("SourceRanges(%v, %q) = %q, %v; want %q", tc.spec, tc.ann, got, err, tc.want)
		}
	}
}

// fakeAPI is the little of an API server a pass uses.
type fakeAPI struct {
	mu        sync.Mutex
	services  []map[string]any
	nodes     []map[string]any
	pods      []map[string]any
	slices    map[string][]map[string]any // service name -> slices
	ds        map[string]map[string]any   // applied DaemonSets by name
	status    map[string][]any            // ns/name -> ingress patched
	applies   int
	patches   int      // status patches
	events    []string // reasons
	deleted   []string
	lease     map[string]any
	leaseRV   int
	saCreated bool
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	items := func(v any) {
		json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"resourceVersion": "1"}, "items": v})
	}
	p := r.URL.Path
	switch {
	case r.Method == "GET" && p == "/api/v1/namespaces/kube-system":
		w.Write([]byte(`{}`))
	case r.Method == "GET" && p == "/api/v1/namespaces/kube-system/serviceaccounts/svclb":
		if !f.saCreated {
			http.Error(w, `{"message":"not found"}`, 404)
			return
		}
		w.Write([]byte(`{}`))
	case r.Method == "POST" && p == "/api/v1/namespaces/kube-system/serviceaccounts":
		f.saCreated = true
		w.Write([]byte(`{}`))
	case r.Method == "GET" && p == "/api/v1/services":
		items(f.services)
	case r.Method == "GET" && p == "/api/v1/nodes":
		items(f.nodes)
	case r.Method == "GET" && p == "/api/v1/namespaces/kube-system/pods":
		items(f.pods)
	case r.Method == "GET" && p == "/apis/apps/v1/namespaces/kube-system/daemonsets":
		var l []map[string]any
		for _, d := range f.ds {
			l = append(l, d)
		}
		items(l)
	case r.Method == "PATCH" && strings.HasPrefix(p, "/apis/apps/v1/namespaces/kube-system/daemonsets/"):
		if r.Header.Get("Content-Type") != "application/apply-patch+yaml" || r.URL.Query().Get("fieldManager") != fieldManager || r.URL.Query().Get("force") != "true" {
			http.Error(w, `{"message":"want a forced server-side apply"}`, 415)
			return
		}
		var d map[string]any
		data, _ := io.ReadAll(r.Body)
		json.Unmarshal(data, &d)
		f.ds[strings.TrimPrefix(p, "/apis/apps/v1/namespaces/kube-system/daemonsets/")] = d
		f.applies++
		w.Write([]byte(`{}`))
	case r.Method == "DELETE" && strings.HasPrefix(p, "/apis/apps/v1/namespaces/kube-system/daemonsets/"):
		name := strings.TrimPrefix(p, "/apis/apps/v1/namespaces/kube-system/daemonsets/")
		delete(f.ds, name)
		f.deleted = append(f.deleted, name)
		w.Write([]byte(`{}`))
	case r.Method == "GET" && strings.HasSuffix(p, "/endpointslices"):
		sel := r.URL.Query().Get("labelSelector")
		items(f.slices[strings.TrimPrefix(sel, "kubernetes.io/service-name=")])
	case p == "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"+LeaseName && r.Method == "GET":
		if f.lease == nil {
			http.Error(w, `{"message":"not found"}`, 404)
			return
		}
		json.NewEncoder(w).Encode(f.lease)
	case p == "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases" && r.Method == "POST",
		p == "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"+LeaseName && r.Method == "PUT":
		var l map[string]any
		data, _ := io.ReadAll(r.Body)
		json.Unmarshal(data, &l)
		rv, _ := l["metadata"].(map[string]any)["resourceVersion"].(string)
		if (r.Method == "POST" && f.lease != nil) || (r.Method == "PUT" && rv != strconv.Itoa(f.leaseRV)) {
			http.Error(w, `{"message":"conflict"}`, 409)
			return
		}
		f.leaseRV++
		l["metadata"].(map[string]any)["resourceVersion"] = strconv.Itoa(f.leaseRV)
		f.lease = l
		w.Write([]byte(`{}`))
	case r.Method == "DELETE" && p == "/apis/apps/v1/namespaces/kube-system/daemonsets":
		if r.URL.Query().Get("labelSelector") != NodeSelectorLabel {
			http.Error(w, `{"message":"unexpected selector"}`, 500)
			return
		}
		for name := range f.ds {
			f.deleted = append(f.deleted, name)
		}
		f.ds = map[string]map[string]any{}
		w.Write([]byte(`{}`))
	case r.Method == "POST" && strings.HasSuffix(p, "/events"):
		var ev struct{ Reason string }
		data, _ := io.ReadAll(r.Body)
		json.Unmarshal(data, &ev)
		f.events = append(f.events, ev.Reason)
		w.Write([]byte(`{}`))
	case r.Method == "PATCH" && strings.HasSuffix(p, "/status"):
		if r.Header.Get("Content-Type") != "application/merge-patch+json" {
			http.Error(w, `{"message":"want a merge patch"}`, 415)
			return
		}
		f.patches++
		var patch struct {
			Status struct {
				LoadBalancer struct{ Ingress []any }
			}
		}
		data, _ := io.ReadAll(r.Body)
		json.Unmarshal(data, &patch)
		parts := strings.Split(p, "/") // /api/v1/namespaces/NS/services/NAME/status
		key := parts[4] + "/" + parts[6]
		f.status[key] = patch.Status.LoadBalancer.Ingress
		// The next list shows it.
		for _, s := range f.services {
			md := s["metadata"].(map[string]any)
			if md["namespace"].(string)+"/"+md["name"].(string) == key {
				s["status"] = map[string]any{"loadBalancer": map[string]any{"ingress": patch.Status.LoadBalancer.Ingress}}
			}
		}
		w.Write([]byte(`{}`))
	default:
		http.Error(w, `{"message":"unexpected `+r.Method+" "+p+`"}`, 500)
	}
}

func svc(name, uid, typ string, extra map[string]any) map[string]any {
	spec := map[string]any{"type": typ, "clusterIPs": []string{"10.43.0.10"}, "ipFamilies": []string{"IPv4"},
		"ports": []map[string]any{{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 31080}, {"name": "dns", "protocol": "UDP", "port": 53, "nodePort": 31053}}}
	md := map[string]any{"name": name, "namespace": "default", "uid": uid, "resourceVersion": "7"}
	s := map[string]any{"metadata": md, "spec": spec}
	for k, v := range extra {
		switch k {
		case "labels", "annotations":
			md[k] = v
		case "status":
			s[k] = v
		default:
			spec[k] = v
		}
	}
	return s
}

func nodeObj(name string, labels map[string]string, addrs ...string) map[string]any {
	var as []map[string]string
	for i := 0; i < len(addrs); i += 2 {
		as = append(as, map[string]string{"type": addrs[i], "address": addrs[i+1]})
	}
	return map[string]any{"metadata": map[string]any{"name": name, "labels": labels}, "status": map[string]any{"addresses": as}}
}

func lbPod(svcName, node string, ready bool) map[string]any {
	st := "False"
	if ready {
		st = "True"
	}
	return map[string]any{
		"metadata": map[string]any{"name": "svclb-" + svcName + "-" + node, "labels": map[string]string{SvcNameLabel: svcName, SvcNamespaceLabel: "default"}},
		"spec":     map[string]any{"nodeName": node},
		"status":   map[string]any{"podIP": "10.42.0.9", "conditions": []map[string]string{{"type": "Ready", "status": st}}},
	}
}

func TestSync(t *testing.T) {
	class := "example.com/other"
	f := &fakeAPI{
		services: []map[string]any{
			svc("web", "aaaaaaaa-1111", "LoadBalancer", nil),
			svc("local", "bbbbbbbb-2222", "LoadBalancer", map[string]any{"externalTrafficPolicy": "Local",
				"annotations": map[string]string{SourceRangesKey: "192.168.0.0/16", PriorityAnnotation: "high"}}),
			svc("plain", "cccccccc-3333", "ClusterIP", map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": []map[string]string{{"ip": "203.0.113.50"}}}}}),
			svc("classed", "dddddddd-4444", "LoadBalancer", map[string]any{"loadBalancerClass": class}),
			svc("was", "eeeeeeee-5555", "ClusterIP", map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": []map[string]string{{"ip": "10.0.0.1"}}}}}),
		},
		nodes: []map[string]any{
			nodeObj("n1", nil, "InternalIP", "10.0.0.1", "Hostname", "n1"),
			nodeObj("n2", nil, "InternalIP", "10.0.0.2", "ExternalIP", "203.0.113.2"),
		},
		pods: []map[string]any{lbPod("web", "n1", true), lbPod("web", "n2", false), lbPod("local", "n1", true), lbPod("local", "n2", true)},
		slices: map[string][]map[string]any{"local": {{"endpoints": []map[string]any{
			{"conditions": map[string]any{"ready": true}, "nodeName": "n1", "targetRef": map[string]string{"kind": "Pod"}},
			{"conditions": map[string]any{"ready": false}, "nodeName": "n2", "targetRef": map[string]string{"kind": "Pod"}},
		}}}},
		ds: map[string]map[string]any{
			"svclb-gone-ffffffff": {"metadata": map[string]any{"name": "svclb-gone-ffffffff", "labels": map[string]string{SvcNameLabel: "gone", SvcNamespaceLabel: "default"}}},
			"svclb-was-eeeeeeee":  {"metadata": map[string]any{"name": "svclb-was-eeeeeeee", "labels": map[string]string{SvcNameLabel: "was", SvcNamespaceLabel: "default"}}},
		},
		status: map[string][]any{},
	}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := &Controller{API: &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}, Namespace: "kube-system", Registry: "docker.io"}
	ctx := context.Background()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	if !f.saCreated {
		t.Error("the svclb ServiceAccount was not created")
	}
	if !slices.Contains(f.events, "AppliedDaemonSet") || !slices.Contains(f.events, "UpdatedLoadBalancer") {
		t.Errorf("events %v: want AppliedDaemonSet and UpdatedLoadBalancer, as k3s records", f.events)
	}
	if f.applies != 2 || f.ds["svclb-web-aaaaaaaa"] == nil || f.ds["svclb-local-bbbbbbbb"] == nil {
		t.Fatalf("applied %d DaemonSets: %v", f.applies, keys(f.ds))
	}
	if !reflect.DeepEqual(f.deleted, []string{"svclb-gone-ffffffff", "svclb-was-eeeeeeee"}) && !reflect.DeepEqual(f.deleted, []string{"svclb-was-eeeeeeee", "svclb-gone-ffffffff"}) {
		t.Errorf("deleted %v", f.deleted)
	}
	ips := func(key string) string {
		var out []string
		for _, in := range f.status[key] {
			out = append(out, in.(map[string]any)["ip"].(string))
		}
		return strings.Join(out, ",")
	}
	// web: only n1's pod is ready, and n1 has no ExternalIP.
	if got := ips("default/web"); got != "10.0.0.1" {
		t.Errorf("web ingress %q, want 10.0.0.1", got)
	}
	// local: pods ready on both, a ready endpoint only on n1.
	if got := ips("default/local"); got != "10.0.0.1" {
		t.Errorf("local ingress %q, want 10.0.0.1", got)
	}
	if _, ok := f.status["default/plain"]; ok {
		t.Error("a ClusterIP Service ServiceLB never served had its status changed")
	}
	if _, ok := f.status["default/classed"]; ok {
		t.Error("a Service with a loadBalancerClass had its status changed")
	}
	if got, ok := f.status["default/was"]; !ok || len(got) != 0 {
		t.Errorf("a Service that stopped being a LoadBalancer keeps %v", got)
	}

	// The DaemonSet as k3s writes it.
	web := f.ds["svclb-web-aaaaaaaa"]
	spec := web["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	cs := spec["containers"].([]any)
	if len(cs) != 2 {
		t.Fatalf("containers %v", cs)
	}
	c0 := cs[0].(map[string]any)
	if c0["name"] != "lb-tcp-80" || c0["image"] != "docker.io/rancher/klipper-lb:v0.4.9" {
		t.Errorf("container %v", c0)
	}
	env := map[string]any{}
	for _, e := range c0["env"].([]any) {
		m := e.(map[string]any)
		env[m["name"].(string)] = m["value"]
	}
	if env["SRC_PORT"] != "80" || env["DEST_PORT"] != "80" || env["DEST_IPS"] != "10.43.0.10" || env["DEST_PROTO"] != "TCP" || env["SRC_RANGES"] != "0.0.0.0/0" {
		t.Errorf("env %v", env)
	}
	port := c0["ports"].([]any)[0].(map[string]any)
	if port["hostPort"] != float64(80) || port["containerPort"] != float64(80) {
		t.Errorf("port %v", port)
	}
	if spec["priorityClassName"] != DefaultPriority || spec["serviceAccountName"] != "svclb" || spec["nodeSelector"] != nil {
		t.Errorf("pod spec %v", spec)
	}
	local := f.ds["svclb-local-bbbbbbbb"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	lenv := map[string]any{}
	for _, e := range local["containers"].([]any)[0].(map[string]any)["env"].([]any) {
		m := e.(map[string]any)
		lenv[m["name"].(string)] = m
	}
	if lenv["DEST_PORT"].(map[string]any)["value"] != "31080" || lenv["SRC_RANGES"].(map[string]any)["value"] != "192.168.0.0/16" ||
		lenv["DEST_IPS"].(map[string]any)["valueFrom"].(map[string]any)["fieldRef"].(map[string]any)["fieldPath"] != "status.hostIPs" || local["priorityClassName"] != "high" {
		t.Errorf("local: env %v, priority %v", lenv, local["priorityClassName"])
	}

	// Nothing changed: a second pass applies the same DaemonSets again (a
	// no-op for the API server, and what puts an edited one back) and
	// patches no status.
	before := f.patches
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if f.applies != 4 || f.patches != before {
		t.Errorf("an unchanged cluster: %d applies in all (want 4), status patches %d -> %d", f.applies, before, f.patches)
	}

	// n2's pod comes ready: its ExternalIP is preferred over every InternalIP.
	f.pods[1] = lbPod("web", "n2", true)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ips("default/web"); got != "203.0.113.2" {
		t.Errorf("web ingress %q, want the ExternalIP 203.0.113.2", got)
	}

	// A node labelled enablelb: every DaemonSet selects enablelb=true
	// nodes, and a Service in a pool that pool's too.
	f.nodes[0] = nodeObj("n1", map[string]string{EnableLBLabel: "true", LBPoolLabel: "blue"}, "InternalIP", "10.0.0.1")
	f.services[0]["metadata"].(map[string]any)["labels"] = map[string]string{LBPoolLabel: "blue"}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	webDS := f.ds["svclb-web-aaaaaaaa"]
	sel := webDS["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["nodeSelector"]
	if !reflect.DeepEqual(sel, map[string]any{EnableLBLabel: "true", LBPoolLabel: "blue"}) ||
		webDS["metadata"].(map[string]any)["labels"].(map[string]any)[NodeSelectorLabel] != "true" {
		t.Errorf("with enablelb: nodeSelector %v, labels %v", sel, webDS["metadata"].(map[string]any)["labels"])
	}
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLease: one server holds the lease; another takes it only once it
// is stale; a lost race is a "no", not an error.
func TestLease(t *testing.T) {
	f := &fakeAPI{ds: map[string]map[string]any{}, status: map[string][]any{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	api := &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}
	a := &Controller{API: api, Namespace: "kube-system", Identity: "server-a"}
	b := &Controller{API: api, Namespace: "kube-system", Identity: "server-b"}
	ctx := context.Background()
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	step := func(c *Controller, at time.Time, want bool) {
		t.Helper()
		got, err := c.tryLease(ctx, at)
		if err != nil || got != want {
			t.Fatalf("%s at %s: holds=%v %v, want %v", c.Identity, at.Format(time.TimeOnly), got, err, want)
		}
	}
	step(a, now, true)                      // created
	step(b, now.Add(5*time.Second), false)  // fresh: a keeps it
	step(a, now.Add(10*time.Second), true)  // renewed
	step(b, now.Add(35*time.Second), false) // 25 s after the renewal: still a's
	step(b, now.Add(41*time.Second), true)  // stale: b takes it
	step(a, now.Add(45*time.Second), false) // a sees b's
	if h := f.lease["spec"].(map[string]any)["holderIdentity"]; h != "server-b" {
		t.Errorf("holder %v", h)
	}
}

// TestDeleteAll: with ServiceLB disabled every svclb DaemonSet goes.
func TestDeleteAll(t *testing.T) {
	f := &fakeAPI{ds: map[string]map[string]any{
		"svclb-web-aaaaaaaa": {"metadata": map[string]any{"name": "svclb-web-aaaaaaaa"}},
	}, status: map[string][]any{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	DeleteAll(ctx, &kubeapi.Client{Base: srv.URL, HTTP: srv.Client()}, "kube-system", t.Logf)
	if len(f.ds) != 0 || len(f.deleted) != 1 {
		t.Errorf("left %v, deleted %v", keys(f.ds), f.deleted)
	}
}
