// Package manifests is the file side of k3s's deploy controller: it walks
// server/manifests, finds new and changed .yaml/.yml/.json files and hands
// their documents to an Applier. As in k3s: every file is applied at start,
// then the directory is walked every 15 seconds; `x.yaml.skip` disables
// x.yaml; removing a file never deletes the objects it created; a file
// that a `--disable` name matches (see Disabled) has its objects deleted,
// then is removed itself, on every pass.
package manifests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Interval is how often k3s walks the manifests directory.
const Interval = 15 * time.Second

// Applier applies the documents of one file, and deletes the objects of
// a disabled one.
type Applier interface {
	Apply(ctx context.Context, file string, docs [][]byte) error
	// Delete deletes the objects the documents name, those this
	// controller applied; objects already gone are not an error.
	Delete(ctx context.Context, file string, docs [][]byte) error
}

// fileState is what the controller remembers of an applied file.
type fileState struct {
	modTime time.Time
	size    int64
	hash    [32]byte
}

// Controller watches one directory.
type Controller struct {
	Dir     string
	Applier Applier
	Logger  *slog.Logger
	// Tick returns a channel that fires after d; nil means time.After.
	Tick func(d time.Duration) <-chan time.Time
	// Disable are k3s's `--disable` names: a file they match (Disabled)
	// is not applied; its objects are deleted, then the file.
	Disable []string

	applied map[string]fileState
}

// Result of one pass.
type Result struct {
	Applied []string         // files applied this pass
	Skipped []string         // files disabled by a .skip marker
	Failed  map[string]error // files whose apply failed; retried next pass
	Removed []string         // files gone since last pass (objects kept)
	Deleted []string         // disabled files whose objects were deleted, then the file
}

// Disabled reports whether the file at rel (relative to the manifests
// directory) is disabled by names, as k3s matches its --disable list: a
// parent directory of the file is named (metrics-server disables
// metrics-server/*, whatever the files are), or the file is a manifest
// whose name without its extension is named (coredns disables
// coredns.yaml, also in a subdirectory).
func Disabled(rel string, names []string) bool {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	for i := 1; i < len(parts); i++ {
		if slices.Contains(names, strings.Join(parts[:i], "/")) {
			return true
		}
	}
	base := parts[len(parts)-1]
	return isManifest(base) && slices.Contains(names, strings.TrimSuffix(base, path.Ext(base)))
}

func isManifest(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") || strings.HasSuffix(n, ".json")
}

// Sync walks the directory once. With force every manifest is applied
// whatever its state (the pass at start).
func (c *Controller) Sync(ctx context.Context, force bool) (Result, error) {
	if c.applied == nil {
		c.applied = map[string]fileState{}
	}
	res := Result{Failed: map[string]error{}}
	var files, disabled []string
	skip := map[string]bool{}
	err := filepath.WalkDir(c.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == c.Dir {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		if rel, err := filepath.Rel(c.Dir, path); err == nil && len(c.Disable) > 0 && Disabled(rel, c.Disable) {
			disabled = append(disabled, path)
			return nil
		}
		if strings.HasSuffix(path, ".skip") {
			skip[strings.TrimSuffix(path, ".skip")] = true
			return nil
		}
		if isManifest(d.Name()) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("manifests: walking %s: %w", c.Dir, err)
	}
	sort.Strings(files)
	for _, f := range disabled {
		delete(c.applied, f)
		if err := c.deleteDisabled(ctx, f); err != nil {
			res.Failed[f] = err
			continue
		}
		res.Deleted = append(res.Deleted, f)
	}
	if len(res.Deleted) > 0 {
		for _, name := range c.Disable {
			if filepath.IsLocal(name) {
				// Only an emptied directory goes (metrics-server/).
				_ = os.Remove(filepath.Join(c.Dir, name))
			}
		}
	}
	seen := map[string]bool{}
	for _, f := range files {
		seen[f] = true
		if skip[f] {
			res.Skipped = append(res.Skipped, f)
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			res.Failed[f] = err
			continue
		}
		prev, known := c.applied[f]
		if !force && known && prev.modTime.Equal(fi.ModTime()) && prev.size == fi.Size() {
			continue // unchanged by mtime: not even read
		}
		data, err := os.ReadFile(f)
		if err != nil {
			res.Failed[f] = err
			continue
		}
		sum := sha256.Sum256(data)
		st := fileState{modTime: fi.ModTime(), size: fi.Size(), hash: sum}
		if !force && known && prev.hash == sum {
			c.applied[f] = st // touched, same content
			continue
		}
		docs, err := SplitDocuments(data)
		if err != nil {
			res.Failed[f] = fmt.Errorf("%s: %w", f, err)
			continue
		}
		if err := c.Applier.Apply(ctx, f, docs); err != nil {
			res.Failed[f] = fmt.Errorf("applying %s: %w", f, err)
			continue
		}
		c.applied[f] = st
		res.Applied = append(res.Applied, f)
	}
	for f := range c.applied {
		if !seen[f] || skip[f] {
			delete(c.applied, f)
			if !seen[f] {
				res.Removed = append(res.Removed, f)
			}
		}
	}
	sort.Strings(res.Removed)
	return res, nil
}

// deleteDisabled deletes the objects a disabled manifest names, then the
// file. A file that is not a manifest (a .skip marker in a disabled
// directory) is only removed; so is one that does not parse, as k3s
// does, after saying so: its objects cannot be known.
func (c *Controller) deleteDisabled(ctx context.Context, f string) error {
	var parseErr error
	if isManifest(filepath.Base(f)) {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		docs, err := SplitDocuments(data)
		if err != nil {
			parseErr = fmt.Errorf("disabled %s: %w; removed without deleting its objects", f, err)
		} else if err := c.Applier.Delete(ctx, f, docs); err != nil {
			return fmt.Errorf("deleting the objects of disabled %s: %w", f, err)
		}
	}
	if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return parseErr
}

// Run applies everything, then re-syncs every Interval until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	tick := c.Tick
	if tick == nil {
		tick = time.After
	}
	force := true
	for {
		res, err := c.Sync(ctx, force)
		if err != nil {
			log.Error("manifests", "err", err)
		} else {
			force = false
		}
		for _, f := range res.Applied {
			log.Info("applied manifest", "file", f)
		}
		for f, err := range res.Failed {
			log.Error("manifest failed", "file", f, "err", err)
		}
		for _, f := range res.Removed {
			log.Info("manifest removed; its objects are kept", "file", f)
		}
		for _, f := range res.Deleted {
			log.Info("disabled manifest: deleted its objects and the file", "file", f)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick(Interval):
		}
	}
}

// SplitDocuments splits multi-document YAML (or one JSON document) into
// documents, dropping empty ones, each re-encoded as YAML. Errors name
// the document's line.
func SplitDocuments(data []byte) ([][]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out [][]byte
	for i := 1; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			continue
		}
		if n.Content[0].Kind != yaml.MappingNode {
			return nil, fmt.Errorf("document %d (line %d): a manifest must be a mapping (an object with apiVersion and kind)", i, n.Content[0].Line)
		}
		b, err := yaml.Marshal(&n)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, b)
	}
}
