package deploy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ballast-os/ballast/runtime/manifests"
	"k8s.io/client-go/tools/clientcmd"
)

// Main runs `k3s deploy-controller --kubeconfig FILE --manifests-dir DIR
// [--disable NAME,...]`: manifests.Controller over DIR with this package's
// Applier, until SIGTERM. --disable (comma-separated, repeatable) are
// k3s's disable names: the objects of matching files are deleted, then the
// files. It returns the exit code.
func Main(args []string) int {
	o, err := parseArgs(args)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "deploy-controller:", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o.kubeconfig, o.dir, o.disable); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "deploy-controller:", err)
		return 1
	}
	return 0
}

type options struct {
	kubeconfig, dir string
	disable         []string
}

func parseArgs(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("deploy-controller", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the identity that applies the manifests")
	fs.StringVar(&o.dir, "manifests-dir", "", "directory of manifests (server/manifests)")
	fs.Func("disable", "names of disabled manifests (file name without extension, or directory), comma-separated; repeatable", func(v string) error {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				o.disable = append(o.disable, n)
			}
		}
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.kubeconfig == "" || o.dir == "" || fs.NArg() != 0 {
		return o, fmt.Errorf("--kubeconfig and --manifests-dir are required, and nothing else")
	}
	return o, nil
}

func run(ctx context.Context, kubeconfig, dir string, disable []string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("%s: %w", kubeconfig, err)
	}
	cfg.UserAgent = "k3s-deploy-controller"
	// client-go's default (5/s, burst 10) would spread the ~50 objects of
	// the packaged manifests over seconds at every start.
	cfg.QPS, cfg.Burst = 50, 100
	a, err := New(cfg)
	if err != nil {
		return err
	}
	c := &manifests.Controller{Dir: dir, Applier: a, Disable: disable, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	return c.Run(ctx)
}
