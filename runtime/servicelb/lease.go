package servicelb

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// LeaseName is the Lease (in the ServiceLB namespace) the servers of a
// cluster take turns holding: only its holder runs passes, so two servers
// (one upgraded, one not) never fight over a DaemonSet.
const LeaseName = "k3s-servicelb"

const (
	leaseDuration = 30 * time.Second
	leaseRenew    = 10 * time.Second
)

type lease struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   meta   `json:"metadata"`
	Spec       struct {
		HolderIdentity       string `json:"holderIdentity,omitempty"`
		LeaseDurationSeconds int    `json:"leaseDurationSeconds,omitempty"`
		AcquireTime          string `json:"acquireTime,omitempty"`
		RenewTime            string `json:"renewTime,omitempty"`
	} `json:"spec"`
}

const microTime = "2006-01-02T15:04:05.000000Z07:00"

// leader keeps trying to hold the lease until ctx ends, setting held
// while it does and poking the controller when it gets it.
func (c *Controller) leader(ctx context.Context, held *atomic.Bool) {
	for {
		ok, err := c.tryLease(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			c.once("lease", fmt.Sprintf("lease %s/%s: %v", c.Namespace, LeaseName, err))
		}
		if ok && !held.Load() {
			c.logf("holding lease %s/%s: this server runs ServiceLB", c.Namespace, LeaseName)
			held.Store(true)
			c.poke()
		} else if !ok && held.Load() && err == nil {
			c.logf("lease %s/%s went to another server", c.Namespace, LeaseName)
			held.Store(false)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(leaseRenew):
		}
	}
}

// tryLease takes, renews or leaves the lease; it says whether this
// server holds it now. An error keeps the last state (the holder's lease
// outlives a renewal or two that failed).
func (c *Controller) tryLease(ctx context.Context, now time.Time) (bool, error) {
	path := "/apis/coordination.k8s.io/v1/namespaces/" + url.PathEscape(c.Namespace) + "/leases"
	var l lease
	err := c.API.Do(ctx, http.MethodGet, path+"/"+LeaseName, "", nil, &l)
	if errors.Is(err, kubeapi.ErrNotFound) {
		l = lease{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Metadata: meta{Name: LeaseName, Namespace: c.Namespace}}
		l.Spec.HolderIdentity = c.Identity
		l.Spec.LeaseDurationSeconds = int(leaseDuration / time.Second)
		l.Spec.AcquireTime = now.UTC().Format(microTime)
		l.Spec.RenewTime = l.Spec.AcquireTime
		err := c.API.Do(ctx, http.MethodPost, path, "application/json", l, nil)
		if errors.Is(err, kubeapi.ErrConflict) {
			return false, nil // another server created it first
		}
		return err == nil, err
	} else if err != nil {
		return false, err
	}
	mine := l.Spec.HolderIdentity == c.Identity
	if !mine {
		renewed, perr := time.Parse(microTime, l.Spec.RenewTime)
		d := time.Duration(l.Spec.LeaseDurationSeconds) * time.Second
		if l.Spec.HolderIdentity != "" && perr == nil && now.Before(renewed.Add(d)) {
			return false, nil // held, and still fresh
		}
		l.Spec.HolderIdentity = c.Identity
		l.Spec.AcquireTime = now.UTC().Format(microTime)
	}
	l.Spec.LeaseDurationSeconds = int(leaseDuration / time.Second)
	l.Spec.RenewTime = now.UTC().Format(microTime)
	// The resourceVersion read makes a concurrent takeover a conflict.
	err = c.API.Do(ctx, http.MethodPut, path+"/"+LeaseName, "application/json", l, nil)
	if errors.Is(err, kubeapi.ErrConflict) {
		return false, nil
	}
	return err == nil, err
}

// DeleteAll removes every svclb DaemonSet in namespace, as k3s does when
// ServiceLB is disabled: their pods would keep holding the Services'
// ports on every node (and keep another load balancer from them). It
// tries again until it succeeds or ctx ends.
func DeleteAll(ctx context.Context, api *kubeapi.Client, namespace string, logf func(string, ...any)) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	path := "/apis/apps/v1/namespaces/" + url.PathEscape(namespace) + "/daemonsets?labelSelector=" + url.QueryEscape(NodeSelectorLabel)
	last := ""
	for ctx.Err() == nil {
		var l struct{ Items []daemonSet }
		err := api.Do(ctx, http.MethodGet, path, "", nil, &l)
		if err == nil && len(l.Items) > 0 {
			if err = api.Do(ctx, http.MethodDelete, path, "", nil, nil); err == nil {
				logf("servicelb is disabled: deleted %d svclb DaemonSet(s) in %s", len(l.Items), namespace)
			}
		}
		if err == nil {
			return
		}
		if err.Error() != last && ctx.Err() == nil {
			last = err.Error()
			logf("servicelb is disabled: removing svclb DaemonSets: %v", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}
