package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// kubeletLabels are the labels under kubernetes.io / k8s.io that the
// kubelet may set on its own Node (k8s.io/kubernetes
// pkg/kubelet/apis/well_known_labels.go); the NodeRestriction admission
// plugin refuses any other, so k3s fails to register the node.
var kubeletLabels = map[string]bool{
	"kubernetes.io/hostname":                   true,
	"kubernetes.io/os":                         true,
	"kubernetes.io/arch":                       true,
	"beta.kubernetes.io/os":                    true,
	"beta.kubernetes.io/arch":                  true,
	"beta.kubernetes.io/instance-type":         true,
	"node.kubernetes.io/instance-type":         true,
	"topology.kubernetes.io/zone":              true,
	"topology.kubernetes.io/region":            true,
	"failure-domain.beta.kubernetes.io/zone":   true,
	"failure-domain.beta.kubernetes.io/region": true,
}

// kubeletLabelNamespaces may be used freely, with sub-domains.
var kubeletLabelNamespaces = []string{"kubelet.kubernetes.io", "node.kubernetes.io"}

var (
	qualifiedName = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	dnsSubdomain  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelValue    = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
)

// ErrRestrictedLabel is returned for labels the kubelet may not set.
var ErrRestrictedLabel = errors.New("the kubelet may not set labels under kubernetes.io or k8s.io except the well-known ones")

// validateKey checks a label or taint key: [prefix/]name.
func validateKey(key string) error {
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && (prefix == "" || len(prefix) > 253 || !dnsSubdomain.MatchString(prefix)) {
		return fmt.Errorf("key prefix %q must be a DNS subdomain", prefix)
	}
	if name == "" || len(name) > 63 || !qualifiedName.MatchString(name) {
		return fmt.Errorf("key name %q must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", name)
	}
	return nil
}

// ValidateNodeLabel checks key=value as the kubelet's --node-labels does,
// including the restriction on kubernetes.io and k8s.io keys (so
// node-role.kubernetes.io/worker is refused, as in k3s).
func ValidateNodeLabel(label string) error {
	key, value, ok := strings.Cut(label, "=")
	if !ok {
		return errors.New("want key=value")
	}
	if err := validateKey(key); err != nil {
		return err
	}
	if len(value) > 63 || !labelValue.MatchString(value) {
		return fmt.Errorf("value %q must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", value)
	}
	prefix, _, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		return nil
	}
	if !restrictedNamespace(prefix) || kubeletLabels[key] {
		return nil
	}
	for _, ns := range kubeletLabelNamespaces {
		if prefix == ns || strings.HasSuffix(prefix, "."+ns) {
			return nil
		}
	}
	return fmt.Errorf("%w: %q (allowed: kubernetes.io/hostname, kubernetes.io/os, kubernetes.io/arch, topology.kubernetes.io/zone, topology.kubernetes.io/region, node.kubernetes.io/instance-type, and keys under kubelet.kubernetes.io or node.kubernetes.io; set others, such as node-role.kubernetes.io/*, with kubectl label once the node is up)", ErrRestrictedLabel, key)
}

func restrictedNamespace(prefix string) bool {
	for _, ns := range []string{"kubernetes.io", "k8s.io"} {
		if prefix == ns || strings.HasSuffix(prefix, "."+ns) {
			return true
		}
	}
	return false
}

// ValidateNodeTaint checks key[=value]:Effect. The kubelet registers taints
// under any key (NodeRestriction only limits labels), so only the syntax
// is checked.
func ValidateNodeTaint(taint string) error {
	kv, effect, ok := strings.Cut(taint, ":")
	if !ok {
		return errors.New("want key=value:Effect")
	}
	switch effect {
	case "NoSchedule", "PreferNoSchedule", "NoExecute":
	default:
		return fmt.Errorf("effect %q must be NoSchedule, PreferNoSchedule or NoExecute", effect)
	}
	key, value, _ := strings.Cut(kv, "=")
	if err := validateKey(key); err != nil {
		return err
	}
	if len(value) > 63 || !labelValue.MatchString(value) {
		return fmt.Errorf("value %q is not a valid label value", value)
	}
	return nil
}
