package k3s

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/etcdcluster"
)

// snapshotFlags are `k3s etcd-snapshot`'s own flags and the server flags
// they stand for; the others (data-dir, node-name, config) are the
// server's, read with its config file as k3s does.
var snapshotFlags = map[string]string{
	"dir": "etcd-snapshot-dir", "etcd-snapshot-dir": "etcd-snapshot-dir",
	"snapshot-compress": "etcd-snapshot-compress", "etcd-snapshot-compress": "etcd-snapshot-compress",
	"snapshot-retention": "etcd-snapshot-retention", "etcd-snapshot-retention": "etcd-snapshot-retention",
	"data-dir": "data-dir", "d": "data-dir", "node-name": "node-name", "config": "config", "c": "config",
	"debug": "debug",
}

var snapshotBoolFlags = map[string]bool{"snapshot-compress": true, "etcd-snapshot-compress": true, "debug": true}

// etcdSnapshot is `k3s etcd-snapshot [save|ls|delete|prune]`: snapshots of
// this server's embedded etcd in etcd-snapshot-dir (server/db/snapshots),
// taken through the local member with the server's etcd client
// certificate. k3s's CLI asks the running server to do it over its API;
// here the command does it itself, so it needs the server's data dir.
func (a *app) etcdSnapshot(ctx context.Context, args []string) error {
	sub := "save"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	name, output := "", "table"
	var pass []string
	names, err := eachFlag(args, slices.Collect(maps.Keys(snapshotBoolFlags)), func(k, v, arg string) error {
		if v == "" && snapshotBoolFlags[k] {
			v = "true"
		}
		switch {
		case k == "name":
			name = v
		case k == "o" || k == "output":
			output = v
		case strings.HasPrefix(k, "s3") || strings.HasPrefix(k, "etcd-s3"):
			return notBuilt("etcd snapshots to S3 (--" + k + ")")
		case k == "etcd-server" || k == "s" || k == "etcd-token" || k == "t":
			return fmt.Errorf("%w: --%s: this runtime's etcd-snapshot works on the local server's etcd (run it on the server)", config.ErrUsage, k)
		case snapshotFlags[k] != "":
			pass = append(pass, "--"+snapshotFlags[k]+"="+v)
		default:
			return fmt.Errorf("%w: k3s etcd-snapshot: unknown flag --%s", config.ErrUsage, k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if name == "" {
		name = "on-demand"
	}
	l, err := config.Load(config.Options{Command: "server", Args: pass, LookupEnv: a.lookupEnv})
	if err != nil {
		return err
	}
	s, err := l.ServerConfig()
	if err != nil {
		return err
	}
	dir := snapshotDir(s)
	switch sub {
	case "save":
		if len(names) > 0 {
			return fmt.Errorf("%w: k3s etcd-snapshot save takes no arguments (the name is --name)", config.ErrUsage)
		}
		if !etcdcluster.HasData(s.DataDir) {
			return fmt.Errorf("k3s etcd-snapshot: %s has no embedded etcd (a server started with --cluster-init or --server)", s.DataDir)
		}
		node, _, err := nodeIdentity(s.NodeName, s.NodeIPs, s.WithNodeID)
		if err != nil {
			return err
		}
		start := time.Now()
		p, err := etcdcluster.Save(ctx, s.DataDir, []string{localEtcd}, dir, name, node, s.EtcdSnapshotCompress, start)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "Snapshot %s saved (%.1fs).\n", filepath.Base(p), time.Since(start).Seconds())
		return nil
	case "ls", "list", "l":
		list, err := etcdcluster.List(dir)
		if err != nil {
			return err
		}
		switch output {
		case "table":
			w := tabwriter.NewWriter(a.stdout, 0, 0, 1, ' ', 0)
			fmt.Fprintf(w, "Name\tLocation\tSize\tCreated\n")
			for _, sn := range list {
				fmt.Fprintf(w, "%s\tfile://%s\t%d\t%s\n", sn.Name, sn.Path, sn.Size, sn.Created.Format(time.RFC3339))
			}
			return w.Flush()
		case "json":
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(list)
		default:
			return fmt.Errorf("%w: --output %q: want table or json", config.ErrUsage, output)
		}
	case "delete":
		if len(names) == 0 {
			return fmt.Errorf("%w: no snapshots given for removal", config.ErrUsage)
		}
		removed, err := etcdcluster.Delete(dir, names)
		for _, n := range removed {
			fmt.Fprintf(a.stderr, "Snapshot %s deleted.\n", n)
		}
		return err
	case "prune":
		removed, err := etcdcluster.Prune(dir, name, s.EtcdSnapshotRetention)
		for _, n := range removed {
			fmt.Fprintf(a.stderr, "Snapshot %s deleted.\n", n)
		}
		return err
	}
	return fmt.Errorf("%w: k3s etcd-snapshot %s: want save, ls, delete or prune", config.ErrUsage, sub)
}

// snapshotDir is etcd-snapshot-dir, else server/db/snapshots.
func snapshotDir(s *config.ServerConfig) string {
	if s.EtcdSnapshotDir != "" {
		return s.EtcdSnapshotDir
	}
	return etcdcluster.SnapshotDir(s.DataDir)
}

// scheduleSnapshots saves a snapshot named etcd-snapshot-name at each
// time of etcd-snapshot-schedule-cron and keeps the
// etcd-snapshot-retention newest, until ctx ends.
func (a *app) scheduleSnapshots(ctx context.Context, s *config.ServerConfig, node string) {
	sched, err := cron.ParseStandard(s.EtcdSnapshotCron)
	if err != nil {
		fmt.Fprintf(a.stderr, "etcd snapshots: %v\n", err)
		return
	}
	dir := snapshotDir(s)
	for {
		next := sched.Next(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		start := time.Now()
		p, err := etcdcluster.Save(ctx, s.DataDir, []string{localEtcd}, dir, s.EtcdSnapshotName, node, s.EtcdSnapshotCompress, start)
		if err != nil {
			fmt.Fprintf(a.stderr, "etcd snapshot: %v\n", err)
			continue
		}
		fmt.Fprintf(a.stderr, "etcd snapshot %s saved (%.1fs)\n", p, time.Since(start).Seconds())
		removed, err := etcdcluster.Prune(dir, s.EtcdSnapshotName, s.EtcdSnapshotRetention)
		if err != nil {
			fmt.Fprintf(a.stderr, "etcd snapshot retention: %v\n", err)
		}
		if len(removed) > 0 {
			fmt.Fprintf(a.stderr, "etcd snapshot retention=%s: deleted %s\n", strconv.Itoa(s.EtcdSnapshotRetention), strings.Join(removed, ", "))
		}
	}
}
