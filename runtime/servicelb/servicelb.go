// Package servicelb is ServiceLB, the LoadBalancer half of the cloud
// controller k3s embeds (pkg/cloudprovider/servicelb.go): for every
// Service of type LoadBalancer with no loadBalancerClass it runs a DaemonSet
// svclb-<service>-<uid[:8]> in the ServiceLB namespace (kube-system) whose
// pods take each Service port as a hostPort on their node and forward it to
// the Service, and it sets the Service's status.loadBalancer.ingress to the
// addresses of the nodes whose svclb pod is ready (ExternalIPs when any of
// those nodes has one, else InternalIPs; with externalTrafficPolicy Local,
// only nodes that have a ready endpoint of the Service).
//
// As in k3s: nodes labelled svccontroller.k3s.cattle.io/enablelb limit the
// pods to nodes labelled "true" (and, for a Service labelled
// svccontroller.k3s.cattle.io/lbpool=<pool>, to nodes of that pool); the
// annotation svccontroller.k3s.cattle.io/priorityclassname sets the pods'
// priority class (system-node-critical); loadBalancerSourceRanges (or the
// service.beta.kubernetes.io/load-balancer-source-ranges annotation) limit
// the clients. The pods run docker.io/rancher/klipper-lb:v0.4.9, which on a
// ballast node is ballast's own forwarder (images/svclb) with klipper-lb's
// environment.
//
// The controller is level-triggered: watches of Services, nodes, svclb pods
// and EndpointSlices only wake it, and each pass lists what it needs and
// converges (DaemonSets applied or deleted, statuses patched), so a server
// restart or a missed event costs one pass. Every server runs it; the one
// holding the Lease k3s-servicelb does the passes.
package servicelb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// Names k3s uses.
const (
	SvcNameLabel       = "svccontroller.k3s.cattle.io/svcname"
	SvcNamespaceLabel  = "svccontroller.k3s.cattle.io/svcnamespace"
	EnableLBLabel      = "svccontroller.k3s.cattle.io/enablelb"
	LBPoolLabel        = "svccontroller.k3s.cattle.io/lbpool"
	NodeSelectorLabel  = "svccontroller.k3s.cattle.io/nodeselector"
	PriorityAnnotation = "svccontroller.k3s.cattle.io/priorityclassname"
	SourceRangesKey    = "service.beta.kubernetes.io/load-balancer-source-ranges"
	DefaultPriority    = "system-node-critical"
	DefaultNamespace   = "kube-system"
	// Image is klipper-lb's repository and tag in k3s, pulled from the
	// system-default-registry (docker.io).
	Image        = "rancher/klipper-lb:v0.4.9"
	fieldManager = "k3s-servicelb"
)

// Controller runs ServiceLB.
type Controller struct {
	API       *kubeapi.Client
	Namespace string // default DefaultNamespace
	Registry  string // system-default-registry; default docker.io
	// Identity names this server in the lease (its node name).
	Identity string
	Logf     func(format string, args ...any)
	// Resync is how often a pass runs with no event (default a minute);
	// Debounce groups the events of a burst into one pass (default 500 ms).
	Resync, Debounce time.Duration

	wake chan struct{}
	mu   sync.Mutex
	lb   map[string]bool   // namespace/name of the LoadBalancer Services of the last pass
	said map[string]string // per Service, the last problem logged
	last string            // the last error reported, not repeated
}

