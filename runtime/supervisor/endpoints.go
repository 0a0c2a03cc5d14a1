package supervisor

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// fieldManager is the supervisor's name in managedFields.
const fieldManager = "k3s-supervisor"

// The kubernetes Service's endpoints. kube-apiserver would publish its own
// address and port (127.0.0.1-bound 6444 here), which pods on other nodes
// cannot reach; k3s's patched apiserver advertises the supervisor's port
// instead. Upstream has no such flag, so the apiserver runs with
// --endpoint-reconciler-type=none and the supervisor publishes
// <advertise address>:<https-listen-port> itself, as Endpoints (not
// mirrored) and an EndpointSlice, which kube-proxy follows.

type endpointPort struct {
	Name     string `json:"name"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

func kubernetesEndpoints(addrs []netip.Addr, port int) (endpoints, slice map[string]any) {
	ports := []endpointPort{{Name: "https", Port: port, Protocol: "TCP"}}
	family := "IPv4"
	if len(addrs) > 0 && addrs[0].Is6() {
		family = "IPv6"
	}
	var subsetAddrs []map[string]string
	var sliceEndpoints []map[string]any
	for _, a := range addrs {
		subsetAddrs = append(subsetAddrs, map[string]string{"ip": a.String()})
		sliceEndpoints = append(sliceEndpoints, map[string]any{"addresses": []string{a.String()}, "conditions": map[string]any{"ready": true}})
	}
	endpoints = map[string]any{
		"apiVersion": "v1", "kind": "Endpoints",
		"metadata": kubeapi.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: map[string]string{
			"endpointslice.kubernetes.io/skip-mirror": "true",
		}},
		"subsets": []map[string]any{{
			"addresses": subsetAddrs,
			"ports":     ports,
		}},
	}
	slice = map[string]any{
		"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
		"metadata": kubeapi.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: map[string]string{
			"kubernetes.io/service-name":             "kubernetes",
			"endpointslice.kubernetes.io/managed-by": "supervisor.k3s.cattle.io",
		}},
		"addressType": family,
		"endpoints":   sliceEndpoints,
		"ports":       ports,
	}
	return endpoints, slice
}

// Servers find each other through Leases in kube-system, one per
// supervisor, renewed every leaseRenew: the kubernetes Service's
// endpoints and /v1-k3s/apiservers list the servers whose lease is
// fresh, so a server that stops drops out within leaseDuration (what
// kube-apiserver's own "lease" endpoint reconciler does, for the
// supervisor's port instead of the apiserver's).
const (
	leaseNamespace = "kube-system"
	leaseLabel     = "supervisor.k3s.cattle.io/apiserver"
	leaseDuration  = 30 * time.Second
	leaseRenew     = 10 * time.Second
)

// leaseName is the Lease of the supervisor at addr:port.
func leaseName(ap netip.AddrPort) string {
	r := strings.NewReplacer(".", "-", ":", "-", "[", "", "]", "")
	return Program + "-supervisor-" + r.Replace(ap.String())
}

type leaseList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			HolderIdentity       string `json:"holderIdentity"`
			LeaseDurationSeconds int    `json:"leaseDurationSeconds"`
			RenewTime            string `json:"renewTime"`
		} `json:"spec"`
	} `json:"items"`
}

// renewLease writes this supervisor's Lease and returns the addresses of
// every server with a fresh one (this one included), sorted.
func (s *Server) renewLease(ctx context.Context) ([]netip.Addr, error) {
	self := netip.AddrPortFrom(s.AdvertiseAddress, uint16(s.Port))
	now := s.now().UTC()
	lease := map[string]any{
		"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
		"metadata": kubeapi.ObjectMeta{Name: leaseName(self), Namespace: leaseNamespace, Labels: map[string]string{leaseLabel: "true"}},
		"spec": map[string]any{
			"holderIdentity":       self.String(),
			"leaseDurationSeconds": int(leaseDuration / time.Second),
			"renewTime":            now.Format("2006-01-02T15:04:05.000000Z07:00"),
		},
	}
	if err := s.api.Apply(ctx, "/apis/coordination.k8s.io/v1/namespaces/"+leaseNamespace+"/leases/"+leaseName(self), fieldManager, lease); err != nil {
		return nil, err
	}
	var list leaseList
	if err := s.api.Do(ctx, "GET", "/apis/coordination.k8s.io/v1/namespaces/"+leaseNamespace+"/leases?labelSelector="+leaseLabel+"%3Dtrue", "", nil, &list); err != nil {
		return nil, err
	}
	seen := map[netip.Addr]bool{s.AdvertiseAddress: true}
	for _, l := range list.Items {
		ap, err := netip.ParseAddrPort(l.Spec.HolderIdentity)
		if err != nil {
			continue
		}
		renewed, err := time.Parse(time.RFC3339Nano, l.Spec.RenewTime)
		if err != nil || now.Sub(renewed) > time.Duration(l.Spec.LeaseDurationSeconds)*time.Second {
			continue
		}
		seen[ap.Addr()] = true
	}
	addrs := make([]netip.Addr, 0, len(seen))
	for a := range seen {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	return addrs, nil
}

// publishEndpoints renews this server's Lease every leaseRenew and points
// the kubernetes Endpoints and EndpointSlice at the servers with fresh
// leases, until ctx ends; a deleted or edited object comes back at the
// next renewal.
func (s *Server) publishEndpoints(ctx context.Context) {
	var last []netip.Addr
	for {
		addrs, err := s.renewLease(ctx)
		if err == nil {
			ep, sl := kubernetesEndpoints(addrs, s.Port)
			err = s.api.Apply(ctx, "/api/v1/namespaces/default/endpoints/kubernetes", fieldManager, ep)
			if err == nil {
				err = s.api.Apply(ctx, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes", fieldManager, sl)
			}
		}
		wait := leaseRenew
		switch {
		case err != nil:
			wait = 2 * time.Second
			if last != nil {
				s.logf("kubernetes endpoints: %v", err)
			}
		case !slices.Equal(addrs, last):
			var list []string
			for _, a := range addrs {
				list = append(list, netip.AddrPortFrom(a, uint16(s.Port)).String())
			}
			s.logf("kubernetes service endpoints: %s", strings.Join(list, ", "))
			last = addrs
			s.setServers(list)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
