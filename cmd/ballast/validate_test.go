package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateK3sKeys: every k3s key the runtime acts on gives no false
// alarm; a key it ignores is a warning with what to do instead (exit 0);
// a key it refuses is an error (exit 1). The keys come from the runtime's
// own table (cloud-config/k3s_keys.go), and cloud-config's tests keep the
// file in step with it.
func TestValidateK3sKeys(t *testing.T) {
	acted := filepath.Join("..", "..", "cloud-config", "testdata", "k3s-acted-keys.yaml")
	out, stderr, code := runCLI(t, "validate", acted)
	if code != 0 || stderr != "" || !strings.Contains(out, "1 file(s) valid") {
		t.Fatalf("keys acted on: exit %d, stdout %q, stderr:\n%s", code, out, stderr)
	}

	dir := t.TempDir()
	ignored := filepath.Join(dir, "ignored.yaml")
	os.WriteFile(ignored, []byte("#cloud-config\nk3s:\n  node-name: edge-1\n  debug: true\n"), 0o644)
	out, stderr, code = runCLI(t, "validate", ignored)
	want := "warning: " + ignored + ":4:3: k3s.debug: ballast's runtime has no debug level of its own"
	if code != 0 || !strings.Contains(out, "1 file(s) valid") || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("ignored key: exit %d, stdout %q, stderr %q; want one line starting %q", code, out, stderr, want)
	}

	refused := filepath.Join(dir, "refused.yaml")
	os.WriteFile(refused, []byte("#cloud-config\nk3s:\n  docker: true\n  secrets-encryption: false\n"), 0o644)
	_, stderr, code = runCLI(t, "validate", refused)
	want = refused + ":3:3: k3s.docker: cri-dockerd is not built into ballast's runtime"
	if code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "use the embedded containerd") || strings.Contains(stderr, "secrets-encryption") {
		t.Fatalf("refused key: exit %d, stderr:\n%s\nwant %q", code, stderr, want)
	}
}
