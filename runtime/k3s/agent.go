package k3s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/agent"
	"github.com/ballast-os/ballast/runtime/componentargs"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/loadbalancer"
	"github.com/ballast-os/ballast/runtime/processes"
	"github.com/ballast-os/ballast/runtime/token"
)

// AgentLogDir is where an agent's component logs go, relative to the data dir.
const AgentLogDir = "agent/logs"

// agent joins the server named by --server with --token and runs the
// node's components, in the order k3s's agent starts them:
//
//	join         /cacerts pinned by the token, /v1-k3s/config, certificates for the node's keys
//	configs      kubelet, containerd, CNI and flannel configs from the server's cluster settings
//	lb           the load balancer on 127.0.0.1:lb-server-port, following the servers
//	node setup   modules, sysctls, the memory cgroup check
//	components   containerd, image-import, kubelet, kube-proxy, flannel
//
// A join that fails (server down, wrong token, rejected node) is retried
// with back-off; what is on disk is kept.
func (a *app) agent(ctx context.Context, args []string) error {
	l, err := config.Load(config.Options{Command: "agent", Args: args, LookupEnv: a.lookupEnv})
	if err != nil {
		return err
	}
	a.warn(l)
	if err := l.Unsupported(); err != nil {
		return err
	}
	ac, err := l.AgentConfig()
	if err != nil {
		return err
	}
	if ac.ServerURL == "" {
		return fmt.Errorf("%w: k3s agent needs --server (K3S_URL), e.g. https://10.0.0.1:6443", config.ErrUsage)
	}
	tok, err := agentToken(ac)
	if err != nil {
		return err
	}
	nodeName, nodeIPs, err := nodeIdentity(ac.NodeName, ac.NodeIPs, ac.WithNodeID)
	if err != nil {
		return err
	}
	lay := datadir.Layout{Root: ac.DataDir}
	if err := lay.Create(false, true); err != nil {
		return err
	}
	pw, err := agent.NodePassword(agent.NodePasswordFile)
	if err != nil {
		return err
	}
	lbPort := ac.LBServerPort
	if lbPort == 0 {
		lbPort = 6444
	}
	j := &agent.Join{ServerURL: ac.ServerURL, Token: tok, NodeName: nodeName, NodePassword: pw, NodeIPs: nodeIPs, DataDir: ac.DataDir, LBPort: lbPort}
	joined, err := a.joinWithBackoff(ctx, j)
	if err != nil || joined == nil {
		return err
	}
	for _, f := range joined.Fetched {
		fmt.Fprintf(a.stderr, "issued %s (signed by the server)\n", f)
	}
	s := &config.ServerConfig{AgentConfig: *ac}
	if err := joined.Cluster.ApplyTo(s); err != nil {
		return err
	}
	resolv, err := a.nodeResolvConf(ac.ResolvConf, lay)
	if err != nil {
		return err
	}
	if err := extendNoProxy(a.lookupEnv, osSetenv, a.stderr, append(slices.Clone(s.ClusterCIDRs), s.ServiceCIDRs...), s.ClusterDomain); err != nil {
		return err
	}
	n := &componentargs.Node{Server: s, NodeName: nodeName, NodeIPs: nodeIPs, ResolvConf: resolv, CgroupV1: cgroupV1(realHost{}), CloudController: !s.DisableCloudController}
	if err := a.writeAgentConfigs(s, lay, n); err != nil {
		return err
	}
	if err := a.startLoadBalancer(ctx, j, joined, lbPort); err != nil {
		return err
	}
	for _, w := range setupNode(realHost{}) {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	logs := filepath.Join(ac.DataDir, AgentLogDir)
	if err := os.MkdirAll(logs, 0o700); err != nil {
		return err
	}
	plan := a.agentPlan(s, lay, n, func(name string, args []string, ready func(context.Context) error) processes.Component {
		return processes.Component{Name: name, Path: a.self, Args: append([]string{name}, args...), LogFile: filepath.Join(logs, name+".log"), Ready: ready}
	})
	if err := a.checkBuilt(plan); err != nil {
		return err
	}
	if c, err := nodeClient(lay); err == nil {
		go a.watchNode(ctx, c, fmt.Sprintf("https://127.0.0.1:%d", lbPort), nodeName, nodeMeta{Annotations: nodeAnnotations(nodeName, nodeIPs, ac.NodeExternalIPs)})
	}
	return a.runPlan(ctx, logs, plan, fmt.Sprintf("k3s agent is up: node %s joined %s", nodeName, ac.ServerURL), func(run *processes.Runner) {
		// A Join of its own: the load balancer's keeps asking j for the
		// servers' addresses meanwhile.
		renew := *j
		go watchAgentCertificates(ctx, certCheckInterval(a.lookupEnv), &renew, run, a.stderr)
	})
}

// valueOrFile is a flag's value, else the trimmed contents of the file
// its -file twin names (--token / --token-file), else "".
func valueOrFile(value, file, fileFlag string) (string, error) {
	if value != "" || file == "" {
		return value, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", fileFlag, err)
	}
	return strings.TrimSpace(string(data)), nil
}

// agentToken is --token, else the contents of --token-file.
func agentToken(ac *config.AgentConfig) (token.Token, error) {
	raw, err := valueOrFile(ac.Token, ac.TokenFile, "token-file")
	if err != nil {
		return token.Token{}, err
	}
	if raw == "" {
		return token.Token{}, fmt.Errorf("%w: k3s agent needs --token (K3S_TOKEN) or --token-file: the server's /var/lib/rancher/k3s/server/node-token or agent-token", config.ErrUsage)
	}
	t, err := token.Parse(raw)
	if err != nil {
		return token.Token{}, &config.FieldError{Flag: "token", Value: "(hidden)", Err: err}
	}
	return t, nil
}

// nodeIdentity is the node name (--node-name, else the lower-cased
// hostname; with --with-node-id, "-<id>" from /etc/rancher/node/id after
// it) and addresses (--node-ip, else the first global address).
func nodeIdentity(name string, ips []netip.Addr, withNodeID bool) (string, []netip.Addr, error) {
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", nil, fmt.Errorf("node name: %w", err)
		}
		name = strings.ToLower(h)
	}
	if withNodeID {
		id, err := agent.NodeID(nodeIDFile)
		if err != nil {
			return "", nil, err
		}
		name += "-" + id
	}
	if len(ips) == 0 {
		ips = []netip.Addr{defaultNodeIP()}
	}
	return name, ips, nil
}