func (c *Controller) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf("servicelb: "+format, args...)
	}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.Registry == "" {
		c.Registry = "docker.io"
	}
	if c.Resync <= 0 {
		c.Resync = time.Minute
	}
	if c.Debounce <= 0 {
		c.Debounce = 500 * time.Millisecond
	}
	c.wake = make(chan struct{}, 1)
	c.lb = map[string]bool{}
	var leading atomic.Bool
	go c.leader(ctx, &leading)
	report := func(err error) { c.logf("%v", err) }
	ns := url.PathEscape(c.Namespace)
	sel := "?labelSelector=" + url.QueryEscape(SvcNameLabel)
	go kubeapi.Follow(ctx, 0, report, c.follow("/api/v1/services", "", c.serviceEvent))
	go kubeapi.Follow(ctx, 0, report, c.follow("/api/v1/nodes", "", func(json.RawMessage) bool { return true }))
	go kubeapi.Follow(ctx, 0, report, c.follow("/api/v1/namespaces/"+ns+"/pods", sel, func(json.RawMessage) bool { return true }))
	go kubeapi.Follow(ctx, 0, report, c.follow("/apis/discovery.k8s.io/v1/endpointslices", "", c.sliceEvent))
	for {
		var err error
		if leading.Load() {
			err = c.Sync(ctx)
		}
		if err != nil && ctx.Err() == nil && err.Error() != c.last {
			c.logf("%v", err)
		}
		if err == nil {
			c.last = ""
		} else {
			c.last = err.Error()
		}
		wait := c.Resync
		if err != nil {
			wait = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
			// Let the rest of a burst arrive.
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.Debounce):
			}
			select {
			case <-c.wake:
			default:
			}
		case <-time.After(wait):
		}
	}
}

func (c *Controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// follow lists path (for its version) and watches it, poking the
// controller for every event interesting says is.
func (c *Controller) follow(path, query string, interesting func(json.RawMessage) bool) func(context.Context) error {
	return func(ctx context.Context) error {
		var list struct {
			Metadata struct{ ResourceVersion string }
		}
		// Only the version is wanted: one item, not the whole collection.
		sep := "?"
		if query != "" {
			sep = "&"
		}
		if err := c.API.Do(ctx, http.MethodGet, path+query+sep+"limit=1", "", nil, &list); err != nil {
			return err
		}
		c.poke()
		return c.API.Watch(ctx, path+query, list.Metadata.ResourceVersion, func(ev kubeapi.Event) error {
			if ev.Type == "BOOKMARK" {
				return nil
			}
			if interesting(ev.Object) {
				c.poke()
			}
			return nil
		})
	}
}

// serviceEvent: a LoadBalancer Service, or one that was one last pass.
func (c *Controller) serviceEvent(obj json.RawMessage) bool {
	var s service
	if json.Unmarshal(obj, &s) != nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.Spec.Type == "LoadBalancer" || c.lb[s.key()]
}

// sliceEvent: an EndpointSlice of a LoadBalancer Service.
func (c *Controller) sliceEvent(obj json.RawMessage) bool {
	var es struct {
		Metadata struct {
			Namespace string
			Labels    map[string]string
		}
	}
	if json.Unmarshal(obj, &es) != nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lb[es.Metadata.Namespace+"/"+es.Metadata.Labels["kubernetes.io/service-name"]]
}

// The API objects, as much of them as ServiceLB reads.
type (
	meta struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace,omitempty"`
		UID             string            `json:"uid,omitempty"`
		Labels          map[string]string `json:"labels,omitempty"`
		Annotations     map[string]string `json:"annotations,omitempty"`
		ResourceVersion string            `json:"resourceVersion,omitempty"`
	}
	servicePort struct {
		Name     string `json:"name"`
		Protocol string `json:"protocol"`
		Port     int32  `json:"port"`
		NodePort int32  `json:"nodePort"`
	}
	ingress struct {
		IP       string `json:"ip,omitempty"`
		Hostname string `json:"hostname,omitempty"`
	}
	service struct {
		Metadata meta `json:"metadata"`
		Spec     struct {
			Type                     string        `json:"type"`
			ClusterIPs               []string      `json:"clusterIPs"`
			Ports                    []servicePort `json:"ports"`
			ExternalTrafficPolicy    string        `json:"externalTrafficPolicy"`
			LoadBalancerClass        *string       `json:"loadBalancerClass"`
			LoadBalancerSourceRanges []string      `json:"loadBalancerSourceRanges"`
			IPFamilies               []string      `json:"ipFamilies"`
		} `json:"spec"`
		Status struct {
			LoadBalancer struct {
				Ingress []ingress `json:"ingress"`
			} `json:"loadBalancer"`
		} `json:"status"`
	}
	node struct {
		Metadata meta `json:"metadata"`
		Status   struct {
			Addresses []struct{ Type, Address string } `json:"addresses"`
		} `json:"status"`
	}
	pod struct {
		Metadata meta `json:"metadata"`
		Spec     struct {
			NodeName string `json:"nodeName"`
		} `json:"spec"`
		Status struct {
			PodIP      string                          `json:"podIP"`
			Conditions []struct{ Type, Status string } `json:"conditions"`
		} `json:"status"`
	}
	daemonSet struct {
		Metadata meta `json:"metadata"`
	}
	// dsObject is a DaemonSet as ServiceLB applies it.
	dsObject struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   meta           `json:"metadata"`
		Spec       map[string]any `json:"spec"`
	}
	endpointSlice struct {
		Endpoints []struct {
			Conditions struct {
				Ready *bool `json:"ready"`
			} `json:"conditions"`
			NodeName  *string `json:"nodeName"`
			TargetRef *struct {
				Kind string `json:"kind"`
			} `json:"targetRef"`
		} `json:"endpoints"`
	}
)

