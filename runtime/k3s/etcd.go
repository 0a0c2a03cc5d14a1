package k3s

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ballast-os/ballast/runtime/agent"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ballast-os/ballast/runtime/atomicfile"
	"github.com/ballast-os/ballast/runtime/bootstrap"
	"github.com/ballast-os/ballast/runtime/componentargs"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/etcdcluster"
	"github.com/ballast-os/ballast/runtime/processes"
	"github.com/ballast-os/ballast/runtime/supervisor"
	"github.com/ballast-os/ballast/runtime/token"
)

// embeddedEtcd reports whether the server's datastore is embedded etcd:
// --cluster-init starts a cluster, --server joins one, --cluster-reset
// resets one, and a server that has etcd data keeps using it (as k3s, it
// does not fall back to an empty sqlite datastore when --cluster-init is
// left out of a later start).
func embeddedEtcd(s *config.ServerConfig) bool {
	return s.ClusterInit || s.ServerURL != "" || s.ClusterReset || etcdcluster.HasData(s.DataDir)
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
	case s.EtcdS3:
		return notBuilt("etcd snapshots to S3 (--etcd-s3)")
	case s.ClusterReset && s.ClusterResetRestorePath == "" && !etcdcluster.HasData(s.DataDir):
		return fmt.Errorf("--cluster-reset: %s has no etcd data to reset (give --cluster-reset-restore-path to restore a snapshot)", etcdcluster.Dir(s.DataDir))
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
}

// alone is the initial cluster of this member by itself.
func (m *etcdMember) alone() string { return m.name + "=" + m.opts.PeerURL() }

