package manifests

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type fakeApplier struct {
	calls   map[string][][]byte
	order   []string
	fail    map[string]bool
	deleted map[string][][]byte
}

func (f *fakeApplier) Delete(_ context.Context, file string, docs [][]byte) error {
	if f.fail[filepath.Base(file)] {
		return errors.New("delete refused")
	}
	f.deleted[file] = docs
	return nil
}

func (f *fakeApplier) Apply(_ context.Context, file string, docs [][]byte) error {
	if f.fail[filepath.Base(file)] {
		return errors.New("boom")
	}
	f.calls[file] = docs
	f.order = append(f.order, filepath.Base(file))
	return nil
}

func newFake() *fakeApplier {
	return &fakeApplier{calls: map[string][][]byte{}, fail: map[string]bool{}, deleted: map[string][][]byte{}}
}

func write(t *testing.T, dir, name, data string, mtime time.Time) string {
	t.Helper()
	p := filepath.Join(dir, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return p
}

const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n"

func TestSyncSemantics(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write(t, dir, "a.yaml", "apiVersion: v1\nkind: ConfigMap\n---\n---\napiVersion: v1\nkind: Secret\n", t0)
	write(t, dir, "b.json", `{"apiVersion":"v1","kind":"Namespace"}`, t0)
	write(t, dir, "sub/c.yml", "apiVersion: v1\nkind: Service\n", t0)
	write(t, dir, "d.yaml", "apiVersion: v1\nkind: Pod\n", t0)
	write(t, dir, "d.yaml.skip", "", t0)
	write(t, dir, "notes.txt", "ignored", t0)

	f := newFake()
	c := &Controller{Dir: dir, Applier: f}
	res, err := c.Sync(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a.yaml", "b.json", "c.yml"}; !slices.Equal(f.order, want) {
		t.Errorf("applied %v, want %v", f.order, want)
	}
	if len(res.Skipped) != 1 || filepath.Base(res.Skipped[0]) != "d.yaml" {
		t.Errorf("skipped %v", res.Skipped)
	}
	if docs := f.calls[filepath.Join(dir, "a.yaml")]; len(docs) != 2 || !strings.Contains(string(docs[1]), "Secret") {
		t.Errorf("a.yaml docs %q", docs)
	}

	// Nothing changed: nothing applied.
	f.order = nil
	if _, err := c.Sync(context.Background(), false); err != nil || len(f.order) != 0 {
		t.Errorf("unchanged pass applied %v (%v)", f.order, err)
	}
	// Touched with the same content: not applied (hash), state updated.
	write(t, dir, "b.json", `{"apiVersion":"v1","kind":"Namespace"}`, t0.Add(time.Minute))
	if _, err := c.Sync(context.Background(), false); err != nil || len(f.order) != 0 {
		t.Errorf("touch applied %v", f.order)
	}
	// Changed content and mtime: applied.
	write(t, dir, "b.json", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}`, t0.Add(2*time.Minute))
	if _, err := c.Sync(context.Background(), false); err != nil || !slices.Equal(f.order, []string{"b.json"}) {
		t.Errorf("change applied %v", f.order)
	}
	// Removing the skip marker enables d.yaml.
	f.order = nil
	os.Remove(filepath.Join(dir, "d.yaml.skip"))
	if _, err := c.Sync(context.Background(), false); !slices.Equal(f.order, []string{"d.yaml"}) {
		t.Errorf("unskipped applied %v (%v)", f.order, err)
	}
	// Removing a file: reported, nothing deleted (the Applier has no delete).
	os.Remove(filepath.Join(dir, "a.yaml"))
	res, _ = c.Sync(context.Background(), false)
	if len(res.Removed) != 1 || filepath.Base(res.Removed[0]) != "a.yaml" {
		t.Errorf("removed %v", res.Removed)
	}
	// Force re-applies everything.
	f.order = nil
	c.Sync(context.Background(), true)
	if len(f.order) != 3 {
		t.Errorf("forced pass applied %v", f.order)
	}
}

func TestDisable(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write(t, dir, "coredns.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: kube-dns\n", t0)
	write(t, dir, "metrics-server/a.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: m\n", t0)
	write(t, dir, "metrics-server/b.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: m\n", t0)
	write(t, dir, "metrics-server/b.yaml.skip", "", t0)
	write(t, dir, "local-storage.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: l\n", t0)
	write(t, dir, "runtimes.yaml", "kind: [\n", t0)

	f := newFake()
	c := &Controller{Dir: dir, Applier: f}
	if _, err := c.Sync(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	f.order = nil
	f.fail["coredns.yaml"] = true
	c.Disable = []string{"coredns", "metrics-server", "runtimes", "traefik"}
	res, err := c.Sync(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	rel := func(ps []string) []string {
		var out []string
		for _, p := range ps {
			r, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(r))
		}
		return out
	}
	// The controller refused coredns's delete: kept, failed, retried.
	if _, ok := res.Failed[filepath.Join(dir, "coredns.yaml")]; !ok {
		t.Errorf("failed %v", res.Failed)
	}
	if _, err := os.Stat(filepath.Join(dir, "coredns.yaml")); err != nil {
		t.Errorf("coredns.yaml removed although its objects were not deleted: %v", err)
	}
	// An unparsable disabled file is removed (its objects cannot be
	// known) and reported.
	if err := res.Failed[filepath.Join(dir, "runtimes.yaml")]; err == nil || !strings.Contains(err.Error(), "removed without deleting") {
		t.Errorf("runtimes.yaml: %v", err)
	}
	if got, want := rel(res.Deleted), []string{"metrics-server/a.yaml", "metrics-server/b.yaml", "metrics-server/b.yaml.skip"}; !slices.Equal(got, want) {
		t.Errorf("deleted %v, want %v", got, want)
	}
	if len(f.order) != 0 || len(res.Removed) != 0 {
		t.Errorf("applied %v removed %v in the disabling pass", f.order, res.Removed)
	}
	// The skipped b.yaml's objects are deleted too: it may have been
	// applied before its .skip marker appeared.
	if len(f.deleted) != 2 || !strings.Contains(string(f.deleted[filepath.Join(dir, "metrics-server/a.yaml")][0]), "ServiceAccount") {
		t.Errorf("delete calls %q", f.deleted)
	}
	if _, err := os.Stat(filepath.Join(dir, "metrics-server")); !os.IsNotExist(err) {
		t.Errorf("emptied metrics-server/ kept: %v", err)
	}

	f.fail["coredns.yaml"] = false
	res, err = c.Sync(context.Background(), false)
	if err != nil || !slices.Equal(rel(res.Deleted), []string{"coredns.yaml"}) || len(res.Failed) != 0 {
		t.Errorf("retry: deleted %v failed %v (%v)", rel(res.Deleted), res.Failed, err)
	}
	if docs := f.deleted[filepath.Join(dir, "coredns.yaml")]; len(docs) != 2 {
		t.Errorf("coredns delete docs %q", docs)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != "local-storage.yaml" {
		t.Errorf("left %v", ents)
	}
	// A disabled name written again later (by hand) goes again.
	write(t, dir, "coredns.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns\n", t0)
	res, _ = c.Sync(context.Background(), false)
	if !slices.Equal(rel(res.Deleted), []string{"coredns.yaml"}) || len(f.order) != 0 {
		t.Errorf("re-added disabled file: deleted %v applied %v", res.Deleted, f.order)
	}
}

func TestDisabledMatch(t *testing.T) {
	names := []string{"coredns", "metrics-server", "custom.yaml"}
	for rel, want := range map[string]bool{
		"coredns.yaml":                         true,
		"coredns.yml":                          true,
		"sub/coredns.json":                     true,
		"metrics-server/auth-reader.yaml":      true,
		"metrics-server/deep/x.yaml":           true,
		"metrics-server/b.yaml.skip":           true,
		"custom.yaml":                          false, // names have no extension
		"coredns.yaml.skip":                    false,
		"coredns.txt":                          false,
		"local-storage.yaml":                   false,
		"coredns-custom.yaml":                  false,
		"other/metrics-server-service.yaml":    false,
		"metrics-server.yaml.d/unrelated.yaml": false,
	} {
		if got := Disabled(rel, names); got != want {
			t.Errorf("Disabled(%q) = %v, want %v", rel, got, want)
		}
	}
}

func TestFailureRetried(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "bad.yaml", "apiVersion: v1\nkind: X\n", time.Now())
	write(t, dir, "broken.yaml", "kind: [\n", time.Now())
	f := newFake()
	f.fail["bad.yaml"] = true
	c := &Controller{Dir: dir, Applier: f}
	res, _ := c.Sync(context.Background(), true)
	if len(res.Failed) != 2 || !strings.Contains(res.Failed[filepath.Join(dir, "broken.yaml")].Error(), "broken.yaml") {
		t.Fatalf("failed %v", res.Failed)
	}
	f.fail["bad.yaml"] = false
	res, _ = c.Sync(context.Background(), false)
	if !slices.Equal(f.order, []string{"bad.yaml"}) {
		t.Errorf("retry applied %v", f.order)
	}
}

func TestRunForcesAtStartThenTicks(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", "apiVersion: v1\nkind: ConfigMap\n", time.Now())
	f := newFake()
	ticks := make(chan time.Time)
	var asked []time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{Dir: dir, Applier: f, Tick: func(d time.Duration) <-chan time.Time { asked = append(asked, d); return ticks }}
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	ticks <- time.Now() // first pass done; second pass runs
	write(t, dir, "b.yaml", "apiVersion: v1\nkind: Secret\n", time.Now())
	ticks <- time.Now() // second pass done (saw b maybe); third runs
	ticks <- time.Now()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	if !slices.Equal(f.order, []string{"a.yaml", "b.yaml"}) {
		t.Errorf("applied %v", f.order)
	}
	if asked[0] != 15*time.Second {
		t.Errorf("interval %v", asked[0])
	}
}

func TestMissingDir(t *testing.T) {
	c := &Controller{Dir: filepath.Join(t.TempDir(), "none"), Applier: newFake()}
	if _, err := c.Sync(context.Background(), true); err != nil {
		t.Error(err)
	}
}

func TestSplitDocuments(t *testing.T) {
	docs, err := SplitDocuments([]byte("a: |\n  ---\n  not a separator\n---\n# only a comment\n---\nb: 2\n"))
	if err != nil || len(docs) != 2 || !strings.Contains(string(docs[0]), "not a separator") {
		t.Errorf("docs %q %v", docs, err)
	}
	if _, err := SplitDocuments([]byte("- a\n")); err == nil {
		t.Error("a list document was accepted")
	}
}

func FuzzSplitDocuments(f *testing.F) {
	f.Add([]byte("a: 1\n---\nb: 2\n"))
	f.Add([]byte(`{"kind":"x"}`))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := SplitDocuments(data)
		if err != nil {
			return
		}
		for _, d := range docs {
			again, err := SplitDocuments(d)
			if err != nil || len(again) != 1 {
				t.Fatalf("document %q does not re-split to one (%d, %v)", d, len(again), err)
			}
		}
	})
}