func (s *service) key() string { return s.Metadata.Namespace + "/" + s.Metadata.Name }

// handled: a Service ServiceLB serves (k3s's cloud provider is not asked
// about a Service with a loadBalancerClass).
func (s *service) handled() bool {
	return s.Spec.Type == "LoadBalancer" && s.Spec.LoadBalancerClass == nil
}

func (p *pod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func list[T any](ctx context.Context, api *kubeapi.Client, path string) ([]T, error) {
	var l struct{ Items []T }
	if err := api.Do(ctx, http.MethodGet, path, "", nil, &l); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// Sync is one pass: every handled Service gets its DaemonSet and status,
// every DaemonSet of a Service that is gone or no longer handled is
// deleted (and that Service's status cleared).
func (c *Controller) Sync(ctx context.Context) error {
	if err := c.ensureBasics(ctx); err != nil {
		return err
	}
	ns := "/api/v1/namespaces/" + url.PathEscape(c.Namespace)
	sel := "?labelSelector=" + url.QueryEscape(SvcNameLabel)
	services, err := list[service](ctx, c.API, "/api/v1/services")
	if err != nil {
		return err
	}
	nodes, err := list[node](ctx, c.API, "/api/v1/nodes")
	if err != nil {
		return err
	}
	pods, err := list[pod](ctx, c.API, ns+"/pods"+sel)
	if err != nil {
		return err
	}
	dss, err := list[daemonSet](ctx, c.API, "/apis/apps/v1/namespaces/"+url.PathEscape(c.Namespace)+"/daemonsets"+sel)
	if err != nil {
		return err
	}
	lb := map[string]bool{}
	byKey := map[string]*service{}
	for i := range services {
		s := &services[i]
		byKey[s.key()] = s
		if s.handled() {
			lb[s.key()] = true
		}
	}
	c.mu.Lock()
	c.lb = lb
	c.mu.Unlock()

	selectNodes := false
	for _, n := range nodes {
		if _, ok := n.Metadata.Labels[EnableLBLabel]; ok {
			selectNodes = true
		}
	}
	existing := map[string]bool{}
	for _, ds := range dss {
		existing[ds.Metadata.Name] = true
	}
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(lb)) {
		s := byKey[key]
		ds, err := c.daemonSet(s, selectNodes)
		if err != nil {
			// The Service itself is wrong: said once, and no reason to
			// hurry the next pass.
			c.once(key, fmt.Sprintf("service %s: %v", key, err))
			continue
		}
		// Applied every pass (an unchanged apply writes nothing), so an
		// edited DaemonSet is put back.
		name := ds.Metadata.Name
		if err := c.API.Apply(ctx, "/apis/apps/v1/namespaces/"+url.PathEscape(c.Namespace)+"/daemonsets/"+url.PathEscape(name), fieldManager, ds); err != nil {
			errs = append(errs, fmt.Errorf("service %s: DaemonSet %s: %w", key, name, err))
			continue
		}
		if !existing[name] {
			c.logf("service %s: applied DaemonSet %s/%s", key, c.Namespace, name)
			c.event(ctx, s, "Normal", "AppliedDaemonSet", fmt.Sprintf("Applied LoadBalancer DaemonSet %s/%s", c.Namespace, name))
		}
		if err := c.syncStatus(ctx, s, pods, nodes); err != nil {
			errs = append(errs, fmt.Errorf("service %s: status: %w", key, err))
		}
	}
	for _, ds := range dss {
		key := ds.Metadata.Labels[SvcNamespaceLabel] + "/" + ds.Metadata.Labels[SvcNameLabel]
		s := byKey[key]
		if s != nil && s.handled() && DaemonSetName(s.Metadata.Name, s.Metadata.UID) == ds.Metadata.Name {
			continue
		}
		// A Service that stopped being a LoadBalancer loses the
		// addresses ServiceLB gave it, before its DaemonSet goes (the
		// DaemonSet is what says it had them).
		if s != nil && s.Spec.Type != "LoadBalancer" && len(s.Status.LoadBalancer.Ingress) > 0 {
			if err := c.patchStatus(ctx, s, nil); errors.Is(err, kubeapi.ErrConflict) {
				c.poke()
				continue
			} else if err != nil {
				errs = append(errs, fmt.Errorf("service %s: status: %w", key, err))
				continue
			}
		}
		err := c.API.Do(ctx, http.MethodDelete, "/apis/apps/v1/namespaces/"+url.PathEscape(c.Namespace)+"/daemonsets/"+url.PathEscape(ds.Metadata.Name), "", nil, nil)
		if err != nil && !errors.Is(err, kubeapi.ErrNotFound) {
			errs = append(errs, fmt.Errorf("DaemonSet %s: %w", ds.Metadata.Name, err))
			continue
		}
		c.logf("deleted DaemonSet %s/%s (service %s is gone or no longer a LoadBalancer)", c.Namespace, ds.Metadata.Name, key)
	}
	return errors.Join(errs...)
}

// once logs msg unless it is what was last said about key.
func (c *Controller) once(key, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.said == nil {
		c.said = map[string]string{}
	}
	if c.said[key] != msg {
		c.said[key] = msg
		if c.Logf != nil {
			c.Logf("servicelb: %s", msg)
		}
	}
}

// ensureBasics creates the namespace and the svclb ServiceAccount when
// they are missing.
func (c *Controller) ensureBasics(ctx context.Context) error {
	create := func(path string, obj any) error {
		err := c.API.Do(ctx, http.MethodPost, path, "application/json", obj, nil)
		if errors.Is(err, kubeapi.ErrConflict) {
			return nil
		}
		return err
	}
	ns := "/api/v1/namespaces/" + url.PathEscape(c.Namespace)
	if err := c.API.Do(ctx, http.MethodGet, ns, "", nil, nil); errors.Is(err, kubeapi.ErrNotFound) {
		if err := create("/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": meta{Name: c.Namespace}}); err != nil {
			return fmt.Errorf("namespace %s: %w", c.Namespace, err)
		}
	} else if err != nil {
		return err
	}
	if err := c.API.Do(ctx, http.MethodGet, ns+"/serviceaccounts/svclb", "", nil, nil); errors.Is(err, kubeapi.ErrNotFound) {
		if err := create(ns+"/serviceaccounts", map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta{Name: "svclb", Namespace: c.Namespace}}); err != nil {
			return fmt.Errorf("service account %s/svclb: %w", c.Namespace, err)
		}
	} else if err != nil {
		return err
	}
	return nil
}

