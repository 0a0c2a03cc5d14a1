package netpol

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// Controller follows the pods, namespaces and NetworkPolicies of the
// cluster and keeps this node's rules in step: after every change (a
// quarter second later, so that a burst of changes costs one sync) and
// every Resync besides, which repairs rules something else removed.
type Controller struct {
	API      *kubeapi.Client
	NodeName string
	// Tables installs a ruleset (Host: iptables-restore and ipset).
	Tables interface {
		Apply(context.Context, Ruleset) error
	}
	Logf func(format string, args ...any)
	// Resync is the time between full syncs (5 minutes when 0).
	Resync time.Duration

	mu      sync.Mutex
	objects map[string]map[string]json.RawMessage // kind -> namespace/name -> object
	changed chan struct{}
	applied string // the last ruleset installed (Filter and sets), to skip a change that changes nothing
}

// kinds are the collections the controller follows.
var kinds = []struct{ name, path string }{
	{"pods", "/api/v1/pods"},
	{"namespaces", "/api/v1/namespaces"},
	{"networkpolicies", "/apis/networking.k8s.io/v1/networkpolicies"},
}

func (c *Controller) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf("network policy: "+format, args...)
	}
}

// Run follows the API and syncs until ctx ends. The first sync waits for
// the first list of every kind, so that no pod is left open (or shut) on
// half the picture.
func (c *Controller) Run(ctx context.Context) error {
	c.objects = map[string]map[string]json.RawMessage{}
	c.changed = make(chan struct{}, 1)
	listed := make(chan string, len(kinds))
	for _, k := range kinds {
		go kubeapi.Follow(ctx, 2*time.Second, func(err error) { c.logf("%s: %v", k.name, err) }, func(ctx context.Context) error {
			return c.follow(ctx, k.name, k.path, listed)
		})
	}
	for seen := map[string]bool{}; len(seen) < len(kinds); {
		select {
		case <-ctx.Done():
			return nil
		case k := <-listed:
			seen[k] = true
		}
	}
	resync := c.Resync
	if resync == 0 {
		resync = 5 * time.Minute
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	last := ""
	force := true
	for {
		err := c.sync(ctx, force)
		switch {
		case err != nil && err.Error() != last:
			c.logf("%v", err)
			last = err.Error()
		case err == nil && last != "":
			c.logf("rules in place again")
			last = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			force = true // repair what something else removed
		case <-c.changed:
			force = err != nil
			// Let a burst of changes (a Deployment's pods) settle.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

// follow lists one kind, then watches it from the list's version.
func (c *Controller) follow(ctx context.Context, kind, path string, listed chan<- string) error {
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []json.RawMessage `json:"items"`
	}
	if err := c.API.Do(ctx, http.MethodGet, path, "", nil, &list); err != nil {
		return err
	}
	fresh := map[string]json.RawMessage{}
	for _, it := range list.Items {
		fresh[objectKey(it)] = it
	}
	c.mu.Lock()
	c.objects[kind] = fresh
	c.mu.Unlock()
	c.poke()
	select {
	case listed <- kind:
	default:
	}
	return c.API.Watch(ctx, path, list.Metadata.ResourceVersion, func(ev kubeapi.Event) error {
		key := objectKey(ev.Object)
		c.mu.Lock()
		switch ev.Type {
		case "ADDED", "MODIFIED":
			c.objects[kind][key] = ev.Object
		case "DELETED":
			delete(c.objects[kind], key)
		default: // BOOKMARK
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		c.poke()
		return nil
	})
}

func (c *Controller) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func objectKey(raw json.RawMessage) string {
	var m struct {
		Metadata Meta `json:"metadata"`
	}
	_ = json.Unmarshal(raw, &m)
	return m.Metadata.Namespace + "/" + m.Metadata.Name
}

// state decodes the cached objects.
func (c *Controller) state() (State, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var st State
	var err error
	if st.Pods, err = decodeAll[Pod](c.objects["pods"], "pod"); err != nil {
		return st, err
	}
	if st.Namespaces, err = decodeAll[Namespace](c.objects["namespaces"], "namespace"); err != nil {
		return st, err
	}
	st.Policies, err = decodeAll[Policy](c.objects["networkpolicies"], "NetworkPolicy")
	return st, err
}

// decodeAll decodes objects in the order of their keys.
func decodeAll[T any](objects map[string]json.RawMessage, kind string) ([]T, error) {
	var out []T
	for _, k := range slices.Sorted(maps.Keys(objects)) {
		var v T
		if err := json.Unmarshal(objects[k], &v); err != nil {
			return nil, fmt.Errorf("%s %s: %w", kind, k, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// sync computes this node's rules and installs them, unless they are the
// ones installed last and force is false: most changes (a pod's status)
// change no rule, and on a slow node a burst of iptables runs is what
// hurts.
func (c *Controller) sync(ctx context.Context, force bool) error {
	st, err := c.state()
	if err != nil {
		return err
	}
	if st.Node, err = c.node(ctx); err != nil {
		return err
	}
	rs := Compute(st)
	key := fmt.Sprint(rs.Filter, rs.Sets)
	if !force && key == c.applied {
		return nil
	}
	for _, w := range rs.Warnings {
		c.logf("%s", w)
	}
	c.applied = ""
	if err := c.Tables.Apply(ctx, rs); err != nil {
		return err
	}
	c.applied = key
	return nil
}

// node is this node's name and the addresses its own traffic to pods
// comes from: its InternalIP and ExternalIP, and the first address of
// each pod CIDR (the pod bridge's, which the kubelet's probes leave by).
func (c *Controller) node(ctx context.Context) (Node, error) {
	var n struct {
		Spec struct {
			PodCIDRs []string `json:"podCIDRs"`
		} `json:"spec"`
		Status struct {
			Addresses []struct{ Type, Address string } `json:"addresses"`
		} `json:"status"`
	}
	if err := c.API.Do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(c.NodeName), "", nil, &n); err != nil {
		return Node{}, fmt.Errorf("node %s: %w", c.NodeName, err)
	}
	node := Node{Name: c.NodeName}
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil && (a.Type == "InternalIP" || a.Type == "ExternalIP") {
			node.Addrs = append(node.Addrs, ip)
		}
	}
	for _, s := range n.Spec.PodCIDRs {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			node.Addrs = append(node.Addrs, p.Masked().Addr().Next())
		}
	}
	return node, nil
}
