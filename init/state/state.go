// Package state is the node's persistent record in bbolt
// (/var/lib/ballast/state.db): boots with their stage timings, applied
// config generations, run-once markers and node metadata. Every update is
// one fsync'd transaction.
package state

import (
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

// prune deletes the oldest entries of b (keys are sequence numbers) past keep.
func prune(b *bolt.Bucket, keep int) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
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
}

// RecordConfig stores config as the last good one. A config with the same
// hash as the latest generation is not stored again. It returns the
// generation number.
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
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		n = int(seq)
		v, err := json.Marshal(Generation{Number: n, Hash: hash, Sources: sources, Time: t, Config: config})
		if err != nil {
			return err
		}
		if err := b.Put(itob(seq), v); err != nil {
			return err
		}
		return prune(b, KeepConfigs)
	})
	if err != nil {
		return 0, fmt.Errorf("recording config: %w", err)
	}
	return n, nil
}

// ErrNoConfig is returned by LastGoodConfig before any config was recorded.
var ErrNoConfig = errors.New("no config recorded")

// LastGoodConfig returns the latest recorded generation.
func (d *DB) LastGoodConfig() (Generation, error) {
	var g Generation
	err := d.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketConfigs).Cursor().Last()
		if k == nil {
			return ErrNoConfig
		}
		return json.Unmarshal(v, &g)
	})
	return g, err
}

// LastGoodConfigWith returns the latest generation whose sources include
// source (a config URL's "cmdline-url"): when that source cannot be read,
// the fallback must be a config that had it, not one merged without it.
func (d *DB) LastGoodConfigWith(source string) (Generation, error) {
	var g Generation
	err := d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketConfigs).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var cand Generation
			if json.Unmarshal(v, &cand) != nil {
				continue
			}
			if slices.Contains(cand.Sources, source) {
				g = cand
				return nil
			}
		}
		return ErrNoConfig
	})
	return g, err
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