// DaemonSetName is k3s's: svclb-<name, at most 48 characters, no trailing
// dash>-<the first 8 characters of the Service's UID>.
func DaemonSetName(name, uid string) string {
	if len(name) > 48 {
		name = strings.TrimRight(name[:48], "-")
	}
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return "svclb-" + name + "-" + uid
}

// SourceRanges are the clients a Service admits: loadBalancerSourceRanges,
// else the annotation, else everyone (0.0.0.0/0, and ::/0 when the Service
// has IPv6).
func SourceRanges(spec []string, annotations map[string]string, families []string) (string, error) {
	ranges := spec
	if len(ranges) == 0 {
		for _, r := range strings.Split(annotations[SourceRangesKey], ",") {
			if r = strings.TrimSpace(r); r != "" {
				ranges = append(ranges, r)
			}
		}
	}
	var out []string
	for _, r := range ranges {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil {
			return "", fmt.Errorf("load balancer source range %q is not a CIDR", r)
		}
		out = append(out, p.Masked().String())
	}
	if len(out) == 0 {
		out = []string{"0.0.0.0/0"}
		if slices.Contains(families, "IPv6") {
			out = append(out, "::/0")
		}
	}
	return strings.Join(out, ","), nil
}

// daemonSet is the DaemonSet a Service gets, as k3s writes it.
func (c *Controller) daemonSet(s *service, selectNodes bool) (*dsObject, error) {
	name := DaemonSetName(s.Metadata.Name, s.Metadata.UID)
	ranges, err := SourceRanges(s.Spec.LoadBalancerSourceRanges, s.Metadata.Annotations, s.Spec.IPFamilies)
	if err != nil {
		return nil, err
	}
	local := s.Spec.ExternalTrafficPolicy == "Local"
	var containers []map[string]any
	for _, p := range s.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "TCP"
		}
		if proto != "TCP" && proto != "UDP" {
			c.once(s.key()+"/"+strconv.Itoa(int(p.Port)), fmt.Sprintf("service %s: port %d/%s is not forwarded: ServiceLB forwards TCP and UDP", s.key(), p.Port, proto))
			continue
		}
		pn := fmt.Sprintf("lb-%s-%d", strings.ToLower(proto), p.Port)
		env := []map[string]any{
			{"name": "SRC_PORT", "value": strconv.Itoa(int(p.Port))},
			{"name": "SRC_RANGES", "value": ranges},
			{"name": "DEST_PROTO", "value": proto},
		}
		if local {
			env = append(env,
				map[string]any{"name": "DEST_PORT", "value": strconv.Itoa(int(p.NodePort))},
				map[string]any{"name": "DEST_IPS", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "status.hostIPs"}}})
		} else {
			env = append(env,
				map[string]any{"name": "DEST_PORT", "value": strconv.Itoa(int(p.Port))},
				map[string]any{"name": "DEST_IPS", "value": strings.Join(s.Spec.ClusterIPs, ",")})
		}
		containers = append(containers, map[string]any{
			"name":            pn,
			"image":           strings.TrimSuffix(c.Registry, "/") + "/" + Image,
			"imagePullPolicy": "IfNotPresent",
			"ports":           []map[string]any{{"name": pn, "containerPort": p.Port, "hostPort": p.Port, "protocol": proto}},
			"env":             env,
			// k3s's: what klipper-lb's iptables rules need, kept so that
			// rancher's own image, pulled from a system-default-registry
			// mirror, works too (ballast's forwarder uses neither).
			"securityContext": map[string]any{"capabilities": map[string]any{"add": []string{"NET_ADMIN"}}},
		})
	}
	if len(containers) == 0 {
		return nil, errors.New("no TCP or UDP port to forward")
	}
	priority := DefaultPriority
	if v, ok := s.Metadata.Annotations[PriorityAnnotation]; ok {
		priority = v
	}
	var sysctls []map[string]string
	for _, f := range s.Spec.IPFamilies {
		switch f {
		case "IPv4":
			sysctls = append(sysctls, map[string]string{"name": "net.ipv4.ip_forward", "value": "1"})
		case "IPv6":
			sysctls = append(sysctls, map[string]string{"name": "net.ipv6.conf.all.forwarding", "value": "1"})
		}
	}
	podSpec := map[string]any{
		"securityContext":              map[string]any{"sysctls": sysctls},
		"priorityClassName":            priority,
		"serviceAccountName":           "svclb",
		"automountServiceAccountToken": false,
		"containers":                   containers,
		"tolerations": []map[string]any{
			{"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
			{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
			{"key": "CriticalAddonsOnly", "operator": "Exists"},
		},
	}
	nodeSelector := "false"
	if selectNodes {
		sel := map[string]string{EnableLBLabel: "true"}
		if pool := s.Metadata.Labels[LBPoolLabel]; pool != "" {
			sel[LBPoolLabel] = pool
		}
		podSpec["nodeSelector"] = sel
		nodeSelector = "true"
	}
	spec := map[string]any{
		"selector": map[string]any{"matchLabels": map[string]string{"app": name}},
		"template": map[string]any{
			"metadata": map[string]any{"labels": map[string]string{"app": name, SvcNameLabel: s.Metadata.Name, SvcNamespaceLabel: s.Metadata.Namespace}},
			"spec":     podSpec,
		},
		"updateStrategy": map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxUnavailable": 1}},
	}
	return &dsObject{
		APIVersion: "apps/v1",
		Kind:       "DaemonSet",
		Metadata: meta{
			Name:      name,
			Namespace: c.Namespace,
			Labels:    map[string]string{NodeSelectorLabel: nodeSelector, SvcNameLabel: s.Metadata.Name, SvcNamespaceLabel: s.Metadata.Namespace},
		},
		Spec: spec,
	}, nil
}

// Addresses are the ingress IPs of a Service: the nodes that run a ready
// svclb pod of it (and, when only local traffic is asked for, a ready
// endpoint), their ExternalIPs when any has one, else their InternalIPs,
// in the order of the Service's IP families, each family sorted.
func Addresses(s *service, pods []pod, nodes []node, readyNodes map[string]bool) []string {
	byName := map[string]*node{}
	for i := range nodes {
		byName[nodes[i].Metadata.Name] = &nodes[i]
	}
	ext, in := map[string]bool{}, map[string]bool{}
	for _, p := range pods {
		if p.Metadata.Labels[SvcNameLabel] != s.Metadata.Name || p.Metadata.Labels[SvcNamespaceLabel] != s.Metadata.Namespace {
			continue
		}
		if p.Spec.NodeName == "" || p.Status.PodIP == "" || !p.ready() {
			continue
		}
		if readyNodes != nil && !readyNodes[p.Spec.NodeName] {
			continue
		}
		n := byName[p.Spec.NodeName]
		if n == nil {
			continue
		}
		for _, a := range n.Status.Addresses {
			switch a.Type {
			case "ExternalIP":
				ext[a.Address] = true
			case "InternalIP":
				in[a.Address] = true
			}
		}
	}
	set := in
	if len(ext) > 0 {
		set = ext
	}
	var v4, v6 []netip.Addr
	for a := range set {
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil:
		case ip.Is4():
			v4 = append(v4, ip)
		default:
			v6 = append(v6, ip)
		}
	}
	slices.SortFunc(v4, func(a, b netip.Addr) int { return a.Compare(b) })
	slices.SortFunc(v6, func(a, b netip.Addr) int { return a.Compare(b) })
	families := s.Spec.IPFamilies
	if len(families) == 0 {
		families = []string{"IPv4"}
	}
	var out []string
	for _, f := range families {
		ips := v4
		if f == "IPv6" {
			ips = v6
		}
		for _, ip := range ips {
			out = append(out, ip.String())
		}
	}
	return out
}