// nodeIDFile is agent.NodeIDFile; a variable for tests.
var nodeIDFile = agent.NodeIDFile

// nodeClient asks the API server as this node's kubelet (which may read
// its own Node object), trusting the server CA the join fetched.
func nodeClient(lay datadir.Layout) (*http.Client, error) {
	caPEM, err := os.ReadFile(lay.AgentFile("server-ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(lay.AgentFile("client-kubelet.crt"), lay.AgentFile("client-kubelet.key"))
	if err != nil {
		return nil, err
	}
	return httpsClient(pool, &cert), nil
}

// joinWithBackoff repeats the join until it succeeds or ctx ends (then it
// returns nil, nil). Each failure is one line saying why; the same reason
// is not repeated at every try.
func (a *app) joinWithBackoff(ctx context.Context, j *agent.Join) (*agent.Joined, error) {
	var joined *agent.Joined
	err := a.retry(ctx, "k3s agent: joining "+j.ServerURL, isFieldError, func() error {
		var err error
		joined, err = j.Run(ctx)
		return err
	})
	if ctx.Err() != nil {
		return nil, nil
	}
	return joined, err
}

// isFieldError: a bad flag value, which no retry mends.
func isFieldError(err error) bool {
	var fe *config.FieldError
	return errors.As(err, &fe)
}

// startLoadBalancer listens on 127.0.0.1:port and passes connections to
// the servers, refreshing the list from the join API every 30 s.
func (a *app) startLoadBalancer(ctx context.Context, j *agent.Join, joined *agent.Joined, port int) error {
	u, err := url.Parse(j.ServerURL)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	lb := &loadbalancer.LoadBalancer{Default: host, Logf: func(f string, args ...any) { fmt.Fprintf(a.stderr, f+"\n", args...) }}
	lb.SetServers(joined.APIServers)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("load balancer: lb-server-port: %w", err)
	}
	go func() {
		if err := lb.Serve(ctx, ln); err != nil {
			fmt.Fprintln(a.stderr, "k3s:", err)
		}
	}()
	go func() {
		have := joined.APIServers
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(30 * time.Second):
			}
			got, err := j.APIServers(ctx)
			if err != nil || slices.Equal(got, have) {
				continue
			}
			fmt.Fprintf(a.stderr, "load balancer: servers %s\n", strings.Join(got, ", "))
			lb.SetServers(got)
			have = got
		}
	}()
	return nil
}
