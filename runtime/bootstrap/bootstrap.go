// Package bootstrap keeps what makes servers one cluster — the CAs with
// their keys, the service-account key, the passwords and the
// secrets-encryption config — in agreement across the servers of an
// embedded-etcd cluster, as k3s does: one record in the datastore,
// encrypted with the server token (Store), that each server compares with
// its own files when it starts (Reconcile) and gives what it changed
// (Store.Sync; the commands that change these files, token rotate,
// secrets-encrypt and rotate-ca, write it straight away).
//
// Which side changed a file is decided against what the server last
// agreed with the record (State), not by clocks: the record's changes are
// taken at the next start, this server's go into the record, and a file
// changed on both sides since stops the start rather than losing one.
package bootstrap

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

// Files are the bootstrap files, relative to the data dir: what a joining
// server takes from the cluster and what the record keeps. A server
// issues its own leaf certificates from these CAs.
var Files = []string{
	"server/tls/client-ca.crt", "server/tls/client-ca.key",
	"server/tls/server-ca.crt", "server/tls/server-ca.key",
	"server/tls/request-header-ca.crt", "server/tls/request-header-ca.key",
	"server/tls/etcd/server-ca.crt", "server/tls/etcd/server-ca.key",
	"server/tls/etcd/peer-ca.crt", "server/tls/etcd/peer-ca.key",
	"server/tls/service.key", "server/tls/service.current.key",
	"server/cred/passwd",
	"server/cred/encryption-config.json", "server/cred/encryption-state.json",
}

// known reports whether rel is one of Files.
func known(rel string) bool {
	for _, f := range Files {
		if f == rel {
			return true
		}
	}
	return false
}

// File is one bootstrap file: when it was last changed, and its contents
// (base64 in JSON).
type File struct {
	Timestamp time.Time
	Content   []byte
}

// Data is bootstrap data: relative path (one of Files) -> file.
type Data map[string]File

// ReadDisk reads the bootstrap files dataDir has, each with its
// modification time.
func ReadDisk(dataDir string) (Data, error) {
	d := Data{}
	for _, rel := range Files {
		p := filepath.Join(dataDir, rel)
		data, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		d[rel] = File{Timestamp: st.ModTime().UTC(), Content: data}
	}
	return d, nil
}

// Paths are d's paths, sorted.
func (d Data) Paths() []string {
	out := make([]string, 0, len(d))
	for rel := range d {
		out = append(out, rel)
	}
	sort.Strings(out)
	return out
}

// Check refuses data naming a path that is not a bootstrap file.
func (d Data) Check() error {
	for _, rel := range d.Paths() {
		if !known(rel) {
			return fmt.Errorf("bootstrap data: unexpected file %q", rel)
		}
	}
	return nil
}

