package etcdcluster

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

// SnapshotDir is where snapshots go unless etcd-snapshot-dir says
// otherwise: server/db/snapshots.
func SnapshotDir(dataDir string) string { return filepath.Join(dataDir, "server", "db", "snapshots") }

// ZipSuffix is what a compressed snapshot's name ends with: a zip archive
// holding the snapshot under its uncompressed name.
const ZipSuffix = ".zip"

// partSuffix marks a snapshot being written; a power cut leaves at most a
// .part file, which List does not show and the next Save removes.
const partSuffix = ".part"

// SnapshotName is k3s's file name: <name>-<node>-<unix seconds>.
func SnapshotName(name, node string, at time.Time) string {
	return fmt.Sprintf("%s-%s-%d", name, node, at.Unix())
}

// Save streams a snapshot of the member at endpoints (the local one) into
// dir as SnapshotName(name, node, now), zipped when compress is set, and
// returns its path. The file appears complete or not at all: it is
// written under a .part name, synced, renamed and the directory synced.
func Save(ctx context.Context, dataDir string, endpoints []string, dir, name, node string, compress bool, now time.Time) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tc, err := ClientTLS(dataDir)
	if err != nil {
		return "", err
	}
	base := SnapshotName(name, node, now)
	final := filepath.Join(dir, base)
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{Endpoints: endpoints, TLS: tc, DialTimeout: 10 * time.Second}, final); err != nil {
		return "", fmt.Errorf("etcd snapshot: %w", err)
	}
	if !compress {
		return final, atomicfile.SyncDir(dir)
	}
	zipped, err := zipSnapshot(final)
	if err != nil {
		return "", err
	}
	if err := os.Remove(final); err != nil {
		return "", err
	}
	return zipped, atomicfile.SyncDir(dir)
}

func zipSnapshot(path string) (string, error) {
	src, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return "", err
	}
	out := path + ZipSuffix
	part := out + partSuffix
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	defer os.Remove(part)
	zw := zip.NewWriter(f)
	hdr, err := zip.FileInfoHeader(st)
	if err != nil {
		f.Close()
		return "", err
	}
	hdr.Method = zip.Deflate
	w, err := zw.CreateHeader(hdr)
	if err == nil {
		_, err = io.Copy(w, src)
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("compressing %s: %w", path, err)
	}
	return out, os.Rename(part, out)
}

// Snapshot is one file of the snapshot directory.
type Snapshot struct {
	Name    string
	Path    string
	Size    int64
	Created time.Time // from the name's timestamp, else the file's time
}

// List is the snapshots in dir, oldest first; files being written are
// left out.
func List(dir string) ([]Snapshot, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), partSuffix) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		created := info.ModTime()
		if ts, ok := nameTime(e.Name()); ok {
			created = ts
		}
		out = append(out, Snapshot{Name: e.Name(), Path: filepath.Join(dir, e.Name()), Size: info.Size(), Created: created})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// nameTime reads the unix timestamp that ends a snapshot's name.
func nameTime(name string) (time.Time, bool) {
	name = strings.TrimSuffix(name, ZipSuffix)
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return time.Time{}, false
	}
	sec, err := strconv.ParseInt(name[i+1:], 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, false
	}
	return time.Unix(sec, 0), true
}

// Delete removes the named snapshots from dir; a name that is not there
// is an error after the others are removed.
func Delete(dir string, names []string) ([]string, error) {
	var removed []string
	var errs []error
	for _, n := range names {
		if n != filepath.Base(n) || n == "." || n == ".." {
			errs = append(errs, fmt.Errorf("%q: a snapshot name, not a path", n))
			continue
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, n)
	}
	if len(removed) > 0 {
		if err := atomicfile.SyncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// Prune keeps the retention newest snapshots whose names start with
// prefix (as k3s: the snapshot name, whichever node wrote it; the
// directory is this node's) and deletes the older ones. Retention below 1
// keeps everything.
func Prune(dir, prefix string, retention int) ([]string, error) {
	all, err := List(dir)
	if err != nil {
		return nil, err
	}
	var match []string
	for _, s := range all {
		if strings.HasPrefix(s.Name, prefix) {
			match = append(match, s.Name)
		}
	}
	if retention < 1 || len(match) <= retention {
		return nil, nil
	}
	return Delete(dir, match[:len(match)-retention])
}

// Unzip extracts a compressed snapshot next to itself (name without
// .zip, .part while written) and returns the extracted file's path; a
// path that is not a .zip is returned as it is.
func Unzip(path, into string) (string, error) {
	if !strings.HasSuffix(path, ZipSuffix) {
		return path, nil
	}
	zr, err := zip.OpenReader(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	defer zr.Close()
	if len(zr.File) != 1 {
		return "", fmt.Errorf("%s: want one snapshot in the archive, found %d files", path, len(zr.File))
	}
	r, err := zr.File[0].Open()
	if err != nil {
		return "", err
	}
	defer r.Close()
	out := filepath.Join(into, strings.TrimSuffix(filepath.Base(path), ZipSuffix))
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return out, f.Close()
}
