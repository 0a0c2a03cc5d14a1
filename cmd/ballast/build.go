package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/ballast-os/ballast/imagebuild"
	"github.com/ballast-os/ballast/imagebuild/spec"
)

type buildFlags struct {
	specFile, board, formats, config, output, runtime string
	offline                                           bool
}

func (f *buildFlags) register(fs interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
}) {
	fs.StringVar(&f.specFile, "f", "", "build spec `file` (default: the embedded default)")
	fs.StringVar(&f.board, "board", "", "board, overriding the spec (x86_64, ...)")
	fs.StringVar(&f.formats, "format", "", "comma-separated formats, overriding the spec (raw, iso; oci: the runtime as a container image)")
	fs.StringVar(&f.config, "config", "", "cloud-config `file` to bake in, overriding the spec")
	fs.StringVar(&f.output, "o", "", "output `directory`, overriding the spec")
	fs.StringVar(&f.runtime, "runtime", "", "runtime `kind` (ballast, k3s, none), overriding the spec")
	fs.BoolVar(&f.offline, "offline", false, "build from the cache and lock file only")
}

// loadSpec reads the spec (or the default) and applies the overrides.
func (f *buildFlags) loadSpec() (*spec.Spec, error) {
	var s *spec.Spec
	if f.specFile != "" {
		var err error
		if s, err = spec.Load(f.specFile); err != nil {
			return nil, err
		}
	} else {
		s = spec.Default()
	}
	changed := false
	defaultLock := f.specFile == "" && s.Lock == spec.Default().Lock
	if f.board != "" {
		s.Board, changed = f.board, true
		if defaultLock {
			s.Lock = "" // the new board's own lock
		}
		if f.formats == "" {
			s.Formats = nil // the new board's defaults
		}
	}
	if f.formats != "" {
		s.Formats, changed = strings.Split(f.formats, ","), true
	}
	if f.config != "" {
		s.CloudConfig, changed = f.config, true
		if f.specFile != "" {
			// Relative to where the user is, not to the spec.
			if abs, err := filepath.Abs(f.config); err == nil {
				s.CloudConfig = abs
			}
		}
	}
	if f.output != "" {
		oldDefault := s.Lock == spec.Default().Lock
		s.Output, changed = f.output, true
		if oldDefault && f.specFile == "" {
			s.Lock = "" // follow the new output directory
		}
	}
	if f.runtime != "" {
		switch f.runtime {
		case spec.RuntimeBallast, spec.RuntimeNone:
		case spec.RuntimeK3s:
			if s.Runtime.Kind != spec.RuntimeK3s {
				return nil, fmt.Errorf("%w: --runtime k3s needs a spec whose runtime: gives the k3s version and sha256 (or file)", errUsage)
			}
		default:
			return nil, fmt.Errorf("%w: --runtime %q: one of ballast, k3s, none", errUsage, f.runtime)
		}
		s.Runtime.Kind, changed = f.runtime, true
	}
	if changed {
		s.FillDefaults()
		if _, err := s.LoadBoard(); err != nil {
			return nil, fmt.Errorf("--board: %w", err)
		}
	}
	return s, nil
}

func runBuild(ctx context.Context, env Env, args []string) error {
	var f buildFlags
	fs := newFlags(env, "build", "[-f spec.yaml] [--board B] [--format raw,iso] [--config FILE] [-o DIR] [--runtime KIND] [--offline]")
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: build takes no arguments (use -f for a spec file)", errUsage)
	}
	s, err := f.loadSpec()
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := imagebuild.Build(ctx, imagebuild.Options{
		Spec:     s,
		Offline:  f.offline,
		Log:      env.Stderr,
		Progress: progressWriter(env),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "built %s in %s (kernel %s, %d packages, system %d MB)\n",
		res.Board, time.Since(start).Round(100*time.Millisecond), res.Kernel, res.Packages, res.SquashfsSize>>20)
	if rt := res.Runtime; rt != nil {
		var imgs int64
		for _, img := range rt.Images {
			imgs += img.Size
		}
		fmt.Fprintf(env.Stdout, "  runtime %s %s: %s %d MB, %d images %d MB\n", rt.Kind, rt.Version, rt.Binary, rt.Size>>20, len(rt.Images), imgs>>20)
	}
	for _, img := range res.Images {
		fmt.Fprintf(env.Stdout, "  %-4s %s  %d MB (%d MB on disk)\n", img.Format, img.Path, img.Size>>20, img.Allocated>>20)
		if img.Bmap != "" {
			fmt.Fprintf(env.Stdout, "       %s  (block map: `ballast flash` writes only the mapped blocks)\n", img.Bmap)
		}
	}
	return nil
}

func runLock(ctx context.Context, env Env, args []string) error {
	var f buildFlags
	fs := newFlags(env, "lock", "[-f spec.yaml] [--board B]")
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s, err := f.loadSpec()
	if err != nil {
		return err
	}
	res, err := imagebuild.Build(ctx, imagebuild.Options{Spec: s, UpdateLock: true, LockOnly: true, Log: env.Stderr, Progress: progressWriter(env)})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "locked %d packages in %s\n", res.Packages, res.LockPath)
	return nil
}

// progressWriter is stderr when it is a terminal (the Debian client then
// draws bars), else nil: the step log says enough.
func progressWriter(env Env) io.Writer {
	if f, ok := env.Stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return f
	}
	return nil
}
