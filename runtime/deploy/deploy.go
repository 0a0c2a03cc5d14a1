// Package deploy is the API side of k3s's deploy controller: it applies
// the documents manifests.Controller reads from server/manifests with
// server-side apply (field manager "k3s", forced, as k3s's apply owns the
// fields it sets), and deletes the objects of disabled manifests. It links
// client-go, so it lives apart from the light packages and runs as the
// `k3s deploy-controller` component.
package deploy

import (
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// resource maps o to its resource client, defaulting the namespace of a
// namespaced object to kube-system and clearing it on a cluster-scoped one.
func (a *Applier) resource(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return nil, fmt.Errorf("apiVersion and kind are required")
	}
	if o.GetName() == "" {
		return nil, fmt.Errorf("metadata.name is required")
	}
	m, err := a.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.Mapper.Reset()
		m, err = a.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.GetNamespace() == "" {
			o.SetNamespace(DefaultNamespace)
		}
		return a.Client.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	o.SetNamespace("")
	return a.Client.Resource(m.Resource), nil
}

func (a *Applier) applyOne(ctx context.Context, o *unstructured.Unstructured) error {
	ri, err := a.resource(o)
	if err != nil {
		return err
	}
	body, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	force := true
	_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
	return err
}

// Delete deletes the objects of a disabled manifest, last document
// first (a Deployment before its ServiceAccount), and stops at the first
// failure (the controller keeps the file and retries). As k3s deletes only
// the objects its Addon owns, an object is deleted only if field manager
// "k3s" has applied it: one created by someone else under the same name is
// kept. An object already gone, or a kind the server no longer serves, is
// not an error. Dependents go in the background (ReplicaSets, Pods).
func (a *Applier) Delete(ctx context.Context, file string, docs [][]byte) error {
	type item struct {
		doc int
		o   *unstructured.Unstructured
	}
	var items []item
	for i, doc := range docs {
		objs, err := Decode(doc)
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", file, i+1, err)
		}
		for _, o := range objs {
			items = append(items, item{i + 1, o})
		}
	}
	for j := len(items) - 1; j >= 0; j-- {
		it := items[j]
		if err := a.deleteOne(ctx, it.o); err != nil {
			return fmt.Errorf("%s: document %d: %s %s: deleting: %w", file, it.doc, it.o.GetKind(), it.o.GetName(), err)
		}
	}
	return nil
}

func (a *Applier) deleteOne(ctx context.Context, o *unstructured.Unstructured) error {
	ri, err := a.resource(o)
	if meta.IsNoMatchError(err) {
		return nil
	}
	if err != nil {
		return err
	}
	cur, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !AppliedByK3s(cur) {
		return nil
	}
	uid := cur.GetUID()
	background := metav1.DeletePropagationBackground
	err = ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{
		PropagationPolicy: &background,
		// Not an object of the same name created since the Get.
		Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// AppliedByK3s reports whether field manager "k3s" has server-side
// applied o (its managedFields record an Apply by that manager).
func AppliedByK3s(o *unstructured.Unstructured) bool {
	for _, mf := range o.GetManagedFields() {
		if mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}
