// Package state is the node's persistent record in bbolt
// (/var/lib/ballast/state.db): boots with their stage timings, applied
// config generations, run-once markers and node metadata. Every update is
// one fsync'd transaction.
package state

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ballast-os/ballast/init/agent"
)

var (
	bucketBoots   = []byte("boots")
	bucketConfigs = []byte("configs")
	bucketRunOnce = []byte("runonce")
	bucketMeta    = []byte("meta")
	keyNodeID     = []byte("node_id")
)

// DB is the open state database.
type DB struct{ db *bolt.DB }

// Open opens (or creates) the database at path. A database that cannot be
// opened or fails its consistency check is renamed to path.corrupt-<unix
// time> and a fresh one created; movedTo says where it went.
func Open(path string) (db *DB, movedTo string, err error) {
	db, err = open(path)
	if err == nil {
		return db, "", nil
	}
	movedTo = fmt.Sprintf("%s.corrupt-%d", path, time.Now().Unix())
	if rerr := os.Rename(path, movedTo); rerr != nil {
		return nil, "", fmt.Errorf("state db %s unusable (%v) and cannot be moved aside: %w", path, err, rerr)
	}
	db, err2 := open(path)
	if err2 != nil {
		return nil, movedTo, fmt.Errorf("state db %s: %w", path, err2)
	}
	return db, movedTo, nil
}

func open(path string) (d *DB, err error) {
	// bbolt panics on some corruptions instead of returning an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("state db %s: %v", path, r)
		}
	}()
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("state db %s: %w", path, err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for errc := range tx.Check() {
			return errc
		}
		for _, name := range [][]byte{bucketBoots, bucketConfigs, bucketRunOnce, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyNodeID) == nil {
			return meta.Put(keyNodeID, []byte(randomID()))
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("state db %s: %w", path, err)
	}
	return &DB{db: b}, nil
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

// NodeID is a random ID made when this database was created: with the
// database on the data partition, it names this installation. runcmd runs
// once per NodeID when the config has no instance_id.
func (d *DB) NodeID() string {
	var id string
	d.db.View(func(tx *bolt.Tx) error { id = string(tx.Bucket(bucketMeta).Get(keyNodeID)); return nil })
	return id
}

// Boot is one boot's record.
type Boot struct {
	Number int           `json:"number"`
	ID     string        `json:"id"`
	Time   time.Time     `json:"time"`
	Stages []agent.Stage `json:"stages,omitempty"`
	// Result is "booting", "ready" or "failed: ...", or "shutdown".
	Result string `json:"result"`
}

// How many boot records and config generations the database keeps: a
// node that reboots for years must not fill its data partition with them.
const (
	KeepBoots   = 200
	KeepConfigs = 50
)

// prune deletes the oldest entries of b (keys are sequence numbers) past
// keep, except those keepAlso names.
func prune(b *bolt.Bucket, keep int, keepAlso ...[]byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if !slices.ContainsFunc(keepAlso, func(x []byte) bool { return bytes.Equal(x, k) }) {
			keys = append(keys, append([]byte(nil), k...))
		}
	}
	for _, k := range keys[:max(0, len(keys)-keep)] {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func itob(n uint64) []byte { b := make([]byte, 8); binary.BigEndian.PutUint64(b, n); return b }

// StartBoot records a new boot and returns its number (1 for the first).
func (d *DB) StartBoot(id string, t time.Time) (int, error) {
	var n int
	err := d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBoots)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		n = int(seq)
		v, _ := json.Marshal(Boot{Number: n, ID: id, Time: t, Result: "booting"})
		if err := b.Put(itob(seq), v); err != nil {
			return err
		}
		return prune(b, KeepBoots)
	})
	if err != nil {
		return 0, fmt.Errorf("recording boot: %w", err)
	}
	return n, nil
}

// UpdateBoot stores the stages and result of boot number n.
func (d *DB) UpdateBoot(n int, stages []agent.Stage, result string) error {
	err := d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBoots)
		var rec Boot
		if v := b.Get(itob(uint64(n))); v == nil {
			return fmt.Errorf("no boot %d", n)
		} else if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		rec.Stages, rec.Result = stages, result
		v, _ := json.Marshal(rec)
		return b.Put(itob(uint64(n)), v)
	})
	if err != nil {
		return fmt.Errorf("updating boot %d: %w", n, err)
	}
	return nil
}

