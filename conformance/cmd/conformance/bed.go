package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ballast-os/ballast/conformance/images"
	"github.com/ballast-os/ballast/conformance/testbed"
)

// Beds the run can bring up itself when no --kubeconfig is given.
const (
	bedContainers = "containers" // a server and an agent on the container test bed
	bedQEMU       = "qemu"       // one node booted in QEMU from the default image
)

// bedOptions say how to bring up the cluster under test.
type bedOptions struct {
	kind      string // bedContainers or bedQEMU
	repo      string // the ballast checkout (the conformance module's parent)
	nodeImage string // containers: the runtime's OCI image (make image-oci)
	outDir    string
	keep      bool // leave the cluster running after the run
	offline   bool
}

// startBed builds the suite's images, brings up the cluster with them
// preloaded and returns it; the caller closes it.
func startBed(ctx context.Context, env Env, o bedOptions) (*testbed.Bed, error) {
	logf := func(format string, args ...any) { fmt.Fprintf(env.Stdout, "    "+format+"\n", args...) }
	fmt.Fprintf(env.Stdout, "test images (built here: no registry is reachable)\n")
	imgs, err := images.Build(ctx, images.Options{SourceDir: o.repo, Offline: o.offline, Log: env.Stdout})
	if err != nil {
		return nil, err
	}
	var archives, refs []string
	for _, im := range imgs {
		archives = append(archives, im.Path)
		refs = append(refs, im.Ref)
	}
	bedDir := filepath.Join(o.outDir, "cluster")
	switch o.kind {
	case bedContainers:
		fmt.Fprintf(env.Stdout, "cluster: a server and an agent on the container test bed (%s)\n", o.nodeImage)
		return testbed.Containers(ctx, testbed.Options{
			NodeImage: o.nodeImage, Images: archives, Refs: refs, Dir: bedDir, Logf: logf,
		})
	case bedQEMU:
		disk, err := buildQuickImage(ctx, env, o, archives)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(env.Stdout, "cluster: one node in QEMU (%s)\n", disk)
		return testbed.QEMU(ctx, testbed.QEMUOptions{Disk: disk, Images: archives, Refs: refs, Dir: bedDir, Logf: logf})
	}
	return nil, fmt.Errorf("%w: --bed %q: want %s or %s", errUsage, o.kind, bedContainers, bedQEMU)
}

// buildQuickImage builds the default x86_64 image with the suite's images
// in its runtime's agent/images, with the ballast CLI of the checkout.
func buildQuickImage(ctx context.Context, env Env, o bedOptions, archives []string) (string, error) {
	dir := filepath.Join(o.outDir, "image")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	const name = "ballast-conformance"
	spec := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(spec, []byte(testbed.QuickSpec(name, dir, archives)), 0o644); err != nil {
		return "", err
	}
	args := []string{"run", "./cmd/ballast", "build", "-f", spec}
	if o.offline {
		args = append(args, "--offline")
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.repo
	cmd.Stdout, cmd.Stderr = env.Stdout, env.Stderr
	fmt.Fprintf(env.Stdout, "image: go %s (in %s)\n", strings.Join(args, " "), o.repo)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the quick sample's image: %w", err)
	}
	fmt.Fprintf(env.Stdout, "    built in %s\n", time.Since(start).Round(time.Second))
	return filepath.Join(dir, name+"-x86_64.img"), nil
}
