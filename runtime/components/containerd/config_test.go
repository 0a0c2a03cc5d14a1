package containerd

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
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
	ctx := context.Background()
	var cfg srvconfig.Config
	if err := srvconfig.LoadConfig(ctx, path, &cfg); err != nil {
		t.Fatal(err)
	}
	const id = "io.containerd.service.v1.diff-service"
	for _, r := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		if r.URI() != id {
			continue
		}
		// A fresh copy of the plugin's defaults, decoded over as the
		// daemon does.
		pc := reflect.New(reflect.TypeOf(r.Config).Elem())
		pc.Elem().Set(reflect.ValueOf(r.Config).Elem())
		got, err := cfg.Decode(ctx, id, pc.Interface())
		if err != nil {
			t.Fatal(err)
		}
		v := reflect.ValueOf(got).Elem()
		if !v.FieldByName("SyncFs").Bool() {
			t.Errorf("%s: sync_fs is off", id)
		}
		if order := v.FieldByName("Order"); order.Len() != 1 || order.Index(0).String() != "walking" {
			t.Errorf("%s: differ order %v, want containerd's default [walking]", id, order)
		}
		return
	}
	t.Fatalf("no plugin %s linked", id)
}
