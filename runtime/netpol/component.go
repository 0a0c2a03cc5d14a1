package netpol

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ballast-os/ballast/runtime/kubeapi"
)

// Options are the flags of the network-policy component.
type Options struct {
	Kubeconfig string
	NodeName   string
	DropLog    string // "" writes no drop log
}

func parseFlags(args []string, output io.Writer) (Options, error) {
	fs := flag.NewFlagSet("network-policy", flag.ContinueOnError)
	fs.SetOutput(output)
	var o Options
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig of an identity that may list and watch pods, namespaces and NetworkPolicies")
	fs.StringVar(&o.NodeName, "node-name", "", "this node's name: its pods are the ones the rules guard")
	fs.StringVar(&o.DropLog, "drop-log", "", "file for one line per dropped packet (NFLOG group 101)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.Kubeconfig == "" || o.NodeName == "" {
		return o, errors.New("network-policy: --kubeconfig and --node-name are required")
	}
	return o, nil
}

// Main is `k3s network-policy` as a process of its own.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := RunInProcess(ctx, args, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	return 0
}

// RunInProcess runs the controller, and the drop log beside it, until ctx
// ends. A drop log that cannot start (no nfnetlink_log in the kernel) is
// reported and the policies are still enforced.
func RunInProcess(ctx context.Context, args []string, log io.Writer) error {
	o, err := parseFlags(args, log)
	if err != nil {
		return err
	}
	api, err := kubeapi.FromKubeconfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(log, format+"\n", args...) }
	if o.DropLog != "" {
		go func() {
			d := &DropLog{Group: ReaderGroup, Path: o.DropLog}
			if err := d.Run(ctx); err != nil {
				logf("network policy: drop log %s: %v (policies are still enforced; tcpdump -ni nflog:100 shows the drops)", o.DropLog, err)
			}
		}()
	}
	c := &Controller{API: api, NodeName: o.NodeName, Tables: &Host{}, Logf: logf}
	logf("network policy: enforcing NetworkPolicies for the pods of node %s", o.NodeName)
	return c.Run(ctx)
}
