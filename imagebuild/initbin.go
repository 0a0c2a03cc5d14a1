package imagebuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
)

// modulePath is the root module's path; the init is built from its source.
const modulePath = "github.com/ballast-os/ballast"

// ErrNoSource means the ballast source tree (needed to compile the init for
// the target architecture) could not be found.
var ErrNoSource = errors.New("ballast source tree not found")

// FindSource returns the root of the ballast module: $BALLAST_SRC, else the
// first directory above the working directory, then above the executable,
// whose go.mod declares the module.
func FindSource() (string, error) {
	if d := os.Getenv("BALLAST_SRC"); d != "" {
		if isModuleRoot(d) {
			return d, nil
		}
		return "", fmt.Errorf("%w: BALLAST_SRC=%s has no go.mod for %s", ErrNoSource, d, modulePath)
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, s := range starts {
		for d := s; ; d = filepath.Dir(d) {
			if isModuleRoot(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", fmt.Errorf("%w: run ballast inside its checkout or set BALLAST_SRC", ErrNoSource)
}

func isModuleRoot(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(first) == "module "+modulePath
}

// BuildInit compiles the init for goarch into dir and returns the binary's
// path. The build is static and reproducible (-trimpath, no build ID), so
// the same source gives the same bytes and the squashfs cache stays warm.
func BuildInit(ctx context.Context, srcDir, goarch, version, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "init-"+goarch+"-*.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X main.version="+version,
		"-o", tmp.Name(), "./init")
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the init for %s: %w\n%s", goarch, err, out.String())
	}
	data, err := os.ReadFile(tmp.Name())
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	final := filepath.Join(dir, "init-"+goarch+"-"+hex.EncodeToString(sum[:8]))
	if old, err := os.ReadFile(final); err == nil && bytes.Equal(old, data) {
		// Keep the existing file and its mtime: the squashfs cache key
		// identifies host files by path, size and mtime.
		return final, nil
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	return final, nil
}

// goTool finds the go command: $GO, PATH, or the usual install location.
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// Version is ballast's version: the VCS revision the binary was built
// from, or "dev".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
