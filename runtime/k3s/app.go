// Package k3s is the command logic of ballast's k3s-compatible runtime:
// one multi-call binary that answers as k3s, kubectl, crictl and ctr, and
// re-executes itself as each upstream component under the server's
// process runner. The upstream components are linked in by cmd/k3s and handed
// over as Components, so this package (and its tests) stays light.
package k3s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/checkconfig"
	"github.com/ballast-os/ballast/runtime/config"
)

// Versions. Version is set by the build with -ldflags
// "-X github.com/ballast-os/ballast/runtime/k3s.Version=..."; an empty
// upstream version is read from the binary's build info (the module
// linked in), or says the component is not linked.
var (
	Version             = "v0.0.0-dev"
	KubernetesVersion   = ""
	ContainerdVersion   = ""
	EtcdVersion         = ""
	KineVersion         = ""
	FlannelVersion      = ""
	CNIPluginsVersion   = ""
	CoreDNSVersion      = "(not built yet)"
	LocalPathVersion    = "(not built yet)"
	MetricsServerVerson = "(not built yet)"
)

// moduleVersion is v when set, else the version of module path linked
// into this binary, else "(not linked yet)".
func moduleVersion(v, path string, deps []*debug.Module) string {
	if v != "" {
		return v
	}
	for _, d := range deps {
		if d.Path == path {
			if d.Replace != nil && d.Replace.Version != "" {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "(not linked yet)"
}

// ErrNotBuilt marks commands whose upstream component is not linked in.
var ErrNotBuilt = errors.New("not built into this runtime yet")

// components the server re-executes this binary as.
var components = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "containerd", "image-import", "kine", "etcd", "flannel", "deploy-controller"}

// Components maps a component or tool name (kube-apiserver, kine,
// kubectl...) to its entry point: it gets the arguments after the name and
// returns the process exit code. A name missing from the map is "not built
// into this runtime yet".
type Components map[string]func(args []string) int

// InProcess maps a component to an entry point that runs inside the k3s
// process (processes.Component.Run) rather than as a re-executed process
// of its own, as k3s runs flannel and its image import: each process pays
// the whole binary's start-up memory. It gets the same arguments as the
// component's process entry point and writes its log lines to log.
type InProcess map[string]func(ctx context.Context, args []string, log io.Writer) error

// app is one invocation: arguments and the outside world, injectable for tests.
type app struct {
	args       []string
	stdout     io.Writer
	stderr     io.Writer
	lookupEnv  func(string) (string, bool)
	components Components
	inProcess  InProcess
	// self is the program the process runner re-executes; "" is os.Executable.
	self string
}

// exitCode is a component's exit status, passed through unprinted.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Main runs the k3s command line args (args[0] is the program name, whose
// base name selects a personality such as kubectl) and returns the exit
// code. Component and tool sub-commands (k3s kube-apiserver ..., kubectl)
// call their entry point directly, before Main installs any signal
// handling: upstream components install their own process-global handler.
func Main(args []string, c Components, in InProcess) int {
	if len(args) > 1 {
		if f, ok := c[args[1]]; ok && (isComponent(args[1]) || isTool(args[1])) {
			return f(args[2:])
		}
	}
	if len(args) > 0 && filepath.Base(args[0]) != "k3s" {
		if f, ok := c[filepath.Base(args[0])]; ok && isTool(filepath.Base(args[0])) {
			return f(args[1:])
		}
	}
	if needsContainerInit(args, os.Getpid, os.LookupEnv) {
		return asContainerInit(args)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{args: args, stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv, components: c, inProcess: in}
	return a.run(ctx)
}

// isTool: the CLIs that also answer as argv[0] personalities.
func isTool(name string) bool {
	return name == "kubectl" || name == "crictl" || name == "ctr" || name == "etcdctl"
}

func isComponent(name string) bool {
	for _, c := range components {
		if c == name {
			return true
		}
	}
	return false
}

func (a *app) run(ctx context.Context) int {
	err := a.dispatch(ctx)
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
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
	case "kubectl", "crictl", "ctr", "etcdctl":
		return a.tool(name, rest)
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
		return a.agent(ctx, rest)
	case "token":
		return a.token(ctx, rest)
	case "certificate":
		return a.certificate(rest)
	case "kubectl", "crictl", "ctr":
		return a.tool(cmd, rest)
	case "etcd-snapshot":
		return a.etcdSnapshot(ctx, rest)
	case "check-config":
		if n := checkconfig.Run(a.stdout, checkconfig.Real()); n > 0 {
			return exitCode(1)
		}
		return nil
	case "secrets-encrypt":
		return a.secretsEncrypt(ctx, rest)
	case "completion":
		return notBuilt("k3s " + cmd)
	}
	if isComponent(cmd) {
		return a.tool(cmd, rest)
	}
	return fmt.Errorf("%w: unknown command %q (try k3s --help)", config.ErrUsage, cmd)
}

// tool runs a linked component or tool, or says it is not built.
func (a *app) tool(name string, args []string) error {
	f, ok := a.components[name]
	if !ok {
		return notBuilt(name)
	}
	if code := f(args); code != 0 {
		return exitCode(code)
	}
	return nil
}

// dataDirOnly is the data dir of a command whose only flags are
// --data-dir (-d) and --config (-c): see resolveDataDir.
func (a *app) dataDirOnly(args []string) (string, error) {
	var dataDir, configFile string
	err := noPositional(eachFlag(args, nil, func(name, val, arg string) error {
		switch name {
		case "data-dir", "d":
			dataDir = val
		case "config", "c":
			configFile = val
		default:
			return fmt.Errorf("%w: unknown flag %s", config.ErrUsage, arg)
		}
		return nil
	}))
	if err != nil {
		return "", err
	}
	return a.resolveDataDir(dataDir, configFile)
}

// resolveDataDir is the data dir a command other than server and agent
// works on, found as k3s finds it: the --data-dir flag (dataDir), else
// data-dir in the config file (configFile from --config, else
// $K3S_CONFIG_FILE, else /etc/rancher/k3s/config.yaml with its
// config.yaml.d drop-ins), else $K3S_DATA_DIR, else the default. A node
// whose config moves the data dir is found without repeating it.
func (a *app) resolveDataDir(dataDir, configFile string) (string, error) {
	var args []string
	if dataDir != "" {
		args = append(args, "--data-dir="+dataDir)
	}
	if configFile != "" {
		args = append(args, "--config="+configFile)
	}
	l, err := config.Load(config.Options{Command: "server", Args: args, LookupEnv: a.lookupEnv})
	if err != nil {
		return "", err
	}
	return l.Get("data-dir"), nil
}

func notBuilt(what string) error {
	return fmt.Errorf("%s: %w (ballast's k3s-compatible runtime does not link the upstream component yet)", what, ErrNotBuilt)
}

func (a *app) version() {
	fmt.Fprintf(a.stdout, "k3s version %s (ballast's k3s-compatible runtime, built from upstream components; not the official k3s release)\n", Version)
	var deps []*debug.Module
	if bi, ok := debug.ReadBuildInfo(); ok {
		deps = bi.Deps
	}
	for _, v := range [][2]string{
		{"kubernetes", moduleVersion(KubernetesVersion, "k8s.io/kubernetes", deps)},
		{"containerd", moduleVersion(ContainerdVersion, "github.com/containerd/containerd/v2", deps)},
		{"etcd", moduleVersion(EtcdVersion, "go.etcd.io/etcd/server/v3", deps)},
		{"kine", moduleVersion(KineVersion, "github.com/k3s-io/kine", deps)},
		{"flannel", moduleVersion(FlannelVersion, "github.com/flannel-io/flannel", deps)},
		{"cni-plugins", moduleVersion(CNIPluginsVersion, "github.com/containernetworking/plugins", deps)},
		{"coredns", CoreDNSVersion},
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
  token          bootstrap tokens: generate, create, list, delete
  certificate    rotate [--service a,b]: renew certificates at the next start;
                 check: every certificate with its expiry;
                 rotate-ca --path DIR [--force]: new CAs at the next start
  check-config   check the binaries, the system, cgroups and the kernel config
  etcd-snapshot  etcd snapshots
  --version      versions of this runtime and its upstream components
`)
}

func (a *app) warn(l *config.Loaded) {
	for _, w := range l.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
}

func (a *app) certificate(args []string) error {
	if len(args) > 0 && args[0] == "rotate-ca" {
		return a.rotateCA(args[1:])
	}
	if len(args) == 0 || (args[0] != "rotate" && args[0] != "check") {
		return fmt.Errorf("%w: usage: k3s certificate rotate [--service a,b] [--data-dir DIR] [--config FILE] | check [--data-dir DIR] [--config FILE] | rotate-ca --path DIR [--force] [--server URL]", config.ErrUsage)
	}
	if args[0] == "check" {
		dataDir, err := a.dataDirOnly(args[1:])
		if err != nil {
			return err
		}
		list, err := certs.List(dataDir)
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return fmt.Errorf("no certificates under %s (not a k3s data dir?)", dataDir)
		}
		return certs.PrintTable(a.stdout, list, time.Now())
	}
	var services []string
	var dataDir, configFile string
	err := noPositional(eachFlag(args[1:], nil, func(name, val, arg string) error {
		switch name {
		case "service", "s":
			services = append(services, strings.Split(val, ",")...)
		case "data-dir", "d":
			dataDir = val
		case "config", "c":
			configFile = val
		default:
			return fmt.Errorf("%w: unknown flag %s", config.ErrUsage, arg)
		}
		return nil
	}))
	if err != nil {
		return err
	}
	if dataDir, err = a.resolveDataDir(dataDir, configFile); err != nil {
		return err
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

// DefaultKubeconfig is the admin kubeconfig k3s server writes by default.
const DefaultKubeconfig = "/etc/rancher/k3s/k3s.yaml"

// KubectlKubeconfig picks the kubeconfig `k3s kubectl` sets as KUBECONFIG,
// as k3s does: "" (leave kubectl alone) when KUBECONFIG or --kubeconfig
// is given, else DefaultKubeconfig when it exists.
func KubectlKubeconfig(args []string, lookupEnv func(string) (string, bool), stat func(string) (os.FileInfo, error)) string {
	if v, ok := lookupEnv("KUBECONFIG"); ok && v != "" {
		return ""
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--kubeconfig" || strings.HasPrefix(a, "--kubeconfig=") {
			return ""
		}
	}
	if _, err := stat(DefaultKubeconfig); err != nil {
		return ""
	}
	return DefaultKubeconfig
}
