// Package imageimport is the `k3s image-import` component: it imports the
// image archives in agent/images into containerd's k8s.io namespace at
// start and again whenever a file there is added or changed, as k3s does
// for air-gapped nodes. Every imported image is labelled for the CRI
// (managed, pinned: the kubelet's image garbage collection never removes
// it) and unpacked into the snapshotter, so a pod can start from it at once.
package imageimport

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/klauspost/compress/zstd"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

// CRI labels (containerd's internal/cri/labels): the CRI lists managed
// images, and the kubelet never garbage-collects pinned ones.
var criLabels = map[string]string{
	"io.cri-containerd.image":  "managed",
	"io.cri-containerd.pinned": "pinned",
}

// Archive reports whether name is an image archive k3s imports.
func Archive(name string) bool {
	for _, ext := range []string{".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// Options of one importer.
type Options struct {
	Address     string // containerd socket
	Namespace   string // k8s.io
	Dir         string // agent/images
	Snapshotter string // overlayfs
	ReadyFile   string // written once the first pass is done
	// StateFile remembers what was imported (file, size, mtime, images),
	// so that a restart skips archives whose images are still there
	// rather than reading them again; "" keeps no state.
	StateFile string
	Interval  time.Duration // between scans for new or changed files
	Log       *slog.Logger
}

// Main runs the importer with flags; it returns when SIGTERM arrives.
func Main(args []string) int {
	o, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, o); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "image-import:", err)
		return 1
	}
	return 0
}

// RunInProcess is the importer as the k3s process runs it (no process of
// its own): args as Main takes them, log lines to log, until ctx ends.
func RunInProcess(ctx context.Context, args []string, log io.Writer) error {
	o, err := parseFlags(args, log)
	if err != nil {
		return err
	}
	o.Log = slog.New(slog.NewTextHandler(log, nil))
	if err := Run(ctx, o); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func parseFlags(args []string, output io.Writer) (Options, error) {
	fs := flag.NewFlagSet("image-import", flag.ContinueOnError)
	fs.SetOutput(output)
	o := Options{Log: slog.New(slog.NewTextHandler(output, nil))}
	fs.StringVar(&o.Address, "address", "/run/k3s/containerd/containerd.sock", "containerd socket")
	fs.StringVar(&o.Namespace, "namespace", "k8s.io", "containerd namespace")
	fs.StringVar(&o.Dir, "dir", "/var/lib/rancher/k3s/agent/images", "directory of image archives")
	fs.StringVar(&o.Snapshotter, "snapshotter", "overlayfs", "snapshotter to unpack into")
	fs.StringVar(&o.ReadyFile, "ready-file", "", "file written once the first import pass is done")
	fs.StringVar(&o.StateFile, "state-file", "", "file remembering what was imported, to skip it at the next start")
	fs.DurationVar(&o.Interval, "interval", 10*time.Second, "how often to look for new or changed archives")
	err := fs.Parse(args)
	return o, err
}

type stamp struct {
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`
	Refs  []string  `json:"refs"`
}

// same reports whether st describes the same file content as s (by size
// and modification time, as k3s decides whether to re-import).
func (s stamp) same(st os.FileInfo) bool {
	return s.Size == st.Size() && s.MTime.Equal(st.ModTime())
}

func loadState(path string) map[string]stamp {
	m := map[string]stamp{}
	if path == "" {
		return m
	}
	if data, err := os.ReadFile(path); err == nil {
		if json.Unmarshal(data, &m) != nil {
			m = map[string]stamp{}
		}
	}
	return m
}

func saveState(path string, m map[string]stamp) error {
	if path == "" {
		return nil
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// present reports whether every image of a remembered archive is still in
// containerd and unpacked.
func present(ctx context.Context, client *containerd.Client, s stamp, snapshotter string) bool {
	if len(s.Refs) == 0 {
		return false
	}
	for _, ref := range s.Refs {
		img, err := client.GetImage(ctx, ref)
		if err != nil {
			return false
		}
		if ok, err := img.IsUnpacked(ctx, snapshotter); err != nil || !ok {
			return false
		}
	}
	return true
}

// Run imports every archive, marks ready, then imports new or changed
// archives every Interval until ctx ends. A file that fails is logged and
// retried at the next scan.
func Run(ctx context.Context, o Options) error {
	if o.ReadyFile != "" {
		os.Remove(o.ReadyFile)
	}
	client, err := containerd.New(o.Address, containerd.WithDefaultNamespace(o.Namespace), containerd.WithTimeout(30*time.Second))
	if err != nil {
		return fmt.Errorf("containerd at %s: %w", o.Address, err)
	}
	defer client.Close()
	ctx = namespaces.WithNamespace(ctx, o.Namespace)
	seen := map[string]stamp{}
	for p, s := range loadState(o.StateFile) {
		if st, err := os.Stat(p); err == nil && s.same(st) && present(ctx, client, s, o.Snapshotter) {
			seen[p] = s
			o.Log.Info("already imported", "file", p, "images", strings.Join(s.Refs, ","))
		}
	}
	first := true
	for {
		imported := false
		for _, p := range scan(o.Dir, seen) {
			st, err := os.Stat(p)
			if err != nil {
				continue
			}
			start := time.Now()
			refs, err := importFile(ctx, client, p, o.Snapshotter)
			if err != nil {
				o.Log.Error("import failed", "file", p, "err", err)
				continue
			}
			seen[p] = stamp{st.Size(), st.ModTime(), refs}
			if err := saveState(o.StateFile, seen); err != nil {
				o.Log.Warn("saving import state", "err", err)
			}
			o.Log.Info("imported", "file", p, "images", strings.Join(refs, ","), "took", time.Since(start).Round(time.Millisecond))
			imported = true
		}
		if imported {
			// Decompressing archives grew the heap; hand what is free
			// back now rather than at the scavenger's pace (this runs
			// in the k3s process, whose idle memory small nodes count).
			debug.FreeOSMemory()
		}
		if first && o.ReadyFile != "" {
			if err := os.WriteFile(o.ReadyFile, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
				return err
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.Interval):
		}
	}
}

// scan lists the archives in dir (following symlinks) that are new or
// changed since seen, sorted.
func scan(dir string, seen map[string]stamp) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if !Archive(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if s, ok := seen[p]; ok && s.same(st) {
			continue
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func importFile(ctx context.Context, client *containerd.Client, path, snapshotter string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := decompress(path, bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	imgs, err := client.Import(ctx, r, containerd.WithImageLabels(criLabels))
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, img := range imgs {
		i := containerd.NewImage(client, img)
		if ok, err := i.IsUnpacked(ctx, snapshotter); err != nil || !ok {
			if err := i.Unpack(ctx, snapshotter); err != nil {
				return refs, fmt.Errorf("unpacking %s: %w", img.Name, err)
			}
		}
		refs = append(refs, img.Name)
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%s: no named image in the archive", path)
	}
	return refs, nil
}

func decompress(name string, r io.Reader) (io.Reader, error) {
	switch {
	case strings.HasSuffix(name, ".gz"), strings.HasSuffix(name, ".tgz"):
		return gzip.NewReader(r)
	case strings.HasSuffix(name, ".zst"), strings.HasSuffix(name, ".tzst"):
		d, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return r, nil
}