// Boots returns every boot record, oldest first.
func (d *DB) Boots() ([]Boot, error) {
	var out []Boot
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBoots).ForEach(func(_, v []byte) error {
			var b Boot
			if err := json.Unmarshal(v, &b); err != nil {
				return err
			}
			out = append(out, b)
			return nil
		})
	})
	return out, err
}

// Generation is one distinct applied config.
type Generation struct {
	Number  int       `json:"number"`
	Hash    string    `json:"hash"`
	Sources []string  `json:"sources"`
	Time    time.Time `json:"time"`
	// Config is the merged config, JSON-encoded, so it can be reapplied
	// when a later config is broken.
	Config json.RawMessage `json:"config"`
	// Trial is set while the generation has not yet brought a boot to
	// health (ready, and the node Ready where it runs k3s): until then it
	// is not a config to fall back to. Generations recorded before trials
	// existed have none and count as good.
	Trial *Trial `json:"trial,omitempty"`
}

// Good says whether g brought a node up: a config a broken one falls
// back to.
func (g Generation) Good() bool { return g.Trial == nil }

// Trial counts the boots a generation on trial was applied in.
type Trial struct {
	Boots int `json:"boots"`
}

// RecordConfig stores config as a new generation on trial, unless it has
// the latest generation's hash (that one's number is returned). A config
// that some good generation already had starts good: going back to a
// config that worked needs no trial.
func (d *DB) RecordConfig(hash string, sources []string, config json.RawMessage, t time.Time) (int, error) {
	var n int
	err := d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConfigs)
		if k, v := b.Cursor().Last(); k != nil {
			var last Generation
			if json.Unmarshal(v, &last) == nil && last.Hash == hash {
				n = last.Number
				return nil
			}
		}
		trial := &Trial{}
		if _, err := lastGeneration(b, func(g Generation) bool { return g.Good() && g.Hash == hash }); err == nil {
			trial = nil
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		n = int(seq)
		v, err := json.Marshal(Generation{Number: n, Hash: hash, Sources: sources, Time: t, Config: config, Trial: trial})
		if err != nil {
			return err
		}
		if err := b.Put(itob(seq), v); err != nil {
			return err
		}
		// However many configs failed their trial since, the newest good
		// one stays: it is what they fall back to.
		var keepGood [][]byte
		if g, err := lastGeneration(b, Generation.Good); err == nil {
			keepGood = append(keepGood, itob(uint64(g.Number)))
		}
		return prune(b, KeepConfigs, keepGood...)
	})
	if err != nil {
		return 0, fmt.Errorf("recording config: %w", err)
	}
	return n, nil
}

// ErrNoConfig is returned by LastGoodConfig before any config was recorded.
var ErrNoConfig = errors.New("no config recorded")

// lastGeneration returns the newest generation in b that match accepts.
func lastGeneration(b *bolt.Bucket, match func(Generation) bool) (Generation, error) {
	c := b.Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		var g Generation
		if json.Unmarshal(v, &g) != nil {
			continue
		}
		if match(g) {
			return g, nil
		}
	}
	return Generation{}, ErrNoConfig
}

func (d *DB) lastGeneration(match func(Generation) bool) (Generation, error) {
	var g Generation
	err := d.db.View(func(tx *bolt.Tx) error {
		var err error
		g, err = lastGeneration(tx.Bucket(bucketConfigs), match)
		return err
	})
	return g, err
}

// LastGoodConfig returns the latest good generation.
func (d *DB) LastGoodConfig() (Generation, error) {
	return d.LastGoodConfigWith("")
}

// LastGoodConfigWith returns the latest good generation whose sources
// include source, or the latest good one when source is "".
func (d *DB) LastGoodConfigWith(source string) (Generation, error) {
	return d.lastGeneration(func(g Generation) bool { return g.Good() && (source == "" || slices.Contains(g.Sources, source)) })
}

