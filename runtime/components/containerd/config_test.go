package containerd

import (
	"context"
	"iter"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/ballast-os/ballast/runtime/containerdcfg"
)

// TestRenderedConfigSyncsUnpacks loads the config the runtime writes as
// the daemon loads it, and decodes the diff service's section into that
// plugin's own config: layers are synced at unpack, and its other
// defaults (the differ order) are kept.
func TestRenderedConfigSyncsUnpacks(t *testing.T) {
	dir := t.TempDir()
	out, _, err := containerdcfg.Render(&containerdcfg.Config{
		Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"),
		Address: filepath.Join(dir, "containerd.sock"), Snapshotter: "overlayfs",
		SandboxImage: "rancher/mirrored-pause:3.6", CNIBinDir: "/usr/lib/ballast/cni",
		CNIConfDir: filepath.Join(dir, "net.d"), CertsDir: filepath.Join(dir, "certs.d"),
	}, dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, path)
	const id = "io.containerd.service.v1.diff-service"
	v := decodePlugin(t, cfg, id, true)
	if !v.FieldByName("SyncFs").Bool() {
		t.Errorf("%s: sync_fs is off", id)
	}
	if order := v.FieldByName("Order"); order.Len() != 1 || order.Index(0).String() != "walking" {
		t.Errorf("%s: differ order %v, want containerd's default [walking]", id, order)
	}
}

// TestK3sTemplatesLoad loads what templates written for k3s render to
// (containerdcfg's golden files for its k3s testdata templates, version 2
// and 3) as the daemon loads them, version 2 migrated, and checks that the
// CRI plugins get the pause image and the runtimes, the extra ones too.
func TestK3sTemplatesLoad(t *testing.T) {
	files, _ := filepath.Glob("../../containerdcfg/testdata/k3s-*.golden")
	if len(files) < 3 {
		t.Fatalf("rendered k3s templates: %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg := loadConfig(t, f)
			if cfg.Version != 3 {
				t.Errorf("version %d after loading, want 3", cfg.Version)
			}
			images := decodePlugin(t, cfg, "io.containerd.cri.v1.images", false)
			if got := images.FieldByName("PinnedImages").MapIndex(reflect.ValueOf("sandbox")); !got.IsValid() || got.String() != "rancher/mirrored-pause:3.6" {
				t.Errorf("pinned sandbox image %v", got)
			}
			runtimes := decodePlugin(t, cfg, "io.containerd.cri.v1.runtime", false).FieldByName("Runtimes")
			want := map[string]string{"runc": "", "nvidia": "/usr/bin/nvidia-container-runtime"}
			if strings.Contains(f, "docs-base") {
				want["custom"] = "/usr/bin/custom-container-runtime"
			}
			if runtimes.Len() != len(want) {
				t.Errorf("runtimes %v, want %v", runtimes.MapKeys(), want)
			}
			for name, binary := range want {
				r := runtimes.MapIndex(reflect.ValueOf(name))
				if !r.IsValid() {
					t.Errorf("no runtime %s", name)
					continue
				}
				if typ := r.FieldByName("Type").String(); typ != "io.containerd.runc.v2" {
					t.Errorf("runtime %s: runtime_type %q", name, typ)
				}
				opts, _ := r.FieldByName("Options").Interface().(map[string]any)
				if got, _ := opts["BinaryName"].(string); got != binary {
					t.Errorf("runtime %s: BinaryName %q, want %q", name, got, binary)
				}
			}
		})
	}
}

// loadConfig loads path as the daemon does: over a version 3 config, with
// the linked plugins' migrations for an older version.
func loadConfig(t *testing.T, path string) *srvconfig.Config {
	t.Helper()
	g := registry.Graph(func(*plugin.Registration) bool { return false })
	cfg := &srvconfig.Config{Version: 3}
	if err := srvconfig.LoadConfigWithPlugins(context.Background(), path, func() iter.Seq[plugin.Registration] { return slices.Values(g) }, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// decodePlugin decodes plugin id's section of cfg as the daemon does:
// over a copy of that plugin's defaults, or over its zero value. The copy
// is shallow: maps in the defaults (the CRI runtimes) are shared, and the
// decode writes into them, so a test reading maps decodes over the zero
// value.
func decodePlugin(t *testing.T, cfg *srvconfig.Config, id string, overDefaults bool) reflect.Value {
	t.Helper()
	for _, r := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		if r.URI() != id {
			continue
		}
		pc := reflect.New(reflect.TypeOf(r.Config).Elem())
		if overDefaults {
			pc.Elem().Set(reflect.ValueOf(r.Config).Elem())
		}
		got, err := cfg.Decode(context.Background(), id, pc.Interface())
		if err != nil {
			t.Fatal(err)
		}
		return reflect.ValueOf(got).Elem()
	}
	t.Fatalf("no plugin %s linked", id)
	return reflect.Value{}
}