// Write writes d's files under dataDir, each atomically and with its
// recorded modification time.
func (d Data) Write(dataDir string) error {
	if err := d.Check(); err != nil {
		return err
	}
	for _, rel := range d.Paths() {
		if err := writeFile(dataDir, rel, d[rel]); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(dataDir, rel string, f File) error {
	p := filepath.Join(dataDir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	perm := os.FileMode(0o600)
	if strings.HasSuffix(rel, ".crt") {
		perm = 0o644
	}
	if err := atomicfile.Write(p, f.Content, perm); err != nil {
		return fmt.Errorf("bootstrap data: %w", err)
	}
	if !f.Timestamp.IsZero() {
		if err := os.Chtimes(p, f.Timestamp, f.Timestamp); err != nil {
			return fmt.Errorf("bootstrap data: %w", err)
		}
	}
	return nil
}

// Skew is how much newer than the record a file on disk may be and still
// be taken from the record, when there is no State to decide (k3s's
// rule: clocks of servers differ a little).
const Skew = 3 * time.Second

// State is what this server last agreed with the record: path -> SHA-256
// of the contents both had. With it a difference is decided by which side
// changed since (no clock involved: a Raspberry Pi without a network has
// no reliable one); without it, by the files' times.
type State map[string]string

func statePath(dataDir string) string {
	return filepath.Join(dataDir, "server", "cred", "bootstrap-state.json")
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// LoadState reads this server's State; none (a server that kept none
// yet) is nil.
func LoadState(dataDir string) (State, error) {
	data, err := os.ReadFile(statePath(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dataDir), err)
	}
	return st, nil
}

// Agree records that disk and record have d's files: the State keeps
// their hashes (other paths keep theirs).
func Agree(dataDir string, d Data) error {
	st, err := LoadState(dataDir)
	if err != nil {
		return err
	}
	if st == nil {
		st = State{}
	}
	for rel, f := range d {
		st[rel] = sum(f.Content)
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.Write(statePath(dataDir), data, 0o600)
}

// Plan is what to do with each file that differs between this server's
// disk and the record.
type Plan struct {
	Take      []string // changed in the record (by another server): the disk takes it
	Give      []string // changed on this disk: the record takes it
	Conflicts []string // changed on both sides since they last agreed
}

// Compare decides, file by file, which side changed since the last
// agreement (st). A file with no agreement yet (a server from before the
// record, or a file new to it) goes to the newer side; k3s's
// skew (Skew) counts for the record. encryption-state.json with no
// agreement is always the record's: servers from before the record each
// wrote their own, and the stage is recorded again from the config at
// start.
func Compare(disk, stored Data, st State) Plan {
	var p Plan
	paths := map[string]bool{}
	for rel := range disk {
		paths[rel] = true
	}
	for rel := range stored {
		paths[rel] = true
	}
	sorted := make([]string, 0, len(paths))
	for rel := range paths {
		sorted = append(sorted, rel)
	}
	sort.Strings(sorted)
	for _, rel := range sorted {
		have, onDisk := disk[rel]
		want, inRecord := stored[rel]
		last := st[rel]
		switch {
		case !inRecord:
			p.Give = append(p.Give, rel)
		case !onDisk:
			p.Take = append(p.Take, rel)
		case bytes.Equal(have.Content, want.Content):
		case last != "" && sum(have.Content) == last:
			p.Take = append(p.Take, rel)
		case last != "" && sum(want.Content) == last:
			p.Give = append(p.Give, rel)
		case last != "":
			p.Conflicts = append(p.Conflicts, rel)
		case rel == "server/cred/encryption-state.json" || have.Timestamp.Sub(want.Timestamp) < Skew:
			p.Take = append(p.Take, rel)
		default:
			p.Give = append(p.Give, rel)
		}
	}
	return p
}

// ConflictError names files changed both on this server's disk and in the
// record since they last agreed: neither can be taken without losing the
// other.
type ConflictError struct{ Paths []string }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s newer than the datastore and could cause a cluster outage: remove the file(s) from disk and restart to be recreated from the datastore (if this server's are the ones to keep, make the change again afterwards with the k3s command that makes it: token rotate, secrets-encrypt, certificate rotate-ca)", strings.Join(e.Paths, ", "))
}

// Reconcile is a server's start: the files the record changed (Take) are
// written, with the recorded times; those this server changed (Give) stay,
// for the record to take once etcd runs (Store.Sync); a file changed on
// both sides stops it (ConflictError), before anything is written. before
// is called once, before the first file is written, with the paths about
// to change (to back them up); taken lists them.
func Reconcile(dataDir string, stored Data, before func(paths []string) error) (taken []string, err error) {
	if err := stored.Check(); err != nil {
		return nil, err
	}
	disk, err := ReadDisk(dataDir)
	if err != nil {
		return nil, err
	}
	st, err := LoadState(dataDir)
	if err != nil {
		return nil, err
	}
	p := Compare(disk, stored, st)
	if len(p.Conflicts) > 0 {
		var full []string
		for _, rel := range p.Conflicts {
			full = append(full, filepath.Join(dataDir, rel))
		}
		return nil, &ConflictError{Paths: full}
	}
	if len(p.Take) > 0 && before != nil {
		if err := before(p.Take); err != nil {
			return nil, err
		}
	}
	for _, rel := range p.Take {
		if err := writeFile(dataDir, rel, stored[rel]); err != nil {
			return nil, err
		}
	}
	agreed := Data{}
	give := map[string]bool{}
	for _, rel := range p.Give {
		give[rel] = true
	}
	for rel, f := range stored {
		if !give[rel] {
			agreed[rel] = f
		}
	}
	return p.Take, Agree(dataDir, agreed)
}

// Key is the datastore key of the record for a server token's password
// (the token's last part): k3s's /bootstrap/<12 hex digits of its
// SHA-256>, so a record made with one token is not even found with
// another.
func Key(password string) string {
	sum := sha256.Sum256([]byte(password))
	return KeyPrefix + hex.EncodeToString(sum[:])[:12]
}

// KeyPrefix is where every record lives.
const KeyPrefix = "/bootstrap/"

// The record's encryption, as k3s's: a key derived from the token's
// password (PBKDF2-HMAC-SHA1, 4096 rounds, a random salt kept with the
// record), AES-256-GCM; stored as "<salt>:<base64 of nonce and sealed
// data>".
const (
	kdfRounds = 4096
	saltBytes = 8
)

func aead(password string, salt []byte) (cipher.AEAD, error) {
	key, err := pbkdf2.Key(sha1.New, password, salt, kdfRounds, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts d with password.
func Seal(password string, d Data) ([]byte, error) {
	plain, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, saltBytes)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	salt := hex.EncodeToString(raw)
	gcm, err := aead(password, []byte(salt))
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	sealed := gcm.Seal(nonce, nonce, plain, nil)
	return []byte(salt + ":" + base64.StdEncoding.EncodeToString(sealed)), nil
}

// ErrWrongToken is Open's error for a record the password does not open.
var ErrWrongToken = errors.New("bootstrap data is encrypted with a different token")

// Open decrypts a record Seal made.
func Open(password string, record []byte) (Data, error) {
	salt, b64, ok := strings.Cut(string(record), ":")
	if !ok {
		return nil, errors.New("bootstrap data: not <salt>:<data>")
	}
	sealed, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("bootstrap data: %w", err)
	}
	gcm, err := aead(password, []byte(salt))
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, errors.New("bootstrap data: too short")
	}
	plain, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], nil)
	if err != nil {
		return nil, ErrWrongToken
	}
	var d Data
	if err := json.Unmarshal(plain, &d); err != nil {
		return nil, fmt.Errorf("bootstrap data: %w", err)
	}
	return d, d.Check()
}
