package datadir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCreate(t *testing.T) {
	root := filepath.Join(t.TempDir(), "k3s")
	l := Layout{Root: root}
	if err := os.MkdirAll(l.TLS(), 0o777); err != nil { // wrong mode: must be repaired
		t.Fatal(err)
	}
	if err := l.Create(true, true); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		"server": 0o700, "server/db": 0o700, "server/tls": 0o700, "server/cred": 0o700, "server/etc": 0o700,
		"server/manifests": 0o700, "server/static": 0o700, "storage": 0o701,
		"agent": 0o755, "agent/etc/containerd": 0o700, "agent/etc/cni/net.d": 0o755,
		"agent/images": 0o755, "agent/containerd": 0o700, "agent/pod-manifests": 0o755,
	}
	for rel, mode := range want {
		fi, err := os.Stat(filepath.Join(root, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if !fi.IsDir() || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), mode)
		}
	}
}

func TestAgentOnly(t *testing.T) {
	l := Layout{Root: t.TempDir()}
	if err := l.Create(false, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.Server()); !os.IsNotExist(err) {
		t.Errorf("agent-only created %s", l.Server())
	}
	if l.ContainerdConfig() != filepath.Join(l.Root, "agent/etc/containerd/config.toml") || l.NodeTokenFile() != filepath.Join(l.Root, "server/node-token") {
		t.Error("paths differ from k3s's layout")
	}
}