func (c *Controller) syncStatus(ctx context.Context, s *service, pods []pod, nodes []node) error {
	var readyNodes map[string]bool
	if s.Spec.ExternalTrafficPolicy == "Local" {
		readyNodes = map[string]bool{}
		eps, err := list[endpointSlice](ctx, c.API, "/apis/discovery.k8s.io/v1/namespaces/"+url.PathEscape(s.Metadata.Namespace)+
			"/endpointslices?labelSelector="+url.QueryEscape("kubernetes.io/service-name="+s.Metadata.Name))
		if err != nil {
			return err
		}
		for _, es := range eps {
			for _, ep := range es.Endpoints {
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && ep.Conditions.Ready != nil && *ep.Conditions.Ready && ep.NodeName != nil {
					readyNodes[*ep.NodeName] = true
				}
			}
		}
	}
	want := Addresses(s, pods, nodes, readyNodes)
	var have []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		have = append(have, in.IP+in.Hostname)
	}
	if slices.Equal(want, have) {
		return nil
	}
	if err := c.patchStatus(ctx, s, want); errors.Is(err, kubeapi.ErrConflict) {
		c.poke() // the Service changed meanwhile: the next pass reads it again
		return nil
	} else if err != nil {
		return err
	}
	if len(want) == 0 {
		c.logf("service %s: no node has a ready svclb pod: no addresses", s.key())
		c.event(ctx, s, "Warning", "UnAvailableLoadBalancer", "There are no available nodes for LoadBalancer")
	} else {
		c.logf("service %s: addresses %s", s.key(), strings.Join(want, ", "))
		c.event(ctx, s, "Normal", "UpdatedLoadBalancer", fmt.Sprintf("Updated LoadBalancer with new IPs: %v -> %v", have, want))
	}
	return nil
}

