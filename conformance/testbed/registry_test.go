package testbed

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// An archive the image builders write is served under its repository and
// tag, with the same manifest, as a mirror of its registry.
func TestRegistryServesArchives(t *testing.T) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "hello.tar")
	if err := ociimage.WriteFile(archive, ociimage.Image{
		Ref: "registry.k8s.io/e2e-test-images/hello:1.0", Architecture: "amd64",
		Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Config:  ociimage.Config{Entrypoint: []string{"/hello"}},
		Entries: []ociimage.Entry{{Path: "hello", Type: ociimage.File, Mode: 0o755, Data: []byte("#!/bin/sh\necho hi\n")}},
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, err := StartRegistry(ctx, "127.0.0.1:0", []string{archive})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ref, err := name.ParseReference(r.Addr+"/e2e-test-images/hello:1.0", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/hello"}) {
		t.Errorf("entrypoint %v", cfg.Config.Entrypoint)
	}
	if _, err := remote.Image(mustRef(t, r.Addr+"/e2e-test-images/other:1.0"), remote.WithContext(ctx)); err == nil {
		t.Error("an image never pushed was served")
	}

	regs := RegistriesOf([]string{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/e2e-test-images/agnhost:2.66.1", "busybox:1.37", "gcr.io/x/y:1"})
	if !slices.Equal(regs, []string{"registry.k8s.io", "docker.io", "gcr.io"}) {
		t.Errorf("RegistriesOf: %v", regs)
	}
	y := RegistriesYAML("http://10.0.0.1:5000", regs[:1])
	if !strings.Contains(y, "\"registry.k8s.io\":\n    endpoint: [\"http://10.0.0.1:5000\"]") {
		t.Errorf("registries.yaml:\n%s", y)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// The QEMU node's cloud-config carries registries.yaml as a file, the
// YAML kept intact inside the block.
func TestNodeConfig(t *testing.T) {
	regs := RegistriesYAML("http://"+registryGuest, []string{"registry.k8s.io"})
	got := nodeConfig(regs)
	cfg, err := cloudconfig.Parse("node", []byte(got))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.WriteFiles) != 1 || cfg.WriteFiles[0].Path != "/etc/rancher/k3s/registries.yaml" || cfg.WriteFiles[0].Content != regs {
		t.Errorf("write_files: %+v, want registries.yaml with\n%s", cfg.WriteFiles, regs)
	}
	want := "write_files:\n  - path: /etc/rancher/k3s/registries.yaml\n    content: |\n      mirrors:\n        \"registry.k8s.io\":\n          endpoint: [\"http://10.0.2.100:5000\"]\n"
	if !strings.Contains(got, want) || !strings.HasPrefix(got, "#cloud-config\n") {
		t.Errorf("node config:\n%s\nwant it to contain:\n%s", got, want)
	}
}
