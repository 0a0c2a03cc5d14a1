//go:build tools

// The programs `make conformance` builds from this module, pinned by its
// go.mod at the Kubernetes version the runtime embeds: the upstream e2e
// suite (go test -c k8s.io/kubernetes/test/e2e), kubectl, ginkgo's CLI, and
// the test images' Go programs.
package conformance

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
	_ "k8s.io/sample-apiserver"
)