// Fallback returns the config to apply when a new one is broken: the
// latest good generation or, before any was good, the latest recorded;
// with need set (a config URL's "cmdline-url"), only generations that had
// that source: when it cannot be read, the fallback must be a config that
// had it, not one merged without it.
func (d *DB) Fallback(need string) (Generation, error) {
	g, err := d.LastGoodConfigWith(need)
	if errors.Is(err, ErrNoConfig) {
		g, err = d.lastGeneration(func(g Generation) bool { return need == "" || slices.Contains(g.Sources, need) })
	}
	return g, err
}

// TrialResult says which generation a boot applies.
type TrialResult struct {
	// Apply is the generation to apply: the one asked for, or the
	// fallback when that one used up its boots.
	Apply Generation
	// SetAside is the generation that used up its boots (Apply is then
	// the last good one); zero otherwise.
	SetAside int
}

// BeginTrial is called once per boot with the generation about to be
// applied. A good one is applied as it is. One on trial counts this boot;
// once it has had maxBoots boots without becoming good, the latest good
// generation (one that had need among its sources, when need is set) is
// applied instead, as long as the config stays the same. Without a good
// generation to fall back to, the trial goes on: nothing better exists.
func (d *DB) BeginTrial(n, maxBoots int, need string) (TrialResult, error) {
	var res TrialResult
	err := d.updateGeneration(n, func(b *bolt.Bucket, g *Generation) (bool, error) {
		res.Apply = *g
		if g.Good() {
			return false, nil
		}
		if g.Trial.Boots >= maxBoots {
			good, err := lastGeneration(b, func(c Generation) bool {
				return c.Good() && (need == "" || slices.Contains(c.Sources, need))
			})
			if err == nil {
				res.Apply, res.SetAside = good, g.Number
				return false, nil
			}
		}
		g.Trial.Boots++
		res.Apply = *g
		return true, nil
	})
	if err != nil {
		return res, fmt.Errorf("config trial: %w", err)
	}
	return res, nil
}

// UncountTrialBoot takes back the boot BeginTrial counted for generation
// n, when that boot failed for a reason that is not the config's.
func (d *DB) UncountTrialBoot(n int) error {
	err := d.updateGeneration(n, func(_ *bolt.Bucket, g *Generation) (bool, error) {
		if g.Good() || g.Trial.Boots == 0 {
			return false, nil
		}
		g.Trial.Boots--
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("config generation %d: %w", n, err)
	}
	return nil
}

// ConfirmConfig marks generation n good: a boot with it became healthy.
func (d *DB) ConfirmConfig(n int) error {
	err := d.updateGeneration(n, func(_ *bolt.Bucket, g *Generation) (bool, error) {
		if g.Good() {
			return false, nil
		}
		g.Trial = nil
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("confirming config generation %d: %w", n, err)
	}
	return nil
}

// updateGeneration runs f on generation n in one transaction and stores
// it again when f says it changed it.
func (d *DB) updateGeneration(n int, f func(b *bolt.Bucket, g *Generation) (changed bool, err error)) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConfigs)
		v := b.Get(itob(uint64(n)))
		if v == nil {
			return fmt.Errorf("no config generation %d", n)
		}
		var g Generation
		if err := json.Unmarshal(v, &g); err != nil {
			return fmt.Errorf("config generation %d: %w", n, err)
		}
		changed, err := f(b, &g)
		if err != nil || !changed {
			return err
		}
		v, err = json.Marshal(g)
		if err != nil {
			return err
		}
		return b.Put(itob(uint64(n)), v)
	})
}

// RunOnceDone reports whether key was marked done.
func (d *DB) RunOnceDone(key string) bool {
	var done bool
	d.db.View(func(tx *bolt.Tx) error { done = tx.Bucket(bucketRunOnce).Get([]byte(key)) != nil; return nil })
	return done
}

// MarkRunOnce marks key done (fsync'd before it returns).
func (d *DB) MarkRunOnce(key string, t time.Time) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRunOnce).Put([]byte(key), []byte(t.UTC().Format(time.RFC3339)))
	})
}
