package k3s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ballast-os/ballast/runtime/agent"
	"github.com/ballast-os/ballast/runtime/bootstrap"
	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/etcdcluster"
	"github.com/ballast-os/ballast/runtime/token"
)

// The cluster's bootstrap record (package bootstrap): an etcd member that
// restarts takes from it what another server changed while it was down
// or since it started (a rotated token's passwords, a new
// secrets-encryption config, rotated CAs), before it lays out its
// certificates; once its etcd runs, the record takes what this server
// changed.

// serverPassword is the password of the server token this server starts
// with: --token (or --token-file), else the one in server/token.
func serverPassword(s *config.ServerConfig, lay datadir.Layout) (string, error) {
	raw, err := valueOrFile(s.Token, s.TokenFile, "token-file")
	if err != nil {
		return "", err
	}
	if raw == "" {
		data, err := os.ReadFile(lay.TokenFile())
		if err != nil {
			return "", fmt.Errorf("no --token and %w", err)
		}
		raw = strings.TrimSpace(string(data))
	}
	t, err := token.Parse(raw)
	if err != nil {
		return "", &config.FieldError{Flag: "token", Value: "(hidden)", Err: err}
	}
	return t.Password, nil
}

// reconcileBootstrap brings a restarting member's bootstrap files to the
// cluster's record: read through the join API of --server when it
// answers (the cluster's record as it is now), else from a copy of this
// member's own etcd data served by a temporary etcd on loopback (the
// record as this member last saw it). No record yet (a cluster made
// before servers kept one) changes nothing; the record is then made from
// this server's files once its etcd runs (recordSync).
func (a *app) reconcileBootstrap(ctx context.Context, s *config.ServerConfig, lay datadir.Layout, opts etcdcluster.Options) error {
	password, err := serverPassword(s, lay)
	if err != nil {
		return err
	}
	var stored bootstrap.Data
	from := ""
	if s.ServerURL != "" {
		if stored, err = a.recordFromServer(ctx, s.DataDir, s.ServerURL, password); err == nil {
			from = s.ServerURL
		} else if errors.Is(err, agent.ErrConflict) {
			return fmt.Errorf("bootstrap data from %s: %w", s.ServerURL, err)
		} else {
			fmt.Fprintf(a.stderr, "bootstrap data: not read through %s (%v); reading this member's own copy of the datastore\n", s.ServerURL, err)
		}
	}
	if from == "" {
		stored, err = a.recordFromLocalEtcd(ctx, s, opts, password)
		switch {
		case errors.Is(err, bootstrap.ErrNotFound):
			fmt.Fprintln(a.stderr, "bootstrap data: the datastore has none yet; it is made from this server's files once etcd runs")
			return adoptRotatedToken(s, lay, password)
		case errors.Is(err, bootstrap.ErrOtherToken), errors.Is(err, bootstrap.ErrWrongToken):
			return fmt.Errorf("bootstrap data: %w", err)
		case err != nil:
			// Not worth a node that does not start: the record is compared
			// again once etcd runs, and what changed elsewhere is said then.
			fmt.Fprintf(a.stderr, "warning: bootstrap data: %v; starting with this server's own files\n", err)
			return adoptRotatedToken(s, lay, password)
		}
		from = "this member's copy of the datastore"
	}
	taken, err := bootstrap.Reconcile(s.DataDir, stored, func(paths []string) error {
		for _, p := range paths {
			if strings.HasPrefix(p, "server/tls/") {
				backup, err := certs.BackupTLS(s.DataDir, time.Now())
				if err == nil {
					fmt.Fprintf(a.stderr, "bootstrap data: new CA files from the cluster; the current ones are backed up in %s\n", backup)
				}
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bootstrap data (from %s): %w", from, err)
	}
	if len(taken) > 0 {
		fmt.Fprintf(a.stderr, "bootstrap data: %s updated from %s (changed on another server)\n", strings.Join(taken, ", "), from)
	}
	return adoptRotatedToken(s, lay, password)
}

// adoptRotatedToken makes server/token follow passwd when the cluster's
// token was rotated on another server: passwd (taken from the record, in
// this start or in one that stopped before this step) has the token this
// server starts with, server/token still the old one.
func adoptRotatedToken(s *config.ServerConfig, lay datadir.Layout, password string) error {
	passwd := filepath.Join(lay.Cred(), "passwd")
	users, err := token.ReadPasswd(passwd)
	if err != nil || users["server"] != password {
		return nil
	}
	if data, err := os.ReadFile(lay.TokenFile()); err == nil {
		if t, err := token.Parse(strings.TrimSpace(string(data))); err == nil && t.Password == password {
			return nil
		}
	}
	ca, err := os.ReadFile(filepath.Join(lay.TLS(), "server-ca.crt"))
	if err != nil {
		return err
	}
	return token.AdoptPasswd(token.Files{Token: lay.TokenFile(), Passwd: passwd}, ca)
}

// recordFromServer asks the server at url for the cluster's bootstrap
// data (GET /v1-k3s/server-bootstrap), within 20 seconds.
func (a *app) recordFromServer(ctx context.Context, dataDir, url, password string) (bootstrap.Data, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	ca, err := os.ReadFile(filepath.Join(datadir.Layout{Root: dataDir}.TLS(), "server-ca.crt"))
	if err != nil {
		return nil, err
	}
	// The server must show the CA this server has: bootstrap data carries
	// the cluster's keys.
	sc, err := agent.NewServerClient(ctx, url, token.Token{CAHash: token.CAHash(ca), Username: "server", Password: password})
	if err != nil {
		return nil, err
	}
	return sc.Bootstrap(ctx)
}

// recordFromLocalEtcd reads the record from a copy of this member's etcd
// data, served by a temporary one-member etcd on loopback (the member
// itself has not started yet, and may have no quorum without the others).
func (a *app) recordFromLocalEtcd(ctx context.Context, s *config.ServerConfig, opts etcdcluster.Options, password string) (bootstrap.Data, error) {
	name, err := opts.MemberName()
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(filepath.Dir(etcdcluster.Dir(s.DataDir)), "etcd-bootstrap")
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := etcdcluster.CopyMember(s.DataDir, tmp); err != nil {
		return nil, fmt.Errorf("copying this member's etcd data: %w", err)
	}
	cfg := filepath.Join(tmp, "config")
	if err := opts.WriteTempConfig(cfg, name, tmp); err != nil {
		return nil, err
	}
	etcd, err := a.startChild(s, "etcd", "--config-file="+cfg)
	if err != nil {
		return nil, err
	}
	defer etcd.stop()
	cli, err := etcdcluster.Client(s.DataDir, []string{fmt.Sprintf("https://127.0.0.1:%d", etcdcluster.TempClientPort)})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var d bootstrap.Data
	var answer error // the record, or why there is none: no need to ask again
	err = a.retryQuiet(wctx, func() error {
		if err := etcd.exited(); err != nil {
			return err
		}
		cctx, ccancel := context.WithTimeout(wctx, 10*time.Second)
		defer ccancel()
		d, answer = bootstrap.Store{KV: cli}.Load(cctx, password)
		if answer == nil || errors.Is(answer, bootstrap.ErrNotFound) || errors.Is(answer, bootstrap.ErrOtherToken) || errors.Is(answer, bootstrap.ErrWrongToken) {
			return nil
		}
		return answer
	})
	if err != nil {
		return nil, fmt.Errorf("reading this member's copy of the datastore (temporary etcd on 127.0.0.1:%d, log %s): %w", etcdcluster.TempClientPort, etcd.log, err)
	}
	return d, answer
}

// recordSync gives the cluster's record what this server changes.
type recordSync struct {
	store bootstrap.Store
	lay   datadir.Layout
	out   io.Writer
	mu    sync.Mutex
	told  map[string]bool // what was said once, by kind and path
}

// run syncs once this server's etcd answers (making the record, the
// first time), and again every period: a change this server made while
// the datastore was unreachable goes in as soon as it is back.
func (r *recordSync) run(ctx context.Context, period time.Duration) {
	wait := 10 * time.Second // until the first answer: etcd is starting
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := r.once(ctx); err == nil || errors.Is(err, bootstrap.ErrOtherToken) {
			wait = period
		}
	}
}

// once gives the record this server's newer files. It says what it
// wrote, and once each which files another server changed since this one
// started (taken at its next start) and a record this server's token
// cannot open.
func (r *recordSync) once(ctx context.Context) error {
	password, err := serverPassword(&config.ServerConfig{}, r.lay)
	if err != nil {
		return err
	}
	// One pass at a time: the state file is read, then written.
	r.mu.Lock()
	defer r.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, err := r.store.Sync(cctx, password, r.lay.Root)
	if r.told == nil {
		r.told = map[string]bool{}
	}
	// once is what of paths was not said yet under kind.
	once := func(kind string, paths []string) []string {
		var out []string
		for _, p := range paths {
			if !r.told[kind+p] {
				r.told[kind+p] = true
				out = append(out, p)
			}
		}
		return out
	}
	if errors.Is(err, bootstrap.ErrOtherToken) && len(once("token", []string{""})) > 0 {
		fmt.Fprintf(r.out, "bootstrap data: %v\n", err)
	}
	if err != nil {
		return err
	}
	if len(p.Give) > 0 {
		fmt.Fprintf(r.out, "bootstrap data: the datastore's record now has this server's %s\n", strings.Join(p.Give, ", "))
	}
	if news := once("take", p.Take); len(news) > 0 {
		fmt.Fprintf(r.out, "bootstrap data: %s changed on another server; this server takes them when k3s restarts here\n", strings.Join(news, ", "))
	}
	if news := once("conflict", p.Conflicts); len(news) > 0 {
		fmt.Fprintf(r.out, "bootstrap data: %s changed both here and on another server since they last agreed; left as they are on both (k3s refuses to start here until one side's copy is removed)\n", strings.Join(news, ", "))
	}
	return nil
}