// event records what ServiceLB did on the Service, as k3s does, for
// kubectl describe; a failure to record it is not the pass's.
func (c *Controller) event(ctx context.Context, s *service, typ, reason, msg string) {
	now := time.Now().UTC().Format(time.RFC3339)
	ev := map[string]any{
		"apiVersion": "v1",
		"kind":       "Event",
		"metadata":   map[string]any{"generateName": s.Metadata.Name + ".", "namespace": s.Metadata.Namespace},
		"involvedObject": map[string]any{
			"apiVersion": "v1", "kind": "Service", "namespace": s.Metadata.Namespace, "name": s.Metadata.Name,
			"uid": s.Metadata.UID, "resourceVersion": s.Metadata.ResourceVersion,
		},
		"type": typ, "reason": reason, "message": msg,
		"source":         map[string]string{"component": "service-lb-controller"},
		"firstTimestamp": now, "lastTimestamp": now, "count": 1,
	}
	_ = c.API.Do(ctx, http.MethodPost, "/api/v1/namespaces/"+url.PathEscape(s.Metadata.Namespace)+"/events", "application/json", ev, nil)
}

// patchStatus sets the Service's ingress IPs; the resourceVersion makes a
// status that changed meanwhile a conflict, tried again next pass.
func (c *Controller) patchStatus(ctx context.Context, s *service, ips []string) error {
	ing := []ingress{}
	for _, ip := range ips {
		ing = append(ing, ingress{IP: ip})
	}
	patch := map[string]any{
		"metadata": map[string]any{"resourceVersion": s.Metadata.ResourceVersion},
		"status":   map[string]any{"loadBalancer": map[string]any{"ingress": ing}},
	}
	return c.API.Do(ctx, http.MethodPatch, "/api/v1/namespaces/"+url.PathEscape(s.Metadata.Namespace)+"/services/"+url.PathEscape(s.Metadata.Name)+"/status",
		"application/merge-patch+json", patch, nil)
}
