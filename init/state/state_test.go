package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ballast-os/ballast/init/agent"
)

func TestBootsConfigsRunOnceSurviveReopen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.db")
	db, moved, err := Open(p)
	if err != nil || moved != "" {
		t.Fatalf("Open: %v %q", err, moved)
	}
	id := db.NodeID()
	if len(id) != 16 {
		t.Fatalf("node id %q", id)
	}
	now := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	n, err := db.StartBoot("b1", now)
	if err != nil || n != 1 {
		t.Fatalf("StartBoot = %d %v", n, err)
	}
	st := []agent.Stage{{Name: "mounts", Phase: "system", StartMS: 300, DurationMS: 2}}
	if err := db.UpdateBoot(1, st, "ready"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.LastGoodConfig(); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("LastGoodConfig on empty = %v", err)
	}
	g1, _ := db.RecordConfig("h1", []string{"baked"}, json.RawMessage(`{"hostname":"a"}`), now)
	g1again, _ := db.RecordConfig("h1", []string{"baked"}, json.RawMessage(`{"hostname":"a"}`), now)
	g2, _ := db.RecordConfig("h2", []string{"baked", "fw_cfg"}, json.RawMessage(`{"hostname":"b"}`), now)
	if g1 != 1 || g1again != 1 || g2 != 2 {
		t.Fatalf("generations %d %d %d", g1, g1again, g2)
	}
	if _, err := db.LastGoodConfig(); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("a config on trial is a last good one: %v", err)
	}
	for _, g := range []int{g1, g2} {
		if err := db.ConfirmConfig(g); err != nil {
			t.Fatal(err)
		}
	}
	if db.RunOnceDone("runcmd:i-1") {
		t.Fatal("marker set before marking")
	}
	db.MarkRunOnce("runcmd:i-1", now)
	db.Close()

	// Reopen as after a reboot.
	db, moved, err = Open(p)
	if err != nil || moved != "" {
		t.Fatalf("reopen: %v %q", err, moved)
	}
	defer db.Close()
	if db.NodeID() != id {
		t.Fatal("node id changed")
	}
	if !db.RunOnceDone("runcmd:i-1") || db.RunOnceDone("runcmd:i-2") {
		t.Fatal("run-once markers wrong after reopen")
	}
	g, err := db.LastGoodConfig()
	if err != nil || g.Hash != "h2" || string(g.Config) != `{"hostname":"b"}` || len(g.Sources) != 2 {
		t.Fatalf("last good = %+v %v", g, err)
	}
	if n, _ := db.StartBoot("b2", now); n != 2 {
		t.Fatalf("second boot number %d", n)
	}
	boots, _ := db.Boots()
	if len(boots) != 2 || boots[0].Result != "ready" || boots[0].Stages[0].Name != "mounts" || boots[1].Result != "booting" {
		t.Fatalf("boots = %+v", boots)
	}
}

func TestCorruptDBMovedAside(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.db")
	os.WriteFile(p, []byte(strings.Repeat("garbage!", 1024)), 0o600)
	db, moved, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if !strings.HasPrefix(moved, p+".corrupt-") {
		t.Fatalf("moved = %q", moved)
	}
	if b, _ := os.ReadFile(moved); !strings.HasPrefix(string(b), "garbage!") {
		t.Fatal("corrupt file not kept")
	}
	if _, err := db.StartBoot("x", time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestTruncatedDBMovedAside(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.db")
	db, _, _ := Open(p)
	db.StartBoot("x", time.Now())
	db.Close()
	// A torn write: keep only the first page.
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:4096], 0o600)
	db, moved, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if moved == "" {
		t.Fatal("truncated db reused")
	}
}

