// Package containertest is the container test bed: ballast's runtime as a
// container image (`ballast build --format oci`, what rancher/k3s is), run
// by the Docker engine as several nodes on a private network, so that
// cluster behaviour (joining, pod networking across nodes, a node going
// away and coming back) is tested at native speed instead of under
// emulation. QEMU tests what only a booted image shows; this bed tests what
// only several nodes show.
//
// The Docker daemon comes from Debian's docker.io (scripts/install-deps
// test); the tests start it when none runs, and fail when there is none.
// Test networks are created --internal: nodes reach each other and the
// host, nothing outside.
package containertest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// docker runs the docker CLI and returns its trimmed output; the error
// carries the output too.
func docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	s := strings.TrimSpace(out.String())
	if err != nil {
		return s, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, s)
	}
	return s, nil
}

// CapsRuntime is the name the daemon knows runc-caps by.
const CapsRuntime = "ballast-runc"

// EnsureDaemon makes sure a Docker daemon answers: it starts Debian's
// dockerd (as root) when none runs and waits for it. The daemon keeps
// running after the tests, as it would under systemd. On a machine that
// cannot grant every capability (see runc-caps) it returns the OCI
// runtime that privileged nodes must use, and starts the daemon with it.
func EnsureDaemon(ctx context.Context) (runtime string, err error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return "", errors.New("the docker CLI is missing: run scripts/install-deps test (Debian package docker.io)")
	}
	missing, err := missingCaps()
	if err != nil {
		return "", err
	}
	var wrapper string
	if missing {
		runtime = CapsRuntime
		if wrapper, err = buildCapsWrapper(ctx); err != nil {
			return "", err
		}
	}
	if info, err := docker(ctx, "info", "--format", "{{json .Runtimes}}"); err == nil {
		if missing && !strings.Contains(info, `"`+CapsRuntime+`"`) {
			return "", fmt.Errorf("this machine cannot grant every capability, so privileged containers need the %s runtime, and the running Docker daemon lacks it: restart dockerd with --add-runtime %s=%s (or stop it and let the tests start it)", CapsRuntime, CapsRuntime, wrapper)
		}
		return runtime, nil
	}
	return runtime, startDaemon(ctx, wrapper)
}

// missingCaps reports whether this process's bounding set lacks a
// capability the kernel has.
func missingCaps() (bool, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err
	}
	last, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return false, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(last)))
	if err != nil {
		return false, fmt.Errorf("cap_last_cap: %w", err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, err
			}
			all := uint64(1)<<uint(n+1) - 1
			return mask&all != all, nil
		}
	}
	return false, errors.New("no CapBnd in /proc/self/status")
}

// buildCapsWrapper builds runc-caps into the user cache (a stable path:
// the daemon keeps naming it after this test process ends).
func buildCapsWrapper(ctx context.Context) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, "ballast", "container-tests", "runc-caps")
	_, file, _, _ := goruntime.Caller(0)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./runc-caps")
	cmd.Dir = filepath.Dir(file)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building runc-caps: %w: %s", err, b)
	}
	return out, nil
}

func startDaemon(ctx context.Context, wrapper string) error {
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		return errors.New("no Docker daemon runs and dockerd is missing: run scripts/install-deps test (Debian package docker.io)")
	}
	if os.Geteuid() != 0 {
		return errors.New("no Docker daemon runs, and starting dockerd needs root")
	}
	logPath := filepath.Join(os.TempDir(), "ballast-dockerd.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(dockerd)
	if wrapper != "" {
		cmd.Args = append(cmd.Args, "--add-runtime", CapsRuntime+"="+wrapper)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: the daemon outlives this test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting dockerd: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := docker(ctx, "info", "--format", "{{.ServerVersion}}"); err == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("dockerd started but does not answer after 60 s; see %s", logPath)
}

// LoadImage loads an image archive written by `ballast build --format oci`
// unless the daemon already has it, and returns its image ID (the digest
// of its config, read from the archive's manifest.json), which the tests
// run by: the tags may name another build.
func LoadImage(ctx context.Context, archive string) (string, error) {
	id, err := archiveImageID(archive)
	if err != nil {
		return "", err
	}
	if _, err := docker(ctx, "image", "inspect", "--format", "{{.Id}}", id); err == nil {
		return id, nil
	}
	if _, err := docker(ctx, "load", "-i", archive); err != nil {
		return "", err
	}
	if _, err := docker(ctx, "image", "inspect", "--format", "{{.Id}}", id); err != nil {
		return "", fmt.Errorf("%s loaded, but image %s is not there: %w", archive, id, err)
	}
	return id, nil
}

func archiveImageID(archive string) (string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", fmt.Errorf("%w (build it: make image-oci)", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return "", fmt.Errorf("%s: no manifest.json: not an archive docker load takes", archive)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", archive, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ Config string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil || len(m) != 1 {
			return "", fmt.Errorf("%s: manifest.json: want one image (%v)", archive, err)
		}
		return "sha256:" + filepath.Base(m[0].Config), nil
	}
}
