package deploy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ballast-os/ballast/runtime/manifests"
	"k8s.io/client-go/tools/clientcmd"
)

// Main runs `k3s deploy-controller --kubeconfig FILE --manifests-dir DIR`:
// manifests.Controller over DIR with this package's Applier, until
// SIGTERM. It returns the exit code.
func Main(args []string) int {
	fs := flag.NewFlagSet("deploy-controller", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the identity that applies the manifests")
	dir := fs.String("manifests-dir", "", "directory of manifests (server/manifests)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *kubeconfig == "" || *dir == "" || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "deploy-controller: --kubeconfig and --manifests-dir are required")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *kubeconfig, *dir); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "deploy-controller:", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, kubeconfig, dir string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("%s: %w", kubeconfig, err)
	}
	cfg.UserAgent = "k3s-deploy-controller"
	a, err := New(cfg)
	if err != nil {
		return err
	}
	c := &manifests.Controller{Dir: dir, Applier: a, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	return c.Run(ctx)
}
