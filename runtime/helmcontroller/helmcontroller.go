// Package helmcontroller runs k3s's Helm controller
// (github.com/k3s-io/helm-controller) inside the k3s server process, as k3s
// does: HelmChart and HelmChartConfig resources become helm-install-<name>
// Jobs that run the klipper-helm image (on a ballast node, ballast's own
// entry program with the upstream helm binary: images/klipperhelm).
//
// What this package adds to the upstream controller is what k3s's server
// does around it: the two CRDs are created or updated at start, the
// controllers run only on the server holding the Lease
// kube-system/helm-controller-lock (several servers share one cluster), and
// losing that Lease stops them and campaigns again instead of exiting the
// process (the upstream Register calls wrangler's leader.RunOrDie, which
// exits on a lost Lease: in ballast that would take the supervisor, and
// every agent's connection, down with it).
package helmcontroller

import (
	"context"
	"fmt"
	"time"

	"github.com/k3s-io/helm-controller/pkg/controllers/chart"
	"github.com/k3s-io/helm-controller/pkg/crds"
	helmfactory "github.com/k3s-io/helm-controller/pkg/generated/controllers/helm.cattle.io"
	"github.com/rancher/lasso/pkg/cache"
	lassoclient "github.com/rancher/lasso/pkg/client"
	"github.com/rancher/lasso/pkg/controller"
	"github.com/rancher/wrangler/v3/pkg/apply"
	"github.com/rancher/wrangler/v3/pkg/generated/controllers/batch"
	"github.com/rancher/wrangler/v3/pkg/generated/controllers/core"
	"github.com/rancher/wrangler/v3/pkg/generated/controllers/rbac"
	"github.com/rancher/wrangler/v3/pkg/generic"
	"github.com/rancher/wrangler/v3/pkg/schemes"
	"github.com/rancher/wrangler/v3/pkg/start"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	typedv1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Names k3s uses.
const (
	// Name is the controller's name: the managed-by of the charts it
	// handles, the events' source and the Lease's prefix.
	Name = "helm-controller"
	// JobClusterRole is bound to each chart's helm-<name> ServiceAccount.
	JobClusterRole = "cluster-admin"
	// Image is klipper-helm's repository and tag in k3s, pulled from the
	// system-default-registry (docker.io) unless helm-job-image names
	// another.
	Image = "rancher/klipper-helm:v0.9.14-build20260309"
	// LeaseNamespace holds the Lease Name+"-lock".
	LeaseNamespace = metav1.NamespaceSystem
)

// DefaultImage is the job image k3s uses with system-default-registry
// registry ("" is docker.io).
func DefaultImage(registry string) string {
	if registry == "" {
		registry = "docker.io"
	}
	return registry + "/" + Image
}

// Options say how to run the controller.
type Options struct {
	// Config reaches the local API server as the supervisor (k3s runs the
	// Helm controller as its supervisor, in system:masters).
	Config *rest.Config
	// JobImage is the image of the install/delete jobs (helm-job-image,
	// else DefaultImage).
	JobImage string
	// Identity names this server in the Lease (its node name).
	Identity string
	Logf     func(format string, args ...any)
}

// Run creates the CRDs, then campaigns for the Lease and runs the
// controllers while it holds it, until ctx ends.
func Run(ctx context.Context, o Options) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	chart.DefaultJobImage = o.JobImage
	for ctx.Err() == nil {
		if err := EnsureCRDs(ctx, o.Config); err != nil {
			logf("helm controller: CRDs: %v (retrying in 10s)", err)
			sleep(ctx, 10*time.Second)
			continue
		}
		break
	}
	for ctx.Err() == nil {
		if err := campaign(ctx, o, logf); err != nil {
			logf("helm controller: %v (retrying in 10s)", err)
		}
		sleep(ctx, 10*time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// EnsureCRDs creates HelmChart and HelmChartConfig, or updates them to
// the upstream controller's definitions.
func EnsureCRDs(ctx context.Context, cfg *rest.Config) error {
	list, err := crds.List()
	if err != nil {
		return err
	}
	cs, err := apiext.NewForConfig(cfg)
	if err != nil {
		return err
	}
	api := cs.ApiextensionsV1().CustomResourceDefinitions()
	for _, want := range list {
		got, err := api.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create %s: %w", want.Name, err)
			}
		case err != nil:
			return err
		default:
			want.ResourceVersion = got.ResourceVersion
			if _, err := api.Update(ctx, want, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("update %s: %w", want.Name, err)
			}
		}
	}
	return waitEstablished(ctx, api, list)
}

func waitEstablished(ctx context.Context, api interface {
	Get(context.Context, string, metav1.GetOptions) (*apiextv1.CustomResourceDefinition, error)
}, list []*apiextv1.CustomResourceDefinition) error {
	for _, c := range list {
		for {
			got, err := api.Get(ctx, c.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if established(got) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil
}

func established(c *apiextv1.CustomResourceDefinition) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
			return true
		}
	}
	return false
}

// campaign holds the Lease and runs the controllers until the Lease is
// lost or ctx ends.
func campaign(ctx context.Context, o Options, logf func(string, ...any)) error {
	k8s, err := kubernetes.NewForConfig(o.Config)
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: LeaseNamespace, Name: Name + "-lock"},
		Client:     k8s.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.Identity},
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   45 * time.Second,
		RenewDeadline:   30 * time.Second,
		RetryPeriod:     5 * time.Second,
		ReleaseOnCancel: true,
		Name:            Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				logf("helm controller: holding lease %s/%s-lock: this server runs the Helm controller (job image %s)", LeaseNamespace, Name, o.JobImage)
				if err := runControllers(ctx, o.Config, k8s, o.Identity); err != nil {
					logf("helm controller: %v", err)
				}
			},
			OnStoppedLeading: func() {
				if ctx.Err() == nil {
					logf("helm controller: lease %s/%s-lock lost; campaigning again", LeaseNamespace, Name)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	le.Run(ctx)
	return nil
}

// runControllers registers the upstream chart controller on fresh
// factories and starts them; they stop when ctx (the leadership) ends.
func runControllers(ctx context.Context, cfg *rest.Config, k8s kubernetes.Interface, node string) error {
	ap, err := apply.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ap = ap.WithSetOwnerReference(false, false).WithContext(ctx)
	clients, err := lassoclient.NewSharedClientFactory(cfg, nil)
	if err != nil {
		return err
	}
	scf := controller.NewSharedControllerFactory(cache.NewSharedCachedFactory(clients, nil), &controller.SharedControllerFactoryOptions{
		DefaultRateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[any](5*time.Millisecond, 60*time.Second),
		DefaultWorkers:     5,
	})
	opts := &generic.FactoryOptions{SharedControllerFactory: scf}
	coreF, err := core.NewFactoryFromConfigWithOptions(cfg, opts)
	if err != nil {
		return err
	}
	batchF, err := batch.NewFactoryFromConfigWithOptions(cfg, opts)
	if err != nil {
		return err
	}
	rbacF, err := rbac.NewFactoryFromConfigWithOptions(cfg, opts)
	if err != nil {
		return err
	}
	helmF, err := helmfactory.NewFactoryFromConfigWithOptions(cfg, opts)
	if err != nil {
		return err
	}
	events := record.NewBroadcaster(record.WithContext(ctx))
	defer events.Shutdown()
	events.StartRecordingToSink(&typedv1.EventSinkImpl{Interface: k8s.CoreV1().Events(metav1.NamespaceAll)})
	recorder := events.NewRecorder(schemes.All, corev1.EventSource{Component: Name, Host: node})
	// The jobs of bootstrap charts reach the API server on the host's
	// network at 127.0.0.1:6443: the supervisor's port, as in k3s.
	chart.Register(ctx, metav1.NamespaceAll, Name, JobClusterRole, "6443", ap, recorder,
		batchF.Batch().V1(), coreF.Core().V1(), helmF.Helm().V1(), rbacF.Rbac().V1())
	if err := start.All(ctx, 5, coreF, batchF, rbacF, helmF); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	<-ctx.Done()
	return nil
}
