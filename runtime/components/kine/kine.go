// Package kine runs kine (github.com/k3s-io/kine), the etcd API over
// sqlite that k3s uses as its default datastore, as the `k3s kine`
// sub-command of the runtime's multi-call binary. Only the sqlite driver
// is linked; with CGO_ENABLED=0 kine uses the pure-Go modernc.org/sqlite,
// which keeps cross-building for arm64 free of a C toolchain.
package kine

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/k3s-io/kine/pkg/drivers"
	_ "github.com/k3s-io/kine/pkg/drivers/sqlite" // registers sqlite:// as the default driver
	"github.com/k3s-io/kine/pkg/server"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Options are the flags of `k3s kine`.
type Options struct {
	// Listen is where the etcd API is served, e.g.
	// unix:///var/lib/rancher/k3s/server/kine.sock.
	Listen string
	// Endpoint is the backend DSN, e.g. sqlite:///var/lib/rancher/k3s/server/db/state.db.
	Endpoint string
	// CompactInterval is how often old revisions are compacted.
	CompactInterval time.Duration
}

// ParseArgs parses `k3s kine` flags.
func ParseArgs(args []string, stderr io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("kine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Listen, "listen-address", "", "etcd API listener (unix:///path or host:port)")
	fs.StringVar(&o.Endpoint, "endpoint", "", "datastore DSN (sqlite:///path/state.db)")
	fs.DurationVar(&o.CompactInterval, "compact-interval", 5*time.Minute, "compaction interval")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("kine: %w", err)
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("kine: unexpected arguments %q", fs.Args())
	}
	if o.Listen == "" || o.Endpoint == "" {
		return o, errors.New("kine: --listen-address and --endpoint are required")
	}
	return o, nil
}

// gRPC limits, etcd's defaults as kine's own endpoint package uses them.
const (
	keepaliveMinTime  = 5 * time.Second
	keepaliveInterval = 2 * time.Hour
	keepaliveTimeout  = 20 * time.Second
	maxRequestBytes   = 1572864 + 512*1024 // etcd's 1.5 MiB + gRPC overhead
	gracefulStop      = 2 * time.Second
)

// Run serves the etcd API until ctx ends. It assembles kine's backend and
// gRPC bridge itself rather than calling kine's endpoint package, which
// links every driver (NATS server, pebble, MySQL, PostgreSQL): only
// sqlite:// endpoints work here.
func Run(ctx context.Context, o Options) error {
	scheme, address, ok := strings.Cut(o.Listen, "://")
	if !ok || (scheme != "unix" && scheme != "http") {
		return fmt.Errorf("kine: --listen-address %q: want unix:///path or http://host:port", o.Listen)
	}
	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	var wg sync.WaitGroup
	cfg := &drivers.Config{
		Endpoint:         o.Endpoint,
		CompactInterval:  o.CompactInterval,
		CompactTimeout:   5 * time.Second,
		CompactMinRetain: 1000,
		CompactBatchSize: 1000,
		PollBatchSize:    500,
		PollInterval:     time.Second,
	}
	cfg.ConnectionPoolConfig.MaxIdle = 20
	cfg.ConnectionPoolConfig.MaxIdleTime = 2 * time.Minute
	_, backend, err := drivers.New(bctx, &wg, cfg)
	if errors.Is(err, drivers.ErrUnknownDriver) {
		return fmt.Errorf("kine: --endpoint: only sqlite:// is linked into this runtime: %w", err)
	}
	if err != nil {
		return fmt.Errorf("kine: datastore: %w", err)
	}
	if err := backend.Start(bctx); err != nil {
		return fmt.Errorf("kine: starting the datastore: %w", err)
	}
	gs := grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveInterval, Timeout: keepaliveTimeout}),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
	)
	server.New(backend, scheme, 5*time.Second, "3.6.11").Register(gs)
	network := "tcp"
	if scheme == "unix" {
		network = "unix"
		if err := os.Remove(address); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("kine: %w", err)
		}
	}
	l, err := net.Listen(network, address)
	if err != nil {
		return fmt.Errorf("kine: %w", err)
	}
	if scheme == "unix" {
		if err := os.Chmod(address, 0o600); err != nil {
			l.Close()
			return fmt.Errorf("kine: %w", err)
		}
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(l) }()
	logrus.Infof("kine: serving the etcd API on %s", o.Listen)
	select {
	case err := <-served:
		return fmt.Errorf("kine: serve: %w", err)
	case <-ctx.Done():
	}
	t := time.AfterFunc(gracefulStop, gs.Stop)
	gs.GracefulStop()
	t.Stop()
	bcancel()
	wg.Wait()
	return nil
}

// Main runs `k3s kine` with args and returns the exit code.
func Main(args []string) int {
	o, err := ParseArgs(args, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logrus.SetOutput(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
