package etcdcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	etcdsnapshot "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

// Restore replaces this member's data with the snapshot at path (a .zip
// is extracted first), as the only member of a new cluster, and returns
// where the old data went (server/db/etcd-old-<unix seconds>). The
// snapshot is restored beside the data dir first; only then is the old
// data moved aside and the restored data put in its place, so a failed
// restore leaves the member as it was.
func (o Options) Restore(name, path string, now time.Time) (string, error) {
	dir := Dir(o.DataDir)
	db := filepath.Dir(dir)
	tmp := filepath.Join(db, "etcd-restore")
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.MkdirAll(db, 0o700); err != nil {
		return "", err
	}
	snap, err := Unzip(path, db)
	if err != nil {
		return "", err
	}
	if snap != path {
		defer os.Remove(snap)
	}
	err = etcdsnapshot.NewV3(zap.NewNop()).Restore(etcdsnapshot.RestoreConfig{
		SnapshotPath:   snap,
		Name:           name,
		OutputDataDir:  tmp,
		PeerURLs:       []string{o.PeerURL()},
		InitialCluster: name + "=" + o.PeerURL(),
		// Kubernetes' watch caches must not see revisions go back.
		RevisionBump:  1_000_000,
		MarkCompacted: true,
	})
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("restoring %s: %w", path, err)
	}
	// The member's name and config move with it.
	for _, f := range []string{"name", "config"} {
		if data, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			if err := atomicfile.Write(filepath.Join(tmp, f), data, 0o600); err != nil {
				return "", err
			}
		}
	}
	old := ""
	if _, err := os.Stat(dir); err == nil {
		old = filepath.Join(db, "etcd-old-"+strconv.FormatInt(now.Unix(), 10))
		if err := os.Rename(dir, old); err != nil {
			return "", err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return old, err
	}
	return old, atomicfile.SyncDir(db)
}
