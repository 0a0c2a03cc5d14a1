package supervisor

import (
	"context"
	"net/netip"
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

func kubernetesEndpoints(addr netip.Addr, port int) (endpoints, slice map[string]any) {
	ports := []endpointPort{{Name: "https", Port: port, Protocol: "TCP"}}
	family := "IPv4"
	if addr.Is6() {
		family = "IPv6"
	}
	endpoints = map[string]any{
		"apiVersion": "v1", "kind": "Endpoints",
		"metadata": kubeapi.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: map[string]string{
			"endpointslice.kubernetes.io/skip-mirror": "true",
		}},
		"subsets": []map[string]any{{
			"addresses": []map[string]string{{"ip": addr.String()}},
			"ports":     ports,
		}},
	}
	ready := true
	slice = map[string]any{
		"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
		"metadata": kubeapi.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: map[string]string{
			"kubernetes.io/service-name":             "kubernetes",
			"endpointslice.kubernetes.io/managed-by": "supervisor.k3s.cattle.io",
		}},
		"addressType": family,
		"endpoints":   []map[string]any{{"addresses": []string{addr.String()}, "conditions": map[string]any{"ready": ready}}},
		"ports":       ports,
	}
	return endpoints, slice
}

// publishEndpoints applies the kubernetes Endpoints and EndpointSlice once
// the API answers, then again every interval (so that a deleted or edited
// object comes back), until ctx ends.
func (s *Server) publishEndpoints(ctx context.Context, interval time.Duration) {
	ep, sl := kubernetesEndpoints(s.AdvertiseAddress, s.Port)
	published := false
	for {
		err := s.api.Apply(ctx, "/api/v1/namespaces/default/endpoints/kubernetes", fieldManager, ep)
		if err == nil {
			err = s.api.Apply(ctx, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes", fieldManager, sl)
		}
		wait := interval
		switch {
		case err != nil:
			wait = 2 * time.Second
			if published {
				s.logf("kubernetes endpoints: %v", err)
			}
		case !published:
			s.logf("kubernetes service endpoint: %s", netip.AddrPortFrom(s.AdvertiseAddress, uint16(s.Port)))
			published = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
