// Package etcd runs embedded etcd (go.etcd.io/etcd/server/v3/embed), the
// datastore of servers started with --cluster-init or joined to one, as
// the `k3s etcd --config-file=server/db/etcd/config` sub-command of the
// runtime's multi-call binary: a supervised process like the other
// components. The server process writes the config file (package
// runtime/etcd) and manages membership through etcd's client API.
package etcd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// ParseArgs reads the flags of `k3s etcd`: the config file's path.
func ParseArgs(args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config-file", "", "etcd configuration file (YAML, etcd's --config-file format)")
	if err := fs.Parse(args); err != nil {
		return "", fmt.Errorf("etcd: %w", err)
	}
	if fs.NArg() != 0 {
		return "", fmt.Errorf("etcd: unexpected arguments %q", fs.Args())
	}
	if *path == "" {
		return "", errors.New("etcd: --config-file is required")
	}
	return *path, nil
}

// Run starts etcd from the config file and serves until ctx ends or etcd
// fails.
func Run(ctx context.Context, path string) error {
	cfg, err := embed.ConfigFromFile(path)
	if err != nil {
		return fmt.Errorf("etcd: %s: %w", path, err)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-e.Server.StopNotify():
		return errors.New("etcd: stopped before it was ready (removed from the cluster?)")
	case <-ctx.Done():
		return nil
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-e.Server.StopNotify():
		return errors.New("etcd: the server stopped (removed from the cluster?)")
	case <-ctx.Done():
		stop := time.AfterFunc(10*time.Second, func() { os.Exit(1) })
		e.Close()
		stop.Stop()
		return nil
	}
}

// Main runs `k3s etcd` with args and returns the exit code.
func Main(args []string) int {
	path, err := ParseArgs(args, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, path); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
