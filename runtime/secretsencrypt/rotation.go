package secretsencrypt

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Stages of a key rotation, as k3s records them (the node annotation
// k3s.io/encryption-config-hash is "<stage>-<hash of the config>").
const (
	StageStart             = "start"
	StagePrepare           = "prepare"
	StageRotate            = "rotate"
	StageReencryptActive   = "reencrypt_active"
	StageReencryptFinished = "reencrypt_finished"
	// StageRotateKeys is what `k3s secrets-encrypt rotate-keys` asks
	// for; it is never recorded.
	StageRotateKeys = "rotate_keys"
)

// HashAnnotation is the node annotation that carries a server's stage and
// the hash of its config.
const HashAnnotation = "k3s.io/encryption-config-hash"

// Hash is the SHA-256 of a config file's bytes, hex.
func Hash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Marshal is the file's bytes for c.
func (c *Config) Marshal() ([]byte, error) { return json.Marshal(c) }

// secrets is the providers of the resources entry for Secrets.
func (c *Config) secrets() (*Resource, error) {
	for i := range c.Resources {
		if slices.Contains(c.Resources[i].Resources, "secrets") {
			return &c.Resources[i], nil
		}
	}
	return nil, errors.New("the encryption config has no entry for secrets")
}

// Enabled says whether new Secrets are encrypted: the first provider is
// aescbc or secretbox (identity first stores them in the clear).
func (c *Config) Enabled() bool {
	r, err := c.secrets()
	if err != nil || len(r.Providers) == 0 {
		return false
	}
	return r.Providers[0].Identity == nil
}

// keysOf is the key list of the provider of type provider (aescbc or
// secretbox) in r, or nil.
func keysOf(r *Resource, provider string) *Keys {
	for _, p := range r.Providers {
		switch {
		case provider == "aescbc" && p.AESCBC != nil:
			return p.AESCBC
		case provider == "secretbox" && p.Secretbox != nil:
			return p.Secretbox
		}
	}
	return nil
}

// SetEnabled moves identity to the back (enabled: Secrets written from
// now on are encrypted with the first key) or to the front (disabled:
// written in the clear; the keys stay, to read what was encrypted). It
// says whether anything changed.
func (c *Config) SetEnabled(on bool) (bool, error) {
	r, err := c.secrets()
	if err != nil {
		return false, err
	}
	if c.Enabled() == on {
		return false, nil
	}
	var id, others []Provider
	for _, p := range r.Providers {
		if p.Identity != nil {
			id = append(id, p)
		} else {
			others = append(others, p)
		}
	}
	if len(id) == 0 {
		id = []Provider{{Identity: &struct{}{}}}
	}
	if on {
		r.Providers = append(others, id...)
	} else {
		r.Providers = append(id, others...)
	}
	return true, nil
}

// AddKey adds a new key of provider: last in its list (prepare: it
// decrypts but does not encrypt yet) or first (rotate-keys: it encrypts
// from the moment the API server reads the file). A provider of that type
// is added before identity-last if the config has none.
func (c *Config) AddKey(provider string, first bool, now time.Time, random io.Reader) (Key, error) {
	r, err := c.secrets()
	if err != nil {
		return Key{}, err
	}
	k, err := newKey(provider, "-"+now.UTC().Format(time.RFC3339), random)
	if err != nil {
		return Key{}, err
	}
	keys := keysOf(r, provider)
	if keys == nil {
		p := providerOf(provider, &Keys{})
		// New Secrets use it only if encryption is on.
		at := 0
		if !c.Enabled() {
			at = 1
		}
		r.Providers = slices.Insert(r.Providers, min(at, len(r.Providers)), p)
		keys = keysOf(r, provider)
	} else if first {
		// The provider's keys encrypt only from the front of the list.
		moveFirst(r, provider)
	}
	if first {
		keys.Keys = slices.Insert(keys.Keys, 0, k)
	} else {
		keys.Keys = append(keys.Keys, k)
	}
	return k, nil
}

// moveFirst puts the provider of type provider before the other
// encrypting one (identity keeps its place).
func moveFirst(r *Resource, provider string) {
	idx := slices.IndexFunc(r.Providers, func(p Provider) bool {
		return provider == "aescbc" && p.AESCBC != nil || provider == "secretbox" && p.Secretbox != nil
	})
	other := slices.IndexFunc(r.Providers, func(p Provider) bool { return p.Identity == nil })
	if idx > other && other >= 0 {
		p := r.Providers[idx]
		r.Providers = slices.Delete(r.Providers, idx, idx+1)
		r.Providers = slices.Insert(r.Providers, other, p)
	}
}

// RotateLast makes the last key of provider its first (rotate: the key
// prepare added encrypts from now on).
func (c *Config) RotateLast(provider string) error {
	r, err := c.secrets()
	if err != nil {
		return err
	}
	keys := keysOf(r, provider)
	if keys == nil || len(keys.Keys) < 2 {
		return fmt.Errorf("no prepared %s key to rotate to (run k3s secrets-encrypt prepare first)", provider)
	}
	last := keys.Keys[len(keys.Keys)-1]
	keys.Keys = slices.Insert(keys.Keys[:len(keys.Keys)-1], 0, last)
	moveFirst(r, provider)
	return nil
}

// DropOldKeys keeps only the first key of provider and removes the other
// encrypting provider (what a finished re-encryption no longer needs:
// every Secret is written with that first key, or in the clear).
func (c *Config) DropOldKeys(provider string) error {
	r, err := c.secrets()
	if err != nil {
		return err
	}
	keys := keysOf(r, provider)
	if keys == nil || len(keys.Keys) == 0 {
		return fmt.Errorf("the encryption config has no %s key", provider)
	}
	keys.Keys = keys.Keys[:1]
	r.Providers = slices.DeleteFunc(r.Providers, func(p Provider) bool {
		return provider == "aescbc" && p.Secretbox != nil || provider == "secretbox" && p.AESCBC != nil
	})
	return nil
}

// KeyInfo is one key as `status` lists it.
type KeyInfo struct {
	Active bool   `json:"active"`
	Type   string `json:"type"` // AES-CBC, XSalsa20-POLY1305 or Identity
	Name   string `json:"name"`
}

// KeyList lists the keys in the order the API server tries them; the first
// of an encrypting provider in front is the active one.
func (c *Config) KeyList() []KeyInfo {
	var out []KeyInfo
	for _, r := range c.Resources {
		for i, p := range r.Providers {
			switch {
			case p.AESCBC != nil:
				for j, k := range p.AESCBC.Keys {
					out = append(out, KeyInfo{Active: i == 0 && j == 0, Type: "AES-CBC", Name: k.Name})
				}
			case p.Secretbox != nil:
				for j, k := range p.Secretbox.Keys {
					out = append(out, KeyInfo{Active: i == 0 && j == 0, Type: "XSalsa20-POLY1305", Name: k.Name})
				}
			case p.Identity != nil:
				out = append(out, KeyInfo{Active: i == 0, Type: "Identity", Name: "identity"})
			}
		}
	}
	return out
}
