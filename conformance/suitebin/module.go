package suitebin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/runtimebin"
)

// FindModule returns the conformance module's directory: start itself, its
// conformance/ folder (start is the ballast checkout), or the same from a
// parent folder, so the driver runs from anywhere in the checkout.
func FindModule(start string) (string, error) {
	dir, err := filepath.Abs(start)
	if err != nil {
		return "", err
	}
	for {
		for _, d := range []string{dir, filepath.Join(dir, "conformance")} {
			if isModule(d) {
				return d, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s module (conformance/go.mod) in or above %s", ModulePath, start)
		}
		dir = parent
	}
}

func isModule(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	first, _, _ := bytes.Cut(data, []byte("\n"))
	return string(bytes.TrimSpace(first)) == "module "+ModulePath
}

// Install puts the suite's executables into dir: hard links where dir is on
// the cache's file system, copies elsewhere.
func Install(s *Suite, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, b := range s.Binaries {
		dst := filepath.Join(dir, b.Name)
		os.Remove(dst)
		if err := os.Link(b.Path, dst); err != nil {
			if err := copyFile(b.Path, dst); err != nil {
				return nil, fmt.Errorf("installing %s: %w", b.Name, err)
			}
		}
		paths = append(paths, dst)
	}
	return paths, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// KubernetesSource returns the directory of k8s.io/kubernetes's source in
// Go's module cache (read-only), which e2e.test takes as --repo-root; ""
// when go cannot say.
func KubernetesSource(ctx context.Context, o BuildOptions) string {
	goCmd := o.Go
	if goCmd == "" {
		goCmd = runtimebin.GoTool()
	}
	cmd := exec.CommandContext(ctx, goCmd, "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes")
	cmd.Dir = o.ModuleDir
	if o.Offline {
		cmd.Env = append(os.Environ(), "GOPROXY=off")
	}
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	dir := strings.TrimSpace(string(out))
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return ""
	}
	return dir
}
