package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/ballast-os/ballast/runtime/config"
	"gopkg.in/yaml.v3"
)

// TestCloudConfigCopyCurrent fails when cloud-config/k3s_keys.go, which
// `ballast validate` classifies k3s keys by, differs from what the
// runtime's tables give now.
func TestCloudConfigCopyCurrent(t *testing.T) {
	path := filepath.Join("..", "..", "..", "cloud-config", "k3s_keys.go")
	have, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s: not in this checkout (the runtime module alone)", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	want, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Fatalf("%s is stale: the runtime's flag or support table changed; run `go generate ./cloud-config` from the repository root", path)
	}
}

// TestActedKeysLoadQuietly: the k3s: block of the cloud-config test file
// that sets every key the runtime acts on (cloud-config/testdata), written
// as config.yaml the way the init writes it, loads without a warning or a
// refusal here too: the runtime and `ballast validate` agree.
func TestActedKeysLoadQuietly(t *testing.T) {
	path := filepath.Join("..", "..", "..", "cloud-config", "testdata", "k3s-acted-keys.yaml")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s: not in this checkout (the runtime module alone)", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		K3s map[string]any `yaml:"k3s"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	k3s, err := yaml.Marshal(doc.K3s)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, k3s, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := config.Load(config.Options{Command: "server", Args: []string{"--config", cfg}, LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Warnings) != 0 || l.Unsupported() != nil {
		t.Fatalf("warnings %v; %v", l.Warnings, l.Unsupported())
	}
	for _, s := range config.Supports() {
		if _, in := doc.K3s[s.Key]; !in && acted(s) && !s.FileOnly {
			t.Errorf("%s: acted on, but not in %s", s.Key, path)
		}
	}
}

func acted(s config.Support) bool {
	if s.Level == config.Acted {
		return true
	}
	for _, v := range s.Values {
		if v.Level == config.Acted {
			return true
		}
	}
	return false
}
