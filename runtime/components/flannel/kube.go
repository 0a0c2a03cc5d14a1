package flannel

import (
	"context"
	"fmt"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// nodeAccess is what the kube subnet manager does with nodes: an
// informer over all of them (list, watch), gets of its own, and the
// annotation patch, which it sends to the status subresource.
var nodeAccess = []authorizationv1.ResourceAttributes{
	{Verb: "list", Resource: "nodes"},
	{Verb: "watch", Resource: "nodes"},
	{Verb: "get", Resource: "nodes"},
	{Verb: "patch", Resource: "nodes", Subresource: "status"},
}

// pollInterval is how often the waits below ask the API server.
var pollInterval = 2 * time.Second

// waitForNodeAccess returns once the API server answers and allows every
// request in nodeAccess: at first boot the RBAC rules granting them are
// applied by the deploy controller while flannel already runs.
func waitForNodeAccess(ctx context.Context, c kubernetes.Interface) error {
	var last string
	return wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		var denied []string
		for _, a := range nodeAccess {
			a := a
			r, err := c.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
				&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &a}},
				metav1.CreateOptions{})
			if err != nil {
				logOnce(&last, "flannel: waiting for the API server: %v", err)
				return false, nil
			}
			if !r.Status.Allowed {
				what := a.Verb + " " + a.Resource
				if a.Subresource != "" {
					what += "/" + a.Subresource
				}
				denied = append(denied, what)
			}
		}
		if len(denied) > 0 {
			logOnce(&last, "flannel: waiting for RBAC to allow %s (ClusterRole system:k3s-controller)", strings.Join(denied, ", "))
			return false, nil
		}
		return true, nil
	})
}

// waitForPodCIDR returns the node's spec.podCIDR once the controller
// manager has assigned it (the node object first has to be registered by
// the kubelet). The kube subnet manager refuses to start without it.
func waitForPodCIDR(ctx context.Context, c kubernetes.Interface, node string) (string, error) {
	var cidr, last string
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			logOnce(&last, "flannel: waiting for node %s to register", node)
			return false, nil
		case err != nil:
			logOnce(&last, "flannel: waiting for node %s: %v", node, err)
			return false, nil
		case n.Spec.PodCIDR == "":
			logOnce(&last, "flannel: waiting for node %s's podCIDR", node)
			return false, nil
		}
		cidr = n.Spec.PodCIDR
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("wait for node %s's podCIDR: %w", node, err)
	}
	return cidr, nil
}

// logOnce logs a waiting message when it changes, not at every poll.
func logOnce(last *string, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if msg != *last {
		klog.Info(msg)
		*last = msg
	}
}
