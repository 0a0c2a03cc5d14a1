package k3s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/componentargs"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/processes"
)

// LogDir is where component logs go, relative to the data dir.
const LogDir = "server/logs"

// controlPlane is the supervised start order of a server: the datastore
// (embedded etcd with --cluster-init or --server; else kine, unless the
// apiserver talks to an external etcd itself), kube-apiserver (ready
// on /readyz with the admin client certificate), then kube-controller-manager
// and kube-scheduler (ready on /healthz), then the deploy controller that
// applies server/manifests. Every component must be linked
// into this binary; the first one that is not is reported as not built,
// after printing the command lines that would have run.
func (a *app) controlPlane(s *config.ServerConfig, lay datadir.Layout, n *componentargs.Node, deployArgs []string) ([]processes.Component, error) {
	pool, admin, err := serverTrust(lay)
	if err != nil {
		return nil, err
	}
	adminClient := httpsClient(pool, &admin)
	plainClient := httpsClient(pool, nil)
	logs := filepath.Join(s.DataDir, LogDir)
	comp := func(name string, args []string, ready func(context.Context) error) processes.Component {
		return processes.Component{Name: name, Path: a.self, Args: append([]string{name}, args...), LogFile: filepath.Join(logs, name+".log"), Ready: ready}
	}
	var plan []processes.Component
	if embeddedEtcd(s) {
		c, err := a.etcdComponent(s, comp)
		if err != nil {
			return nil, err
		}
		plan = append(plan, c)
	}
	if k := n.Kine(); k != nil {
		plan = append(plan, comp("kine", k, unixReady(lay.KineSocket())))
	}
	api, cm, sched := n.APIServer(), n.ControllerManager(), n.Scheduler()
	plan = append(plan,
		comp("kube-apiserver", api, processes.HTTPReady(localURL(api, "6443", "/readyz"), adminClient)),
		comp("kube-controller-manager", cm, processes.HTTPReady(localURL(cm, "10257", "/healthz"), plainClient)),
		comp("kube-scheduler", sched, processes.HTTPReady(localURL(sched, "10259", "/healthz"), plainClient)),
		comp("deploy-controller", append([]string{"--kubeconfig=" + filepath.Join(lay.Cred(), "admin.kubeconfig"), "--manifests-dir=" + lay.Manifests()}, deployArgs...), nil),
	)
	plan = append(plan, a.agentPlan(s, lay, n, comp)...)
	if err := a.checkBuilt(plan); err != nil {
		return nil, fmt.Errorf("k3s server: prepared %s and %s, but %w", s.DataDir, s.WriteKubeconfig, err)
	}
	if err := os.MkdirAll(logs, 0o700); err != nil {
		return nil, err
	}
	return plan, nil
}

// checkBuilt says which components of plan are not linked into this
// binary, after printing the command lines that would have run.
func (a *app) checkBuilt(plan []processes.Component) error {
	var missing []string
	for _, c := range plan {
		if _, ok := a.components[c.Name]; !ok && c.Run == nil {
			missing = append(missing, c.Name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	for _, c := range plan {
		fmt.Fprintf(a.stderr, "would run: %s\n", strings.Join(c.Args, " "))
	}
	return notBuilt(strings.Join(missing, ", "))
}

// serverTrust is the server CA pool and the admin client certificate the
// server uses to ask its own API server (readiness, the node's state).
func serverTrust(lay datadir.Layout) (*x509.CertPool, tls.Certificate, error) {
	tlsDir := lay.TLS()
	caFile := filepath.Join(tlsDir, "server-ca.crt")
	serverCA, err := os.ReadFile(caFile)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(serverCA) {
		return nil, tls.Certificate{}, fmt.Errorf("%s: no certificates", caFile)
	}
	admin, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "client-admin.crt"), filepath.Join(tlsDir, "client-admin.key"))
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("admin client certificate: %w", err)
	}
	return pool, admin, nil
}

// flagValue is the last --name=value in args (user args come last and win).
func flagValue(args []string, name, def string) string {
	v := def
	for _, a := range args {
		if x, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			v = x
		}
	}
	return v
}

// localURL is a component's own health endpoint at the --bind-address
// (loopback when it binds every address) and --secure-port its (possibly
// user-overridden) flags give it.
func localURL(args []string, defPort, path string) string {
	host := flagValue(args, "bind-address", "127.0.0.1")
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "https://" + net.JoinHostPort(host, flagValue(args, "secure-port", defPort)) + path
}