// Boot records and config generations are pruned to the newest Keep*.
func TestPrune(t *testing.T) {
	db, _, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	for i := range KeepBoots + 25 {
		if _, err := db.StartBoot(fmt.Sprint(i), now); err != nil {
			t.Fatal(err)
		}
	}
	boots, err := db.Boots()
	if err != nil || len(boots) != KeepBoots || boots[0].Number != 26 || boots[len(boots)-1].Number != KeepBoots+25 {
		t.Errorf("%d boots kept (%v), first %d", len(boots), err, boots[0].Number)
	}
	for i := range KeepConfigs + 3 {
		n, err := db.RecordConfig(fmt.Sprint("hash", i), nil, json.RawMessage(`{}`), now)
		if err != nil {
			t.Fatal(err)
		}
		// Only the first is ever good: it outlives the pruning.
		if i == 0 {
			db.ConfirmConfig(n)
		}
	}
	g, err := db.LastGoodConfig()
	if err != nil || g.Number != 1 {
		t.Errorf("last good config %d, %v", g.Number, err)
	}
	n := 0
	db.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketConfigs).Stats().KeyN; return nil })
	if n != KeepConfigs+1 {
		t.Errorf("%d config generations kept, want %d and the last good one", n, KeepConfigs)
	}
}

// A new config is on trial: maxBoots boots without being confirmed and
// the last good one is applied instead, until the config changes.
func TestConfigTrial(t *testing.T) {
	db, _, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	begin := func(n int, need string) TrialResult {
		t.Helper()
		r, err := db.BeginTrial(n, 3, need)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// First config: nothing to fall back to, so its trial never ends.
	g1, _ := db.RecordConfig("h1", []string{"baked"}, json.RawMessage(`{"hostname":"one"}`), now)
	for range 5 {
		if r := begin(g1, ""); r.Apply.Number != g1 || r.SetAside != 0 {
			t.Fatalf("first config: %+v", r)
		}
	}
	db.ConfirmConfig(g1)
	if r := begin(g1, ""); r.Apply.Number != g1 || !r.Apply.Good() {
		t.Fatalf("confirmed config: %+v", r)
	}

	// A broken second config gets three boots, then the first comes back.
	g2, _ := db.RecordConfig("h2", []string{"baked", "cmdline-url"}, json.RawMessage(`{"hostname":"two"}`), now)
	for boot := 1; boot <= 3; boot++ {
		r := begin(g2, "")
		if r.Apply.Number != g2 || r.Apply.Trial == nil || r.Apply.Trial.Boots != boot {
			t.Fatalf("trial boot %d: %+v", boot, r)
		}
	}
	for range 2 {
		// The same config at later boots: still set aside.
		if again, _ := db.RecordConfig("h2", nil, nil, now); again != g2 {
			t.Fatalf("same config recorded as %d", again)
		}
		r := begin(g2, "")
		if r.Apply.Number != g1 || r.SetAside != g2 || string(r.Apply.Config) != `{"hostname":"one"}` {
			t.Fatalf("after three failed boots: %+v", r)
		}
	}
	// A fallback that must include a source: none good has it, so the
	// trial goes on.
	if r := begin(g2, "cmdline-url"); r.Apply.Number != g2 || r.SetAside != 0 {
		t.Fatalf("fallback without the needed source: %+v", r)
	}

	// A changed config gets its own trial; going back to the first
	// config's content is good at once.
	g3, _ := db.RecordConfig("h3", nil, json.RawMessage(`{"hostname":"three"}`), now)
	if r := begin(g3, ""); r.Apply.Number != g3 || r.Apply.Trial == nil || r.Apply.Trial.Boots != 1 {
		t.Fatalf("changed config: %+v", r)
	}
	g4, _ := db.RecordConfig("h1", nil, json.RawMessage(`{"hostname":"one"}`), now)
	if r := begin(g4, ""); r.Apply.Number != g4 || !r.Apply.Good() {
		t.Fatalf("a config that was good before: %+v", r)
	}
	if err := db.ConfirmConfig(99); err == nil {
		t.Fatal("confirming a generation that does not exist")
	}
}
