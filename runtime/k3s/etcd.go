package k3s

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/agent"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/etcdcluster"
	"github.com/ballast-os/ballast/runtime/processes"
	"github.com/ballast-os/ballast/runtime/supervisor"
	"github.com/ballast-os/ballast/runtime/token"
)

// embeddedEtcd reports whether the server's datastore is embedded etcd:
// --cluster-init starts a cluster, --server joins one.
func embeddedEtcd(s *config.ServerConfig) bool {
	return s.ClusterInit || s.ServerURL != ""
}

// checkEtcdFlags refuses the combinations k3s refuses, or that this
// runtime does not act on.
func checkEtcdFlags(s *config.ServerConfig) error {
	switch {
	case s.DatastoreEndpoint != "" && s.ClusterInit:
		return &config.FieldError{Flag: "cluster-init", Value: "true", Err: fmt.Errorf("cannot be used with datastore-endpoint (%s): embedded etcd and an external datastore exclude each other", s.DatastoreEndpoint)}
	case s.DatastoreEndpoint != "" && s.ServerURL != "":
		return notBuilt("joining a server that uses an external datastore (--server with --datastore-endpoint)")
	case s.DisableETCD:
		return notBuilt("disable-etcd (control-plane-only servers)")
	}
	return nil
}

// etcdMember is this server's etcd member while the server prepares.
type etcdMember struct {
	opts etcdcluster.Options
	name string
	// endpoints are the client URLs of the cluster (this member's last),
	// for promotion.
	endpoints []string
	// sc is the join API of --server, when this server joins.
	sc *agent.ServerClient
}

// joinServer asks the server at --server for the cluster's CAs, keys and
// passwords, once, before this server lays out its own certificates. A
// server that already has etcd data is a member and asks nothing.
func (a *app) joinServer(ctx context.Context, s *config.ServerConfig) (*agent.ServerClient, error) {
	if s.ServerURL == "" || etcdcluster.HasData(s.DataDir) {
		return nil, nil
	}
	raw, err := valueOrFile(s.Token, s.TokenFile, "token-file")
	if err != nil {
		return nil, err
	}
	if raw == "" {
		return nil, fmt.Errorf("%w: a server that joins with --server needs the cluster's server token (--token, K3S_TOKEN): the first server's /var/lib/rancher/k3s/server/token", config.ErrUsage)
	}
	tok, err := token.Parse(raw)
	if err != nil {
		return nil, &config.FieldError{Flag: "token", Value: "(hidden)", Err: err}
	}
	var sc *agent.ServerClient
	err = a.retry(ctx, "joining "+s.ServerURL, func() error {
		var err error
		if sc, err = agent.NewServerClient(ctx, s.ServerURL, tok); err != nil {
			return err
		}
		b, err := sc.Bootstrap(ctx)
		if err != nil {
			return err
		}
		return supervisor.WriteBootstrap(s.DataDir, b)
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(a.stderr, "joined %s: the cluster's CAs and passwords are in %s/server\n", s.ServerURL, s.DataDir)
	return sc, nil
}

// prepareEtcd names this server's member and writes etcd's config: a new
// one-member cluster (--cluster-init), a learner added to the cluster of
// --server, or a member restarting from its data.
func (a *app) prepareEtcd(ctx context.Context, s *config.ServerConfig, sc *agent.ServerClient, nodeName string, adv netip.Addr) (*etcdMember, error) {
	m := &etcdMember{opts: etcdcluster.Options{DataDir: s.DataDir, NodeName: nodeName, Address: adv, ExposeMetrics: s.EtcdExposeMetrics, Args: s.EtcdArgs}, sc: sc}
	var err error
	if m.name, err = m.opts.MemberName(); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	self := m.name + "=" + m.opts.PeerURL()
	if sc == nil {
		m.endpoints = []string{localEtcd}
		return m, m.opts.WriteConfig(m.name, self, etcdcluster.New)
	}
	err = a.retry(ctx, "adding this server to the etcd cluster of "+s.ServerURL, func() error {
		var members []etcdcluster.Member
		if err := sc.DBInfo(ctx, &members); err != nil {
			return err
		}
		var urls []string
		for _, mem := range members {
			urls = append(urls, mem.ClientURLs...)
		}
		if len(urls) == 0 {
			return fmt.Errorf("%s/db/info lists no etcd client URLs", s.ServerURL)
		}
		cli, err := etcdcluster.Client(s.DataDir, urls)
		if err != nil {
			return err
		}
		defer cli.Close()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		initial, err := etcdcluster.Join(cctx, cli, m.name, m.opts.PeerURL())
		if err != nil {
			return err
		}
		m.endpoints = append(urls, localEtcd)
		fmt.Fprintf(a.stderr, "etcd: %s added as a learner (initial cluster %s)\n", m.name, initial)
		return m.opts.WriteConfig(m.name, initial, etcdcluster.Existing)
	})
	return m, err
}

// localEtcd is this server's etcd client URL on loopback.
const localEtcd = "https://127.0.0.1:2379"

// etcdComponent is the supervised etcd process, ready when its /health
// answers (a leader is known).
func (a *app) etcdComponent(s *config.ServerConfig, comp func(string, []string, func(context.Context) error) processes.Component) (processes.Component, error) {
	tc, err := etcdcluster.ClientTLS(s.DataDir)
	if err != nil {
		return processes.Component{}, err
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	return comp("etcd", []string{"--config-file=" + etcdcluster.ConfigPath(s.DataDir)}, processes.HTTPReady(localEtcd+"/health", hc)), nil
}

// promote makes this server's member a voter once it has caught up (a
// no-op when it already votes).
func (a *app) promote(ctx context.Context, s *config.ServerConfig, m *etcdMember) {
	cli, err := etcdcluster.Client(s.DataDir, m.endpoints)
	if err != nil {
		fmt.Fprintln(a.stderr, "etcd:", err)
		return
	}
	defer cli.Close()
	logf := func(f string, args ...any) { fmt.Fprintf(a.stderr, f+"\n", args...) }
	if err := etcdcluster.Promote(ctx, cli, m.name, logf); err == nil {
		fmt.Fprintf(a.stderr, "etcd: %s is a voting member\n", m.name)
	}
}

// etcdDBInfo answers the supervisor's /db/info from the local member.
func etcdDBInfo(dataDir string) supervisor.DBInfo {
	return func(ctx context.Context) (any, error) {
		cli, err := etcdcluster.Client(dataDir, []string{localEtcd})
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return etcdcluster.Members(ctx, cli)
	}
}

// retry runs f until it succeeds or ctx ends, with back-off, saying once
// per distinct failure what went wrong.
func (a *app) retry(ctx context.Context, what string, f func() error) error {
	delay := 2 * time.Second
	last := ""
	for {
		err := f()
		if err == nil {
			return nil
		}
		if msg := err.Error(); msg != last {
			fmt.Fprintf(a.stderr, "%s: %v (retrying)\n", what, err)
			last = msg
		}
		if strings.Contains(err.Error(), agent.ErrWrongToken.Error()) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}
