package k3s

import (
	"context"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/ballast-os/ballast/runtime/agent"
	"github.com/ballast-os/ballast/runtime/certs"
)

// CertCheckInterval is how often a running server checks its
// certificates: an appliance may never restart, and the leaf certificates
// k3s issues live a year. BALLAST_CERT_CHECK_INTERVAL (a Go duration, at
// least a second) sets another, for tests.
var CertCheckInterval = 12 * time.Hour

// certCheckInterval is CertCheckInterval, or the environment's.
func certCheckInterval(lookupEnv func(string) (string, bool)) time.Duration {
	if v, ok := lookupEnv("BALLAST_CERT_CHECK_INTERVAL"); ok {
		if d, err := time.ParseDuration(v); err == nil && d >= time.Second {
			return d
		}
	}
	return CertCheckInterval
}

// certRestarts are the components that read a service's certificates only
// at start. The k3s process's own servers and clients (supervisor,
// controllers) read theirs again by themselves (certs.KeyPair); the admin
// kubeconfig is rewritten.
var certRestarts = map[string][]string{
	"api-server":         {"kube-apiserver"},
	"auth-proxy":         {"kube-apiserver"},
	"controller-manager": {"kube-controller-manager"},
	"scheduler":          {"kube-scheduler"},
	"etcd":               {"etcd"},
	"kubelet":            {"kubelet"},
	"kube-proxy":         {"kube-proxy"},
	"k3s-controller":     {"flannel"},
}

// restarter restarts a component by name (processes.Runner.Restart).
type restarter interface{ Restart(name string) error }

// renewCertificates is one check: certs.Ensure reissues what is due (the
// same window as at start, certs.RenewWithin), the admin kubeconfig is
// written again, and the components that read a renewed certificate only
// at start are restarted, each once, the apiserver first. It returns the
// components restarted.
func renewCertificates(o certs.Options, writeAdmin func() error, run restarter, log io.Writer) ([]string, error) {
	rep, err := certs.Ensure(o)
	if err != nil {
		return nil, err
	}
	for _, w := range rep.Warnings {
		fmt.Fprintln(log, "warning:", w)
	}
	if len(rep.Issued) == 0 {
		return nil, nil
	}
	for _, p := range slices.Sorted(maps.Keys(rep.Issued)) {
		fmt.Fprintf(log, "certificates: renewed %s (%s)\n", p, rep.Issued[p])
	}
	if err := writeAdmin(); err != nil {
		return nil, err
	}
	var names []string
	for _, svc := range rep.Services {
		for _, c := range certRestarts[svc] {
			if !slices.Contains(names, c) {
				names = append(names, c)
			}
		}
	}
	// The apiserver first: the others' renewed client certificates are
	// signed by the same CAs, and they reconnect to it.
	slices.SortStableFunc(names, func(a, b string) int {
		if a == "kube-apiserver" {
			return -1
		}
		if b == "kube-apiserver" {
			return 1
		}
		return 0
	})
	var restarted []string
	for _, c := range names {
		if err := run.Restart(c); err != nil {
			continue // not run on this node (disabled, or kine instead of etcd)
		}
		fmt.Fprintf(log, "certificates: restarted %s for its renewed certificate\n", c)
		restarted = append(restarted, c)
	}
	return restarted, nil
}

// watchCertificates checks every interval until ctx ends.
func watchCertificates(ctx context.Context, interval time.Duration, o certs.Options, writeAdmin func() error, run restarter, log io.Writer) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := renewCertificates(o, writeAdmin, run, log); err != nil {
			fmt.Fprintf(log, "certificates: %v (trying again in %v)\n", err, interval)
		}
	}
}

// agentCertRestarts maps the certificates an agent fetches from its
// server to the components that read them at start.
var agentCertRestarts = map[string]string{
	"serving-kubelet.crt":       "kubelet",
	"client-kubelet.crt":        "kubelet",
	"client-kube-proxy.crt":     "kube-proxy",
	"client-k3s-controller.crt": "flannel",
}

// restartsFor are the components to restart for fetched certificate
// files, each once, in a fixed order.
func restartsFor(fetched []string) []string {
	var names []string
	for _, f := range fetched {
		if c, ok := agentCertRestarts[filepath.Base(f)]; ok && !slices.Contains(names, c) {
			names = append(names, c)
		}
	}
	slices.Sort(names)
	return names
}

// rejoiner is agent.Join: Run fetches again only the certificates that
// are missing, due for renewal or signed by another CA.
type rejoiner interface {
	Run(ctx context.Context) (*agent.Joined, error)
}

// watchAgentCertificates is watchCertificates for an agent that joined a
// server: its certificates are the server's to sign, so every interval it
// repeats the join's certificate step and restarts what reads a renewed
// one. A server it cannot reach is tried again at the next interval.
func watchAgentCertificates(ctx context.Context, interval time.Duration, j rejoiner, run restarter, log io.Writer) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		joined, err := j.Run(ctx)
		if err != nil {
			fmt.Fprintf(log, "certificates: renewing through the server: %v (trying again in %v)\n", err, interval)
			continue
		}
		for _, f := range joined.Fetched {
			fmt.Fprintf(log, "certificates: renewed %s (signed by the server)\n", f)
		}
		for _, c := range restartsFor(joined.Fetched) {
			if err := run.Restart(c); err == nil {
				fmt.Fprintf(log, "certificates: restarted %s for its renewed certificate\n", c)
			}
		}
	}
}
