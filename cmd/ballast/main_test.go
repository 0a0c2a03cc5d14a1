package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	err := Run(context.Background(), Env{Stdin: strings.NewReader(""), Stdout: &o, Stderr: &e}, args)
	code = exitCode(err, &e)
	return o.String(), e.String(), code
}

func TestUsage(t *testing.T) {
	_, stderr, code := runCLI(t)
	if code != 2 || !strings.Contains(stderr, "build") || !strings.Contains(stderr, "inspect") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
	_, stderr, code = runCLI(t, "frobnicate")
	if code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
	_, _, code = runCLI(t, "build", "-h")
	if code != 0 {
		t.Fatalf("build -h exit %d", code)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("#cloud-config\nhostname: edge-1\n"), 0o644)
	os.WriteFile(bad, []byte("#cloud-config\nhostnme: edge-1\nwrite_files:\n  - path: relative\n"), 0o644)

	out, _, code := runCLI(t, "validate", good)
	if code != 0 || !strings.Contains(out, "1 file(s) valid") {
		t.Fatalf("good: code %d out %q", code, out)
	}
	_, stderr, code := runCLI(t, "validate", good, bad)
	if code != 1 {
		t.Fatalf("bad: exit %d, want 1", code)
	}
	for _, want := range []string{bad + ":2:1", "hostnme", `did you mean "hostname"`, bad + ":4:", "relative"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	_, _, code = runCLI(t, "validate")
	if code != 2 {
		t.Fatalf("validate without files: exit %d, want 2", code)
	}
}

func TestBuildRejectsBadSpecBeforeWork(t *testing.T) {
	dir := t.TempDir()
	specFile := filepath.Join(dir, "spec.yaml")
	os.WriteFile(specFile, []byte("board: x86_64\nfromats: [raw]\n"), 0o644)
	_, stderr, code := runCLI(t, "build", "-f", specFile, "-o", filepath.Join(dir, "out"))
	if code != 1 || !strings.Contains(stderr, specFile+":2:1: fromats") {
		t.Fatalf("code %d stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a rejected spec created the output directory: %v", err)
	}
	_, stderr, code = runCLI(t, "build", "--board", "pdp11")
	if code != 1 || !strings.Contains(stderr, "unknown board") {
		t.Fatalf("code %d stderr %q", code, stderr)
	}
}

func TestInspectMissingImage(t *testing.T) {
	_, stderr, code := runCLI(t, "inspect", "/nonexistent.img")
	if code != 1 || !strings.Contains(stderr, "/nonexistent.img") {
		t.Fatalf("code %d stderr %q", code, stderr)
	}
}

func TestBuildRuntimeOverride(t *testing.T) {
	for _, c := range []struct {
		flag, want, err string
	}{
		{"", "ballast", ""},
		{"none", "none", ""},
		{"ballast", "ballast", ""},
		{"k3s", "", "needs a spec whose runtime: gives the k3s version"},
		{"docker", "", `--runtime "docker"`},
	} {
		f := buildFlags{runtime: c.flag}
		s, err := f.loadSpec()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("--runtime %q: error %v; want %q", c.flag, err, c.err)
			}
			continue
		}
		if err != nil || s.Runtime.Kind != c.want {
			t.Errorf("--runtime %q: kind %v, %v; want %s", c.flag, s, err, c.want)
		}
	}
}
