// Command k3s is ballast's k3s-compatible runtime: one multi-call binary
// that answers as k3s, kubectl, crictl and ctr, and re-executes itself as
// each upstream component under the server's supervisor.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/token"
)

// Versions, set by the build with -ldflags "-X main.Version=...".
var (
	Version             = "v0.0.0-dev"
	KubernetesVersion   = "v1.37 (not linked yet)"
	ContainerdVersion   = "v2 (not linked yet)"
	EtcdVersion         = "v3 (not linked yet)"
	KineVersion         = "(not linked yet)"
	FlannelVersion      = "(not linked yet)"
	CNIPluginsVersion   = "(not linked yet)"
	CoreDNSVersion      = "(not built yet)"
	LocalPathVersion    = "(not built yet)"
	MetricsServerVerson = "(not built yet)"
)

// ErrNotBuilt marks commands whose upstream component is not linked in.
var ErrNotBuilt = errors.New("not built into this runtime yet")

// components the server re-executes this binary as.
var components = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "containerd", "kine", "etcd", "flannel"}

// app is one invocation: arguments and the outside world, injectable for tests.
type app struct {
	args      []string
	stdout    io.Writer
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{args: os.Args, stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv}
	os.Exit(a.run(ctx))
}

func (a *app) run(ctx context.Context) int {
	err := a.dispatch(ctx)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, config.ErrUsage):
		fmt.Fprintln(a.stderr, "k3s:", err)
		return 2
	default:
		fmt.Fprintln(a.stderr, "k3s:", err)
		return 1
	}
}

func (a *app) dispatch(ctx context.Context) error {
	name := filepath.Base(a.args[0])
	rest := a.args[1:]
	switch name {
	case "kubectl", "crictl", "ctr":
		return notBuilt(name)
	}
	if len(rest) == 0 {
		a.usage()
		return nil
	}
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "--version", "-v", "version":
		a.version()
		return nil
	case "--help", "-h", "help":
		a.usage()
		return nil
	case "server":
		return a.server(ctx, rest)
	case "agent":
		return a.agent(rest)
	case "token":
		return a.token(rest)
	case "certificate":
		return a.certificate(rest)
	case "kubectl", "crictl", "ctr", "check-config", "etcd-snapshot", "secrets-encrypt", "completion":
		return notBuilt("k3s " + cmd)
	}
	for _, c := range components {
		if cmd == c {
			return notBuilt(c)
		}
	}
	return fmt.Errorf("%w: unknown command %q (try k3s --help)", config.ErrUsage, cmd)
}

func notBuilt(what string) error {
	return fmt.Errorf("%s: %w (ballast's k3s-compatible runtime does not link the upstream component yet)", what, ErrNotBuilt)
}

func (a *app) version() {
	fmt.Fprintf(a.stdout, "k3s version %s (ballast's k3s-compatible runtime, built from upstream components; not the official k3s release)\n", Version)
	for _, v := range [][2]string{
		{"kubernetes", KubernetesVersion}, {"containerd", ContainerdVersion}, {"etcd", EtcdVersion}, {"kine", KineVersion},
		{"flannel", FlannelVersion}, {"cni-plugins", CNIPluginsVersion}, {"coredns", CoreDNSVersion},
		{"local-path-provisioner", LocalPathVersion}, {"metrics-server", MetricsServerVerson},
	} {
		fmt.Fprintf(a.stdout, "  %-23s %s\n", v[0], v[1])
	}
	fmt.Fprintf(a.stdout, "go version %s\n", runtime.Version())
}

func (a *app) usage() {
	fmt.Fprint(a.stdout, `k3s - ballast's k3s-compatible Kubernetes runtime

Usage: k3s COMMAND [flags]

Commands:
  server         run the Kubernetes server (and its agent)
  agent          run a node agent joining a server
  kubectl        Kubernetes CLI (also as "kubectl")
  crictl         CRI CLI (also as "crictl")
  ctr            containerd CLI (also as "ctr")
  token          bootstrap tokens: generate
  certificate    rotate [--service a,b]: renew certificates at the next start
  check-config   check the kernel and system
  etcd-snapshot  etcd snapshots
  --version      versions of this runtime and its upstream components
`)
}

func (a *app) agent(args []string) error {
	l, err := config.Load(config.Options{Command: "agent", Args: args, LookupEnv: a.lookupEnv})
	if err != nil {
		return err
	}
	a.warn(l)
	if _, err := l.AgentConfig(); err != nil {
		return err
	}
	return notBuilt("k3s agent (kubelet, kube-proxy, containerd)")
}

func (a *app) warn(l *config.Loaded) {
	for _, w := range l.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
}

func (a *app) token(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: k3s token needs a subcommand: generate, create, list, delete, rotate", config.ErrUsage)
	}
	switch args[0] {
	case "generate":
		t, err := token.GenerateBootstrap()
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, t)
		return nil
	case "create", "list", "delete", "rotate":
		return notBuilt("k3s token " + args[0] + " (needs the API server)")
	}
	return fmt.Errorf("%w: unknown token subcommand %q", config.ErrUsage, args[0])
}

func (a *app) certificate(args []string) error {
	if len(args) == 0 || args[0] != "rotate" {
		if len(args) > 0 && (args[0] == "rotate-ca" || args[0] == "check") {
			return notBuilt("k3s certificate " + args[0])
		}
		return fmt.Errorf("%w: usage: k3s certificate rotate [--service a,b] [--data-dir DIR]", config.ErrUsage)
	}
	dataDir := config.DefaultDataDir
	if v, ok := a.lookupEnv("K3S_DATA_DIR"); ok && v != "" {
		dataDir = v
	}
	var services []string
	rest := args[1:]
	for i := 0; i < len(rest); i++ {
		flag, val, has := strings.Cut(strings.TrimLeft(rest[i], "-"), "=")
		if !has {
			if i+1 >= len(rest) {
				return fmt.Errorf("%w: %s needs a value", config.ErrUsage, rest[i])
			}
			i++
			val = rest[i]
		}
		switch flag {
		case "service", "s":
			services = append(services, strings.Split(val, ",")...)
		case "data-dir", "d":
			dataDir = val
		default:
			return fmt.Errorf("%w: unknown flag %s", config.ErrUsage, rest[i])
		}
	}
	nodeName := ""
	if _, err := os.Stat(filepath.Join(dataDir, "agent", "client-kubelet.crt")); err == nil {
		nodeName = "local" // any name: only the agent's file paths matter
	}
	backup, removed, err := certs.Rotate(certs.Options{DataDir: dataDir, NodeName: nodeName}, services)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "backed up certificates to %s\n", backup)
	for _, r := range removed {
		fmt.Fprintf(a.stdout, "removed %s\n", r)
	}
	fmt.Fprintln(a.stdout, "restart k3s to issue new certificates")
	return nil
}
