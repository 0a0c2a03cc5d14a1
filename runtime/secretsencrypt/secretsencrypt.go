// Package secretsencrypt is k3s's secrets-encryption: the
// EncryptionConfiguration kube-apiserver reads
// (<data-dir>/server/cred/encryption-config.json), written once with a
// random key when a server first starts with secrets-encryption (a
// server joining a cluster gets the cluster's in its bootstrap data), and
// `k3s secrets-encrypt status`.
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
	"strings"
	"text/tabwriter"

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
	name, ok := Providers[provider]
	if !ok {
		return nil, fmt.Errorf("secrets-encryption-provider %q: want aescbc or secretbox", provider)
	}
	key := make([]byte, 32)
	if _, err := io.ReadFull(random, key); err != nil {
		return nil, err
	}
	keys := &Keys{Keys: []Key{{Name: name, Secret: base64.StdEncoding.EncodeToString(key)}}}
	p := Provider{AESCBC: keys}
	if provider == "secretbox" {
		p = Provider{Secretbox: keys}
	}
	return &Config{
		Kind: "EncryptionConfiguration", APIVersion: "apiserver.config.k8s.io/v1",
		Resources: []Resource{{Resources: []string{"secrets"}, Providers: []Provider{p, {Identity: &struct{}{}}}}},
	}, nil
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
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Kind != "EncryptionConfiguration" || len(c.Resources) == 0 {
		return nil, fmt.Errorf("%s: not an EncryptionConfiguration with resources", path)
	}
	return &c, nil
}

// Status writes what `k3s secrets-encrypt status` shows of the config at
// path (a missing one: encryption disabled).
func Status(w io.Writer, path string) error {
	c, err := Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintln(w, "Encryption Status: Disabled, no configuration file found")
		return nil
	}
	if err != nil {
		return err
	}
	var rows [][3]string
	enabled := false
	for _, r := range c.Resources {
		for i, p := range r.Providers {
			active := ""
			if i == 0 {
				active = " *"
			}
			switch {
			case p.AESCBC != nil:
				for _, k := range p.AESCBC.Keys {
					rows = append(rows, [3]string{active, "AES-CBC", k.Name})
					enabled = enabled || i == 0
				}
			case p.Secretbox != nil:
				for _, k := range p.Secretbox.Keys {
					rows = append(rows, [3]string{active, "XSalsa20-POLY1305", k.Name})
					enabled = enabled || i == 0
				}
			case p.Identity != nil:
				rows = append(rows, [3]string{active, "Identity", "identity"})
			}
		}
	}
	status := "Disabled"
	if enabled {
		status = "Enabled"
	}
	fmt.Fprintf(w, "Encryption Status: %s\n", status)
	fmt.Fprintln(w, "Current Rotation Stage: start")
	fmt.Fprintln(w, "Server Encryption Hashes: this server only (ballast does not compare servers' configs)")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Active\tKey Type\tName")
	fmt.Fprintln(tw, "------\t--------\t----")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r[:], "\t"))
	}
	return tw.Flush()
}
