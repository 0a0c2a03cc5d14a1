// Package deploy is the API side of k3s's deploy controller: it applies
// the documents manifests.Controller reads from server/manifests with
// server-side apply (field manager "k3s", forced, as k3s's apply owns the
// fields it sets). It links client-go, so it lives apart from the light
// packages and runs as the `k3s deploy-controller` component.
package deploy

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// FieldManager is the server-side apply manager name k3s uses.
const FieldManager = "k3s"

// DefaultNamespace receives namespaced objects that name no namespace, as
// k3s deploys them (its Addon objects live in kube-system).
const DefaultNamespace = "kube-system"

// Applier implements manifests.Applier.
type Applier struct {
	Client dynamic.Interface
	// Mapper maps kinds to resources; it is Reset once when a kind is
	// unknown (an earlier document may have added a CRD).
	Mapper meta.ResettableRESTMapper
}

// New returns an Applier talking to the apiserver of cfg, discovering
// kinds through a cached discovery client.
func New(cfg *rest.Config) (*Applier, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("deploy: discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("deploy: dynamic client: %w", err)
	}
	return &Applier{Client: dyn, Mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Decode turns one YAML or JSON document into objects, expanding a List.
func Decode(doc []byte) ([]*unstructured.Unstructured, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, err
	}
	if !u.IsList() {
		return []*unstructured.Unstructured{u}, nil
	}
	l, err := u.ToList()
	if err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, 0, len(l.Items))
	for i := range l.Items {
		out = append(out, &l.Items[i])
	}
	return out, nil
}

// Apply server-side applies every object of every document, in order,
// and stops at the first failure (the controller retries the file on its
// next pass). Errors name the file, the document and the object.
func (a *Applier) Apply(ctx context.Context, file string, docs [][]byte) error {
	for i, doc := range docs {
		objs, err := Decode(doc)
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", file, i+1, err)
		}
		for _, o := range objs {
			if err := a.applyOne(ctx, o); err != nil {
				return fmt.Errorf("%s: document %d: %s %s: %w", file, i+1, o.GetKind(), o.GetName(), err)
			}
		}
	}
	return nil
}

func (a *Applier) applyOne(ctx context.Context, o *unstructured.Unstructured) error {
	gvk := o.GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return fmt.Errorf("apiVersion and kind are required")
	}
	if o.GetName() == "" {
		return fmt.Errorf("metadata.name is required")
	}
	m, err := a.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.Mapper.Reset()
		m, err = a.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = a.Client.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.GetNamespace() == "" {
			o.SetNamespace(DefaultNamespace)
		}
		ri = a.Client.Resource(m.Resource).Namespace(o.GetNamespace())
	} else {
		o.SetNamespace("")
	}
	body, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	force := true
	_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
	return err
}
