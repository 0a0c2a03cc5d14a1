package examples_test

import (
	"path/filepath"
	"testing"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/examples"
	"github.com/ballast-os/ballast/imagebuild/spec"
)

// The default cloud-config must parse cleanly: a warning in it would show
// on every node's console.
func TestDefaultCloudConfigIsValid(t *testing.T) {
	cfg, warnings, err := cloudconfig.ParseWithWarnings("default-cloud-config.yaml", examples.DefaultCloudConfig)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Fatalf("warnings: %v", warnings)
	}
	if !cfg.DHCPOrDefault() || !cfg.NTPEnabled() || !cfg.SSHEnabled() || cfg.SSHPasswordAuth() || cfg.AgentPrivileged() {
		t.Errorf("the default config is not the documented default: %+v", cfg)
	}
	if cfg.Hostname != "" {
		t.Errorf("the default must leave hostname to the init (ballast-<MAC>), got %q", cfg.Hostname)
	}
}

func TestExampleSpecLoads(t *testing.T) {
	s, err := spec.Load(filepath.Join(".", "ballast.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Board != "x86_64" || s.CloudConfig != "default-cloud-config.yaml" || s.Runtime.Kind != spec.RuntimeBallast {
		t.Errorf("unexpected spec: %+v", s)
	}
}