// joinServer asks the server at --server for the cluster's CAs, keys and
// passwords, once, before this server lays out its own certificates. A
// server that already has etcd data is a member and asks nothing.
func (a *app) joinServer(ctx context.Context, s *config.ServerConfig) (*agent.ServerClient, error) {
	if s.ServerURL == "" || etcdcluster.HasData(s.DataDir) || s.ClusterReset {
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
	err = a.retry(ctx, "joining "+s.ServerURL, wrongToken, func() error {
		var err error
		if sc, err = agent.NewServerClient(ctx, s.ServerURL, tok); err != nil {
			return err
		}
		b, err := sc.Bootstrap(ctx)
		if err != nil {
			return err
		}
		if err := b.Write(s.DataDir); err != nil {
			return err
		}
		return bootstrap.Agree(s.DataDir, b)
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(a.stderr, "joined %s: the cluster's CAs and passwords are in %s/server\n", s.ServerURL, s.DataDir)
	return sc, nil
}

// etcdOptions are this server's etcd member's options.
func etcdOptions(s *config.ServerConfig, nodeName string, adv netip.Addr) etcdcluster.Options {
	return etcdcluster.Options{DataDir: s.DataDir, NodeName: nodeName, Address: adv, ExposeMetrics: s.EtcdExposeMetrics, Args: s.EtcdArgs}
}

// prepareEtcd names this server's member and writes etcd's config: a new
// one-member cluster (--cluster-init), a learner added to the cluster of
// --server, or a member restarting from its data.
func (a *app) prepareEtcd(ctx context.Context, s *config.ServerConfig, sc *agent.ServerClient, nodeName string, adv netip.Addr) (*etcdMember, error) {
	m := &etcdMember{opts: etcdOptions(s, nodeName, adv)}
	var err error
	if m.name, err = m.opts.MemberName(); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	if sc == nil {
		m.endpoints = []string{localEtcd}
		return m, m.opts.WriteConfig(m.name, m.alone(), etcdcluster.New)
	}
	err = a.retry(ctx, "adding this server to the etcd cluster of "+s.ServerURL, wrongToken, func() error {
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

// resetFlag is written after a --cluster-reset; while it exists a start
// with --cluster-reset still configured starts normally instead of
// resetting again (a supervisor restarting k3s with the same config), and
// a start without the flag removes it.
func resetFlag(dataDir string) string { return filepath.Join(dataDir, "server", "db", "reset-flag") }

// resetPending reports whether this start resets the cluster, and clears
// a finished reset's flag when it does not.
func (a *app) resetPending(s *config.ServerConfig) bool {
	_, err := os.Stat(resetFlag(s.DataDir))
	flagged := err == nil
	switch {
	case !s.ClusterReset:
		if flagged {
			_ = os.Remove(resetFlag(s.DataDir))
		}
		return false
	case flagged:
		fmt.Fprintf(a.stderr, "warning: --cluster-reset: this cluster was reset already (%s exists); starting normally. Remove cluster-reset (and cluster-reset-restore-path) from the config.\n", resetFlag(s.DataDir))
		return false
	}
	return true
}

// clusterReset makes this member the only one of its cluster, keeping its
// data, or with --cluster-reset-restore-path the data of a snapshot: etcd
// runs once with force-new-cluster until it answers as a one-member
// cluster, then the server exits, as k3s does, to be started again
// without --cluster-reset.
func (a *app) clusterReset(ctx context.Context, s *config.ServerConfig, m *etcdMember) error {
	if p := s.ClusterResetRestorePath; p != "" {
		st, err := os.Stat(p)
		switch {
		case err != nil:
			return fmt.Errorf("etcd: snapshot path does not exist: %s", p)
		case st.IsDir():
			return fmt.Errorf("etcd: snapshot path must be a file, not a directory: %s", p)
		}
		old, err := m.opts.Restore(m.name, p, time.Now())
		if err != nil {
			return err
		}
		if old != "" {
			fmt.Fprintf(a.stderr, "Pre-restore etcd database moved to %s\n", old)
		}
		fmt.Fprintf(a.stderr, "etcd: restored %s\n", p)
	}
	if err := m.opts.WriteConfigWith(m.name, m.alone(), etcdcluster.New, map[string]any{"force-new-cluster": true}); err != nil {
		return err
	}
	etcd, err := a.startChild(s, "etcd", "--config-file="+etcdcluster.ConfigPath(s.DataDir))
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err = a.retryQuiet(wctx, func() error {
		if err := etcd.exited(); err != nil {
			return err
		}
		cli, err := localEtcdClient(s.DataDir)
		if err != nil {
			return err
		}
		defer cli.Close()
		cctx, ccancel := context.WithTimeout(wctx, 10*time.Second)
		defer ccancel()
		members, err := etcdcluster.Members(cctx, cli)
		if err == nil && len(members) != 1 {
			err = fmt.Errorf("%d members", len(members))
		}
		if err == nil {
			_, err = cli.Get(cctx, "/registry/health")
		}
		return err
	})
	etcd.stop()
	if err != nil {
		return fmt.Errorf("--cluster-reset: etcd did not come up as a one-member cluster: %w", err)
	}
	if err := m.opts.WriteConfig(m.name, m.alone(), etcdcluster.New); err != nil {
		return err
	}
	if err := atomicfile.Write(resetFlag(s.DataDir), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete %s on each peer etcd server and rejoin the nodes\n", filepath.Join(s.DataDir, "server", "db"))
	return nil
}

// child is a component run by the server itself for a one-off job
// (cluster reset, datastore migration), outside the supervised plan.
type child struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited
	err       error         // its exit, once done is closed
}

// startChild runs this program as component name with args, its output
// appended to the component's log.
func (a *app) startChild(s *config.ServerConfig, name string, args ...string) (*child, error) {
	logPath := filepath.Join(s.DataDir, LogDir, name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	prog := a.self
	if prog == "" {
		if prog, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	c := &child{name: name, log: logPath, cmd: exec.Command(prog, append([]string{name}, args...)...), done: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// exited is an error once the child has exited.
func (c *child) exited() error {
	select {
	case <-c.done:
		return fmt.Errorf("%s exited: %v (see %s)", c.name, c.err, c.log)
	default:
		return nil
	}
}

// stop ends the child (SIGTERM, SIGKILL after 30 s) and waits for it.
func (c *child) stop() {
	if c.exited() != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// retryQuiet runs f every second until it succeeds or ctx ends, and
// returns its last error.
func (a *app) retryQuiet(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// sqliteToMigrate is the sqlite datastore (server/db/state.db) a server
// started for the first time with --cluster-init moves into etcd, as k3s
// does; "" when there is nothing to move.
func sqliteToMigrate(s *config.ServerConfig) string {
	if !s.ClusterInit || s.ServerURL != "" || s.DatastoreEndpoint != "" || etcdcluster.HasData(s.DataDir) {
		return ""
	}
	p := filepath.Join(s.DataDir, "server", "db", "state.db")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// migrateSQLite copies the Kubernetes objects of the sqlite datastore at
// db into this member's new etcd: kine serves the sqlite file, etcd runs
// with its data beside the real data dir, and only a finished copy is
// moved into server/db/etcd, so a power cut during the move starts it
// again. The sqlite file stays as it was, a backup.
func (a *app) migrateSQLite(ctx context.Context, s *config.ServerConfig, m *etcdMember, db string) error {
	dir := etcdcluster.Dir(s.DataDir)
	tmp := filepath.Join(filepath.Dir(dir), "etcd-migrate")
	sock := filepath.Join(filepath.Dir(dir), "migrate-kine.sock")
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := m.opts.WriteConfigWith(m.name, m.alone(), etcdcluster.New, map[string]any{"data-dir": tmp}); err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "etcd: moving the objects of %s into embedded etcd (--cluster-init on a server that used sqlite)\n", db)
	etcd, err := a.startChild(s, "etcd", "--config-file="+etcdcluster.ConfigPath(s.DataDir))
	if err != nil {
		return err
	}
	defer etcd.stop()
	kine, err := a.startChild(s, "kine", "--listen-address=unix://"+sock, "--endpoint=sqlite://"+db+"?"+componentargs.KineSQLiteParams)
	if err != nil {
		return err
	}
	defer kine.stop()
	src, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := localEtcdClient(s.DataDir)
	if err != nil {
		return err
	}
	defer dst.Close()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	n := 0
	err = a.retryQuiet(wctx, func() error {
		for _, c := range []*child{etcd, kine} {
			if err := c.exited(); err != nil {
				return err
			}
		}
		var err error
		n, err = etcdcluster.Copy(wctx, src, dst)
		return err
	})
	etcd.stop()
	kine.stop()
	if err != nil {
		return fmt.Errorf("moving %s into etcd: %w", db, err)
	}
	if err := os.Rename(filepath.Join(tmp, "member"), filepath.Join(dir, "member")); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return err
	}
	_ = os.RemoveAll(tmp)
	fmt.Fprintf(a.stderr, "etcd: moved %d objects from %s (kept as a backup) into etcd\n", n, db)
	return m.opts.WriteConfig(m.name, m.alone(), etcdcluster.New)
}

// localEtcd is this server's etcd client URL on loopback.
const localEtcd = "https://127.0.0.1:2379"

// localEtcdClient is an etcd client of this server's member.
func localEtcdClient(dataDir string) (*clientv3.Client, error) {
	return etcdcluster.Client(dataDir, []string{localEtcd})
}

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
		cli, err := localEtcdClient(dataDir)
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return etcdcluster.Members(ctx, cli)
	}
}

// etcdNodeNameAnnotation names a server node's etcd member, as in k3s.
const etcdNodeNameAnnotation = "etcd.k3s.cattle.io/node-name"

// removeEtcdMember is the node controller's hook: a deleted server node's
// etcd member (named by its etcd.k3s.cattle.io/node-name annotation) is
// removed, as k3s does, so that the cluster's quorum no longer counts it.
// Every server sees the deletion; the first removes the member and the
// others find none. An election under way (the deleted server may have
// led) is waited out here, for up to two minutes, rather than failing the
// watch, which would lose the deletion. This server's own member is left:
// its node object may be deleted and come back while it runs.
func (a *app) removeEtcdMember(s *config.ServerConfig, self string) func(context.Context, string, map[string]string) error {
	return func(ctx context.Context, node string, annotations map[string]string) error {
		member, isServer := annotations[etcdNodeNameAnnotation]
		if node == self || !isServer {
			return nil
		}
		cli, err := localEtcdClient(s.DataDir)
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		err = a.retry(ctx, "etcd: removing the member "+member+" of deleted node "+node, nil, func() error {
			cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
			defer ccancel()
			removed, err := etcdcluster.RemoveMember(cctx, cli, member)
			if err == nil && !removed {
				// The annotation may name the member of the node's
				// earlier life (a restored datastore); members are
				// named after their node.
				removed, err = etcdcluster.RemoveNode(cctx, cli, node)
			}
			if removed {
				fmt.Fprintf(a.stderr, "etcd: node %s deleted: removed its etcd member\n", node)
			}
			return err
		})
		if err != nil {
			fmt.Fprintf(a.stderr, "etcd: node %s deleted, its member %s is still there: %v (etcdctl member remove)\n", node, member, err)
		}
		return nil
	}
}

// retry runs f until it succeeds, ctx ends (ctx's error) or permanent
// (when set) says an error will not go away (that error), with back-off,
// saying once per distinct failure what went wrong.
func (a *app) retry(ctx context.Context, what string, permanent func(error) bool, f func() error) error {
	delay := 2 * time.Second
	last := ""
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if msg := err.Error(); msg != last {
			fmt.Fprintf(a.stderr, "%s: %v (retrying)\n", what, err)
			last = msg
		}
		if permanent != nil && permanent(err) {
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

// wrongToken: a server that refused the token will not take it later.
func wrongToken(err error) bool { return errors.Is(err, agent.ErrWrongToken) }
