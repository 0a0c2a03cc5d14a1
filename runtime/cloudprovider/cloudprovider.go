// Package cloudprovider is the cloud controller k3s embeds in its server
// (pkg/cloudprovider, the instances part): kubelets run with
// --cloud-provider=external, so each registers its node with the taint
// node.cloudprovider.kubernetes.io/uninitialized and waits for a cloud
// controller to say what the node is. This one sets the node's addresses
// from what the node itself declared (the kubelet's
// alpha.kubernetes.io/provided-node-ip from --node-ip, and k3s's
// k3s.io/internal-ip, k3s.io/external-ip and k3s.io/hostname annotations,
// which carry --node-external-ip), the provider ID k3s://<node> and the
// instance type k3s, then removes the taint, and keeps the addresses
// current when the annotations change.
//
// It runs in the k3s server process, as k3s-cloud-controller-manager (the
// identity the packaged ccm RBAC grants), following the nodes with a watch.
package cloudprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// Names k3s and Kubernetes use.
const (
	UninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"
	ProvidedNodeIP     = "alpha.kubernetes.io/provided-node-ip"
	InternalIPKey      = "k3s.io/internal-ip"
	ExternalIPKey      = "k3s.io/external-ip"
	HostnameKey        = "k3s.io/hostname"
	InstanceTypeLabel  = "node.kubernetes.io/instance-type"
	ProviderName       = "k3s"
)

// Controller initializes nodes.
type Controller struct {
	API  *kubeapi.Client
	Logf func(format string, args ...any)
	// Retry is the wait before listing again after an error (2 s).
	Retry time.Duration
}

func (c *Controller) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// Address is a node address.
type Address struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

type taint struct {
	Key       string `json:"key"`
	Value     string `json:"value,omitempty"`
	Effect    string `json:"effect"`
	TimeAdded string `json:"timeAdded,omitempty"`
}

// node is what the controller reads of a Node.
type node struct {
	Metadata struct {
		Name            string            `json:"name"`
		ResourceVersion string            `json:"resourceVersion"`
		Annotations     map[string]string `json:"annotations"`
		Labels          map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ProviderID string  `json:"providerID"`
		Taints     []taint `json:"taints"`
	} `json:"spec"`
	Status struct {
		Addresses []Address `json:"addresses"`
	} `json:"status"`
}

// Addresses are what a node declared about itself: InternalIP from
// k3s.io/internal-ip, else the kubelet's provided-node-ip, else what the
// node's status already has; ExternalIP from k3s.io/external-ip; Hostname
// from k3s.io/hostname, else the node name.
func Addresses(name string, annotations map[string]string, current []Address) []Address {
	split := func(v string) []string {
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	var out []Address
	internal := split(annotations[InternalIPKey])
	if len(internal) == 0 {
		internal = split(annotations[ProvidedNodeIP])
	}
	if len(internal) == 0 {
		for _, a := range current {
			if a.Type == "InternalIP" {
				internal = append(internal, a.Address)
			}
		}
	}
	for _, ip := range internal {
		out = append(out, Address{"InternalIP", ip})
	}
	for _, ip := range split(annotations[ExternalIPKey]) {
		out = append(out, Address{"ExternalIP", ip})
	}
	host := annotations[HostnameKey]
	if host == "" {
		host = name
	}
	return append(out, Address{"Hostname", host})
}

// Run lists and watches the nodes until ctx ends; after an error (the
// API server restarting, a watch too old) it lists again.
func (c *Controller) Run(ctx context.Context) {
	kubeapi.Follow(ctx, c.Retry, func(err error) { c.logf("cloud controller: %v", err) }, c.runOnce)
}

func (c *Controller) runOnce(ctx context.Context) error {
	var list struct {
		Metadata struct{ ResourceVersion string }
		Items    []node
	}
	if err := c.API.Do(ctx, http.MethodGet, "/api/v1/nodes", "", nil, &list); err != nil {
		return err
	}
	for _, n := range list.Items {
		if err := c.Sync(ctx, n); err != nil {
			return err
		}
	}
	return c.API.Watch(ctx, "/api/v1/nodes", list.Metadata.ResourceVersion, func(ev kubeapi.Event) error {
		if ev.Type != "ADDED" && ev.Type != "MODIFIED" {
			return nil
		}
		var n node
		if err := json.Unmarshal(ev.Object, &n); err != nil {
			return err
		}
		return c.Sync(ctx, n)
	})
}

// Sync brings one node up to date: addresses when they differ, and, while
// it carries the uninitialized taint, provider ID, instance type and the
// taint's removal. A node already right costs no request.
//
// The taint list is written whole, so the write is conditional on the
// resourceVersion it was read at: a watch event can be older than the
// node (the node lifecycle controller may have added or removed a taint
// since, or this controller already initialized it), and writing a stale
// list back would bring a removed taint back or drop a new one. On a
// conflict the node is read again.
func (c *Controller) Sync(ctx context.Context, n node) error {
	for range 5 {
		err := c.sync(ctx, n)
		if !errors.Is(err, kubeapi.ErrConflict) {
			return err
		}
		name := n.Metadata.Name
		n = node{}
		if err := c.API.Do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(name), "", nil, &n); err != nil {
			return err
		}
	}
	return fmt.Errorf("node %s: changed under the cloud controller at each of 5 tries", n.Metadata.Name)
}

func (c *Controller) sync(ctx context.Context, n node) error {
	name := n.Metadata.Name
	path := "/api/v1/nodes/" + url.PathEscape(name)
	want := Addresses(name, n.Metadata.Annotations, n.Status.Addresses)
	if !slices.Equal(want, n.Status.Addresses) {
		patch := map[string]any{"status": map[string]any{"addresses": want}}
		if err := c.API.Do(ctx, http.MethodPatch, path+"/status", "application/merge-patch+json", patch, nil); err != nil {
			return fmt.Errorf("node %s: addresses: %w", name, err)
		}
	}
	var kept []taint
	uninitialized := false
	for _, t := range n.Spec.Taints {
		if t.Key == UninitializedTaint {
			uninitialized = true
			continue
		}
		kept = append(kept, t)
	}
	if !uninitialized {
		return nil
	}
	spec := map[string]any{"taints": kept}
	if n.Spec.ProviderID == "" {
		spec["providerID"] = ProviderName + "://" + name
	}
	patch := map[string]any{
		"metadata": map[string]any{
			"labels":          map[string]string{InstanceTypeLabel: ProviderName},
			"resourceVersion": n.Metadata.ResourceVersion,
		},
		"spec": spec,
	}
	if kept == nil {
		spec["taints"] = []taint{}
	}
	if err := c.API.Do(ctx, http.MethodPatch, path, "application/merge-patch+json", patch, nil); err != nil {
		return fmt.Errorf("node %s: initializing: %w", name, err)
	}
	c.logf("cloud controller: node %s initialized (%s)", name, describe(want))
	return nil
}

func describe(as []Address) string {
	var parts []string
	for _, a := range as {
		parts = append(parts, a.Type+" "+a.Address)
	}
	return strings.Join(parts, ", ")
}
