package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/init/kubenode"
)

// The shipped archives get links in k3s's images dir; a link to an
// archive that an update removed goes; the user's own archives stay.
func TestLinkImages(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "shipped")
	dst := filepath.Join(root, "agent/images")
	os.MkdirAll(src, 0o755)
	os.MkdirAll(dst, 0o755)
	for _, n := range []string{"pause.tar", "coredns.tar"} {
		os.WriteFile(filepath.Join(src, n), []byte("x"), 0o644)
	}
	os.WriteFile(filepath.Join(dst, "mine.tar"), []byte("user's"), 0o644)
	os.Symlink(filepath.Join(imagesDir, "gone.tar"), filepath.Join(dst, "gone.tar"))
	for range 2 { // idempotent
		if err := linkImages(src, dst); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"pause.tar", "coredns.tar"} {
		if got, err := os.Readlink(filepath.Join(dst, n)); err != nil || got != filepath.Join(imagesDir, n) {
			t.Errorf("%s -> %q, %v; want a link to %s", n, got, err, filepath.Join(imagesDir, n))
		}
	}
	if _, err := os.Lstat(filepath.Join(dst, "gone.tar")); !os.IsNotExist(err) {
		t.Errorf("stale link gone.tar still there (%v)", err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "mine.tar")); err != nil || string(b) != "user's" {
		t.Errorf("user's archive changed: %q %v", b, err)
	}
}

func TestLinkImagesWithoutShippedImages(t *testing.T) {
	root := t.TempDir()
	if err := linkImages(filepath.Join(root, "none"), filepath.Join(root, "dst")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "dst")); !os.IsNotExist(err) {
		t.Error("created the images dir with nothing to link")
	}
}

func TestNodeName(t *testing.T) {
	noFile := func(string) ([]byte, error) { return nil, os.ErrNotExist }
	withID := func(p string) ([]byte, error) {
		if p != nodeIDFile {
			t.Errorf("read %s", p)
		}
		return []byte("0a1b2c3d\n"), nil
	}
	for _, tc := range []struct {
		k3s  map[string]any
		read func(string) ([]byte, error)
		want string
	}{
		{nil, noFile, "pi-rack-1"},
		{map[string]any{"node-name": "edge"}, noFile, "edge"},
		{map[string]any{"with-node-id": true}, withID, "pi-rack-1-0a1b2c3d"},
		{map[string]any{"with-node-id": true, "node-name": "edge"}, withID, "edge-0a1b2c3d"},
		{map[string]any{"with-node-id": true}, noFile, ""}, // k3s has not written the id yet
	} {
		if got := nodeName(&cloudconfig.Config{K3s: tc.k3s}, "Pi-Rack-1", tc.read); got != tc.want {
			t.Errorf("k3s %v: node name %q, want %q", tc.k3s, got, tc.want)
		}
	}
}

func TestCertWarning(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	e := kubenode.Expiry{File: "/var/lib/rancher/k3s/server/tls/client-ca.crt"}
	for _, tc := range []struct {
		left time.Duration
		want string
	}{
		{400 * 24 * time.Hour, ""},
		{31 * 24 * time.Hour, ""},
		{12 * 24 * time.Hour, "client-ca.crt expires in 12 days (2026-12-19)"},
		{-time.Hour, "client-ca.crt EXPIRED on 2026-12-06"},
	} {
		e.NotAfter = now.Add(tc.left)
		got := certWarning(e, now)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%v left: %q, want %q", tc.left, got, tc.want)
		}
	}
	if certWarning(kubenode.Expiry{}, now) != "" {
		t.Error("no certificates: a warning")
	}
}
