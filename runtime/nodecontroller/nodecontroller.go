// Package nodecontroller does what k3s's node controller (pkg/node) does
// in the server process, for every node of the cluster: it keeps CoreDNS's
// NodeHosts (the coredns ConfigMap key that the hosts plugin reads, "IP
// name" per node address) current as nodes come and go, so that pods
// resolve node names; and when a node is deleted it deletes the node's
// password secret, so that a machine may join again under that name.
package nodecontroller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// Controller polls the nodes (a few requests a minute: no watch cache to
// keep in the k3s process).
type Controller struct {
	API *kubeapi.Client
	// Interval between passes (10 s).
	Interval time.Duration
	Logf     func(format string, args ...any)
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
func NodeHosts(nodes []Node) string {
	sorted := append([]Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var b strings.Builder
	for _, n := range sorted {
		addrs := append([]string(nil), n.Addresses...)
		sort.Strings(addrs)
		for _, a := range addrs {
			fmt.Fprintf(&b, "%s %s\n", a, n.Name)
		}
	}
	return b.String()
}

func (c *Controller) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// Run syncs every Interval until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	interval := c.Interval
	if interval == 0 {
		interval = 10 * time.Second
	}
	var known map[string]bool
	lastErr := ""
	for {
		next, err := c.Sync(ctx, known)
		if err == nil {
			known = next
			lastErr = ""
		} else if ctx.Err() == nil && err.Error() != lastErr {
			lastErr = err.Error()
			c.logf("node controller: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// Sync does one pass: NodeHosts written when it differs, and the password
// secrets of nodes in known but gone now deleted (known nil: the first
// pass, which deletes nothing). It returns the nodes it saw.
func (c *Controller) Sync(ctx context.Context, known map[string]bool) (map[string]bool, error) {
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				Addresses []struct{ Type, Address string }
			}
		}
	}
	if err := c.API.Do(ctx, http.MethodGet, "/api/v1/nodes", "", nil, &list); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var nodes []Node
	for _, it := range list.Items {
		n := Node{Name: it.Metadata.Name}
		for _, a := range it.Status.Addresses {
			if _, err := netip.ParseAddr(a.Address); a.Type == "InternalIP" && err == nil {
				n.Addresses = append(n.Addresses, a.Address)
			}
		}
		nodes = append(nodes, n)
		seen[n.Name] = true
	}
	var errs []error
	if err := c.syncNodeHosts(ctx, NodeHosts(nodes)); err != nil {
		errs = append(errs, err)
	}
	for name := range known {
		if seen[name] {
			continue
		}
		err := c.API.Do(ctx, http.MethodDelete, "/api/v1/namespaces/kube-system/secrets/"+strings.ToLower(name)+".node-password.k3s", "", nil, nil)
		switch {
		case err == nil:
			c.logf("node controller: node %s deleted: removed its password secret", name)
		case !errors.Is(err, kubeapi.ErrNotFound):
			errs = append(errs, err)
			seen[name] = true // try again next pass
		}
	}
	return seen, errors.Join(errs...)
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