func httpsClient(pool *x509.CertPool, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// unixReady is ready once something accepts connections on the socket.
func unixReady(path string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// runPlan runs plan until ctx ends, with the components' logs in logDir,
// and prints up once when every component is ready; each of with gets the
// runner first (to restart components).
func (a *app) runPlan(ctx context.Context, logDir string, plan []processes.Component, up string, with ...func(*processes.Runner)) error {
	run := &processes.Runner{Components: plan, Logger: slog.New(slog.NewTextHandler(a.stderr, nil))}
	for _, f := range with {
		f(run)
	}
	fmt.Fprintf(a.stderr, "starting %d components; logs in %s\n", len(plan), logDir)
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	announced := false
	for {
		select {
		case err := <-done:
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil
			}
			return err
		case <-tick.C:
			if announced {
				continue
			}
			st := run.Status()
			if len(st) != len(plan) {
				continue
			}
			ready := true
			for _, c := range st {
				ready = ready && c.Ready
			}
			if ready {
				announced = true
				fmt.Fprintln(a.stderr, up)
			}
		}
	}
}

// ImportedFile is written by the image importer once its first pass over
// agent/images is done; the kubelet starts after it, so the pause image
// and the packaged components' images are there before any pod.
const ImportedFile = "/run/k3s/images-imported"

// agentPlan is the node half of a server, after the control plane:
// containerd (ready when its socket answers), the image importer
// (agent/images into containerd, pinned), the kubelet (/healthz on 10248),
// kube-proxy (/livez on 10256) and flannel (ready once it has written the
// node's subnet.env, which the flannel CNI plugin reads). Nothing when the
// agent is disabled; containerd and the importer are left out when the
// user points the kubelet at another CRI endpoint.
func (a *app) agentPlan(s *config.ServerConfig, lay datadir.Layout, n *componentargs.Node, comp func(string, []string, func(context.Context) error) processes.Component) []processes.Component {
	if s.DisableAgent {
		return nil
	}
	var plan []processes.Component
	if args := n.Containerd(); args != nil {
		c := comp("containerd", args, unixReady(componentargs.ContainerdSocket))
		c.Env = containerdEnv(a.lookupEnv)
		plan = append(plan,
			c,
			comp("image-import", []string{"--address=" + componentargs.ContainerdSocket, "--dir=" + lay.Images(), "--snapshotter=" + s.Snapshotter, "--ready-file=" + ImportedFile, "--state-file=" + filepath.Join(lay.ContainerdRoot(), "ballast-images-imported.json")}, fileReady(ImportedFile)),
		)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	plan = append(plan, comp("kubelet", n.Kubelet(), processes.HTTPReady("http://127.0.0.1:10248/healthz", plain)))
	if args := n.KubeProxy(); args != nil {
		plan = append(plan, comp("kube-proxy", args, processes.HTTPReady("http://127.0.0.1:10256/livez", plain)))
	}
	if args := n.Flannel(); args != nil {
		plan = append(plan, comp("flannel", args, fileReady(componentargs.FlannelSubnetFile)))
	}
	if args := n.NetworkPolicy(); args != nil {
		plan = append(plan, comp("network-policy", args, nil))
	}
	for i := range plan {
		a.runInProcess(&plan[i])
	}
	return plan
}

// runInProcess makes c run inside this process when it has an in-process
// entry point (InProcess): the image importer, flannel and the network
// policy controller.
func (a *app) runInProcess(c *processes.Component) {
	f := a.inProcess[c.Name]
	if f == nil {
		return
	}
	args := c.Args[1:] // Args[0] is the component's name
	c.Run = func(ctx context.Context, log io.Writer) error { return f(ctx, args, log) }
}

// fileReady is ready once path exists and is not empty.
func fileReady(path string) func(context.Context) error {
	return func(context.Context) error {
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		if st.Size() == 0 {
			return fmt.Errorf("%s is empty", path)
		}
		return nil
	}
}

// containerdEnv is the proxy environment containerd gets, as k3s gives
// it: CONTAINERD_HTTP_PROXY, CONTAINERD_HTTPS_PROXY and
// CONTAINERD_NO_PROXY become HTTP_PROXY... for containerd only.
func containerdEnv(lookupEnv func(string) (string, bool)) []string {
	var env []string
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"} {
		if v, ok := lookupEnv("CONTAINERD_" + k); ok {
			env = append(env, k+"="+v, strings.ToLower(k)+"="+v)
		}
	}
	return env
}
