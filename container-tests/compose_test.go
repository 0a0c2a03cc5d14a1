package containertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"
)

// composeCommand is `docker compose` (the CLI plugin) or Debian's
// docker-compose.
func composeCommand(ctx context.Context) ([]string, error) {
	if _, err := docker(ctx, "compose", "version"); err == nil {
		return []string{"docker", "compose"}, nil
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}, nil
	}
	return nil, fmt.Errorf("neither `docker compose` nor docker-compose: run scripts/install-deps test (Debian package docker-compose)")
}

// TestComposeExample runs examples/docker-compose.yml as its comment says:
// `up --scale agent=3` gives four Ready nodes and a kubeconfig in the
// project directory. An override keeps the network internal (and, on a
// machine that cannot grant every capability, uses runc-caps).
func TestComposeExample(t *testing.T) {
	ctx, runtime, id := testBed(t, 20*time.Minute)
	compose, err := composeCommand(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, file, _, _ := goruntime.Caller(0)
	example, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "examples", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// The project directory gets the example as written, but for the
	// image: the one under test, by ID, instead of ballast/k3s:latest.
	dir := t.TempDir()
	body := strings.ReplaceAll(string(example), "image: ballast/k3s:latest", "image: "+id)
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	override := "services:\n"
	for _, svc := range []string{"server", "agent"} {
		override += "  " + svc + ":\n    labels: {ballast-test: \"1\"}\n"
		if runtime != "" {
			override += "    runtime: " + runtime + "\n"
		}
	}
	override += "networks:\n  default:\n    internal: true\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.override.yml"), []byte(override), 0o644); err != nil {
		t.Fatal(err)
	}
	project := fmt.Sprintf("ballastcompose%d", time.Now().UnixNano()%1e6)
	runCtx := func(ctx context.Context, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, compose[0], append(append(compose[1:], "-p", project), args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "K3S_TOKEN=compose-test-secret")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	run := func(args ...string) (string, error) { return runCtx(ctx, args...) }
	t.Cleanup(func() {
		// ctx may have ended by now (its cleanup runs first).
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		if t.Failed() {
			out, _ := runCtx(cctx, "logs", "--tail", "30")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := runCtx(cctx, "down", "-v", "-t", "10"); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
	})
	if out, err := run("up", "-d", "--scale", "agent=3"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	start := time.Now()
	err = WaitFor(ctx, 5*time.Minute, 3*time.Second, func() error {
		// The server wrote its kubeconfig where K3S_KUBECONFIG_OUTPUT said.
		out, err := run("exec", "-T", "server", "k3s", "kubectl", "--kubeconfig", "/output/kubeconfig.yaml", "get", "nodes", "--no-headers")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		ready := 0
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[1] == "Ready" {
				ready++
			}
		}
		if ready != 4 {
			return fmt.Errorf("%d nodes Ready, want 4:\n%s", ready, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("4 nodes Ready %.1fs after compose up", time.Since(start).Seconds())
	kc, err := os.ReadFile(filepath.Join(dir, "kubeconfig.yaml"))
	if err != nil {
		t.Fatalf("the server wrote no kubeconfig into the project directory: %v", err)
	}
	if !strings.Contains(string(kc), "server: https://127.0.0.1:6443") || !strings.Contains(string(kc), "client-certificate-data:") {
		t.Errorf("kubeconfig.yaml:\n%s", kc)
	}
}
