// Package netpol is the network policy controller k3s embeds in every
// agent (pkg/agent/netpol: kube-router's firewall): NetworkPolicies are
// enforced for the pods of this node with iptables chains and ipsets, and
// a dropped packet goes to NFLOG group 100 first, prefixed with the
// policies that isolate the pod, at the rate the
// kube-router.io/netpol-nflog-limit and -limit-burst annotations set
// (10/minute, burst 10, by default).
//
// So far the package computes the rules (Compute); the controller that
// follows the API and installs them, and the reader of group 100, are
// not written yet, so the agent does not run it.
//
// This file holds the parts of the API objects the controller reads, and
// label selectors.
package netpol

import (
	"fmt"
	"slices"
)

// Pod is what the controller reads of a pod.
type Pod struct {
	Metadata Meta `json:"metadata"`
	Spec     struct {
		NodeName    string `json:"nodeName"`
		HostNetwork bool   `json:"hostNetwork"`
		Containers  []struct {
			Ports []ContainerPort `json:"ports"`
		} `json:"containers"`
	} `json:"spec"`
	Status struct {
		Phase  string `json:"phase"`
		PodIPs []struct {
			IP string `json:"ip"`
		} `json:"podIPs"`
	} `json:"status"`
}

// ContainerPort is a port a container names (for named ports in policies).
type ContainerPort struct {
	Name          string `json:"name"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

// Meta is the metadata the controller reads.
type Meta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// Namespace is what the controller reads of a namespace: its labels.
type Namespace struct {
	Metadata Meta `json:"metadata"`
}

// Policy is a networking.k8s.io/v1 NetworkPolicy.
type Policy struct {
	Metadata Meta `json:"metadata"`
	Spec     struct {
		PodSelector LabelSelector `json:"podSelector"`
		Ingress     []Rule        `json:"ingress"`
		Egress      []EgressRule  `json:"egress"`
		PolicyTypes []string      `json:"policyTypes"`
	} `json:"spec"`
}

// Rule is an ingress rule: traffic from any of From (all sources when
// none) to any of Ports (all ports when none).
type Rule struct {
	From  []Peer `json:"from"`
	Ports []Port `json:"ports"`
}

// EgressRule is an egress rule: traffic to any of To on any of Ports.
type EgressRule struct {
	To    []Peer `json:"to"`
	Ports []Port `json:"ports"`
}

// Peer is one side of a rule: pods (podSelector in the policy's namespace,
// namespaceSelector for other namespaces, both for pods in those), or an
// ipBlock.
type Peer struct {
	PodSelector       *LabelSelector `json:"podSelector"`
	NamespaceSelector *LabelSelector `json:"namespaceSelector"`
	IPBlock           *IPBlock       `json:"ipBlock"`
}

// IPBlock is a CIDR with exceptions.
type IPBlock struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except"`
}

// Port is a protocol (TCP unless set) and a port: a number, a name of the
// destination pod's container ports, or none (every port); EndPort makes a
// numbered port a range.
type Port struct {
	Protocol string    `json:"protocol"`
	Port     *IntOrStr `json:"port"`
	EndPort  int       `json:"endPort"`
}

// IntOrStr is a port given as a number or a name.
type IntOrStr struct {
	Int int
	Str string
}

// UnmarshalJSON takes 80 or "http".
func (v *IntOrStr) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		v.Str = string(b[1 : len(b)-1])
		return nil
	}
	_, err := fmt.Sscan(string(b), &v.Int)
	return err
}

// PolicyTypes are the directions the policy isolates, as the API server
// defaults them: Ingress always, Egress when the policy has egress rules.
func (p *Policy) PolicyTypes() (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	return slices.Contains(p.Spec.PolicyTypes, "Ingress"), slices.Contains(p.Spec.PolicyTypes, "Egress")
}

// LabelSelector is a metav1.LabelSelector; the empty one selects all.
type LabelSelector struct {
	MatchLabels      map[string]string `json:"matchLabels"`
	MatchExpressions []struct {
		Key      string   `json:"key"`
		Operator string   `json:"operator"`
		Values   []string `json:"values"`
	} `json:"matchExpressions"`
}

// Matches says whether labels satisfy the selector. An operator the API
// server would not have accepted matches nothing.
func (s *LabelSelector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case "In":
			if !ok || !slices.Contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if ok && slices.Contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}
