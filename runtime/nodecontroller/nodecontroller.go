// Package nodecontroller does what k3s's node controller (pkg/node) does
// in the server process, for every node of the cluster: it keeps CoreDNS's
// NodeHosts (the coredns ConfigMap key that the hosts plugin reads, "IP
// name" per node address) current as nodes come and go, so that pods
// resolve node names; and when a node is deleted it deletes the node's
// password secret, so that a machine may join again under that name (and
// the server removes a deleted server's etcd member).
package nodecontroller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// Controller lists the nodes, then follows them with a watch: a node's
// deletion is seen at once, and a watch costs the k3s process no cache.
type Controller struct {
	API  *kubeapi.Client
	Logf func(format string, args ...any)
	// Retry is the wait before listing again after an error (2 s).
	Retry time.Duration
	// Deleted, when set, is called for each node deleted from the
	// cluster with its last annotations (a server's etcd member goes with
	// its node).
	Deleted func(ctx context.Context, node string, annotations map[string]string) error

	seen map[string]map[string]string // node -> annotations, as last listed or watched
}

// FieldManager is the controller's name in managedFields.
const FieldManager = "k3s-node-controller"

// Node is what the controller reads of a node.
type Node struct {
	Name      string
	Addresses []string // InternalIP addresses
}

// NodeHosts renders the hosts file: "IP name" lines, sorted by name then
// address, for every InternalIP of every node.
func NodeHosts(nodes map[string]Node) string {
	names := make([]string, 0, len(nodes))
	for n := range nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		addrs := append([]string(nil), nodes[name].Addresses...)
		sort.Strings(addrs)
		for _, a := range addrs {
			fmt.Fprintf(&b, "%s %s\n", a, name)
		}
	}
	return b.String()
}

func (c *Controller) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// nodeObject is the part of a Node object the controller reads.
type nodeObject struct {
	Metadata struct {
		Name, ResourceVersion string
		Annotations           map[string]string
	}
	Status struct {
		Addresses []struct{ Type, Address string }
	}
}

func (o nodeObject) node() Node {
	n := Node{Name: o.Metadata.Name}
	for _, a := range o.Status.Addresses {
		if _, err := netip.ParseAddr(a.Address); a.Type == "InternalIP" && err == nil {
			n.Addresses = append(n.Addresses, a.Address)
		}
	}
	return n
}

// Run lists and watches the nodes until ctx ends; after an error (the
// API server restarting, a watch too old) it lists again.
func (c *Controller) Run(ctx context.Context) {
	kubeapi.Follow(ctx, c.Retry, func(err error) { c.logf("node controller: %v", err) }, c.runOnce)
}

func (c *Controller) runOnce(ctx context.Context) error {
	var list struct {
		Metadata struct{ ResourceVersion string }
		Items    []nodeObject
	}
	if err := c.API.Do(ctx, http.MethodGet, "/api/v1/nodes", "", nil, &list); err != nil {
		return err
	}
	nodes := map[string]Node{}
	for _, it := range list.Items {
		nodes[it.Metadata.Name] = it.node()
	}
	// A node deleted while the watch was down (between an error and this
	// list) is handled now: what the last watch saw is remembered.
	for name, annotations := range c.seen {
		if _, ok := nodes[name]; !ok {
			if err := c.deleted(ctx, name, annotations); err != nil {
				return err
			}
		}
	}
	c.seen = map[string]map[string]string{}
	for _, it := range list.Items {
		c.seen[it.Metadata.Name] = it.Metadata.Annotations
	}
	hosts := NodeHosts(nodes)
	if err := c.syncNodeHosts(ctx, hosts); err != nil {
		return err
	}
	return c.API.Watch(ctx, "/api/v1/nodes", list.Metadata.ResourceVersion, func(ev kubeapi.Event) error {
		var o nodeObject
		if err := json.Unmarshal(ev.Object, &o); err != nil {
			return err
		}
		switch ev.Type {
		case "ADDED", "MODIFIED":
			nodes[o.Metadata.Name] = o.node()
			c.seen[o.Metadata.Name] = o.Metadata.Annotations
		case "DELETED":
			delete(nodes, o.Metadata.Name)
			if err := c.deleted(ctx, o.Metadata.Name, o.Metadata.Annotations); err != nil {
				return err
			}
		default:
			return nil
		}
		if h := NodeHosts(nodes); h != hosts {
			if err := c.syncNodeHosts(ctx, h); err != nil {
				return err
			}
			hosts = h
		}
		return nil
	})
}

// deleted does what a node's deletion asks for; the node is forgotten
// once done, and remembered (to try again after the next list) if not.
func (c *Controller) deleted(ctx context.Context, node string, annotations map[string]string) error {
	if err := c.deletePassword(ctx, node); err != nil {
		return err
	}
	if c.Deleted != nil {
		if err := c.Deleted(ctx, node, annotations); err != nil {
			return err
		}
	}
	delete(c.seen, node)
	return nil
}

// deletePassword removes a deleted node's password secret, so that a
// machine may join under its name again.
func (c *Controller) deletePassword(ctx context.Context, node string) error {
	err := c.API.Do(ctx, http.MethodDelete, "/api/v1/namespaces/kube-system/secrets/"+strings.ToLower(node)+".node-password.k3s", "", nil, nil)
	switch {
	case err == nil:
		c.logf("node controller: node %s deleted: removed its password secret", node)
	case !errors.Is(err, kubeapi.ErrNotFound):
		return err
	}
	return nil
}

// syncNodeHosts writes hosts into the coredns ConfigMap when it differs;
// nothing when there is no such ConfigMap (CoreDNS disabled).
func (c *Controller) syncNodeHosts(ctx context.Context, hosts string) error {
	const path = "/api/v1/namespaces/kube-system/configmaps/coredns"
	var cm struct{ Data map[string]string }
	err := c.API.Do(ctx, http.MethodGet, path, "", nil, &cm)
	if errors.Is(err, kubeapi.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur, ok := cm.Data["NodeHosts"]; ok && cur == hosts {
		return nil
	}
	obj := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": kubeapi.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		"data":     map[string]string{"NodeHosts": hosts},
	}
	return c.API.Apply(ctx, path, FieldManager, obj)
}
