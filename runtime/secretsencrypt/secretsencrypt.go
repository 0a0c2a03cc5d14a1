// Package secretsencrypt is k3s's secrets-encryption: the
// EncryptionConfiguration kube-apiserver reads
// (<data-dir>/server/cred/encryption-config.json), written once with a
// random key when a server first starts with secrets-encryption (a
// server joining a cluster gets the cluster's in its bootstrap data), and
// the server side of `k3s secrets-encrypt` (Controller): status, enable,
// disable, prepare, rotate, reencrypt and rotate-keys.
package secretsencrypt

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

// Providers k3s offers (secrets-encryption-provider) and the key name
// each starts with.
var Providers = map[string]string{"aescbc": "aescbckey", "secretbox": "secretboxkey"}

// Config is the apiserver.config.k8s.io/v1 EncryptionConfiguration, as
// much as k3s writes.
type Config struct {
	Kind       string     `json:"kind"`
	APIVersion string     `json:"apiVersion"`
	Resources  []Resource `json:"resources"`
}

// Resource is one resources entry: which resources, and the providers in
// order (the first encrypts; all decrypt).
type Resource struct {
	Resources []string   `json:"resources"`
	Providers []Provider `json:"providers"`
}

// Provider is one of aescbc, secretbox or identity.
type Provider struct {
	AESCBC    *Keys     `json:"aescbc,omitempty"`
	Secretbox *Keys     `json:"secretbox,omitempty"`
	Identity  *struct{} `json:"identity,omitempty"`
}

// Keys of a provider.
type Keys struct {
	Keys []Key `json:"keys"`
}

// Key is a named 32-byte key, base64.
type Key struct {
	Name   string `json:"name"`
	Secret string `json:"secret"`
}

// New is a config that encrypts Secrets with a new random key of
// provider, and still reads unencrypted ones (identity last: Secrets
// written before encryption was turned on stay readable).
func New(provider string, random io.Reader) (*Config, error) {
	k, err := newKey(provider, "", random)
	if err != nil {
		return nil, err
	}
	p := providerOf(provider, &Keys{Keys: []Key{k}})
	return &Config{
		Kind: "EncryptionConfiguration", APIVersion: "apiserver.config.k8s.io/v1",
		Resources: []Resource{{Resources: []string{"secrets"}, Providers: []Provider{p, {Identity: &struct{}{}}}}},
	}, nil
}

// newKey is a random 32-byte key named after provider's key name and
// suffix ("aescbckey", or "aescbckey-<time>" as k3s names the keys it
// adds later).
func newKey(provider, suffix string, random io.Reader) (Key, error) {
	base, ok := Providers[provider]
	if !ok {
		return Key{}, fmt.Errorf("secrets-encryption-provider %q: want aescbc or secretbox", provider)
	}
	key := make([]byte, 32)
	if _, err := io.ReadFull(random, key); err != nil {
		return Key{}, err
	}
	return Key{Name: base + suffix, Secret: base64.StdEncoding.EncodeToString(key)}, nil
}

// providerOf is a provider entry of type provider (aescbc or secretbox).
func providerOf(provider string, keys *Keys) Provider {
	if provider == "secretbox" {
		return Provider{Secretbox: keys}
	}
	return Provider{AESCBC: keys}
}

// Ensure writes a new config to path unless one is there (written before,
// or received from the cluster at join); it says whether it wrote one.
func Ensure(path, provider string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		_, err := Read(path)
		return false, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	c, err := New(provider, rand.Reader)
	if err != nil {
		return false, err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return false, err
	}
	return true, atomicfile.Write(path, data, 0o600)
}

// Read parses a config file.
func Read(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parse(path, data)
}

// parse parses the bytes of the config file at path.
func parse(path string, data []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Kind != "EncryptionConfiguration" || len(c.Resources) == 0 {
		return nil, fmt.Errorf("%s: not an EncryptionConfiguration with resources", path)
	}
	return &c, nil
}
