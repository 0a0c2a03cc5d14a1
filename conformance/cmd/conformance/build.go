package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/ballast-os/ballast/conformance/suitebin"
)

// buildFlags are the flags build and run share.
type buildFlags struct {
	module, cache string
	offline       bool
}

func (f *buildFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.module, "module", "", "the conformance module `dir` (default: found from the working directory)")
	fs.StringVar(&f.cache, "cache", "", "build cache `dir` (default: $XDG_CACHE_HOME/ballast/conformance)")
	fs.BoolVar(&f.offline, "offline", false, "build from Go's module cache only (GOPROXY=off)")
}

// options resolves the flags into suitebin's options.
func (f *buildFlags) options(env Env) (suitebin.BuildOptions, error) {
	o := suitebin.BuildOptions{CacheDir: f.cache, Offline: f.offline, Log: env.Stdout}
	var err error
	if f.module != "" {
		o.ModuleDir, err = filepath.Abs(abs(env, f.module))
	} else {
		o.ModuleDir, err = suitebin.FindModule(env.Dir)
	}
	if err != nil {
		return o, err
	}
	if o.CacheDir == "" {
		if o.CacheDir, err = suitebin.DefaultCacheDir(); err != nil {
			return o, err
		}
	} else {
		o.CacheDir = abs(env, o.CacheDir)
	}
	return o, nil
}

// build compiles the suite, or finds it in the cache.
func (f *buildFlags) build(ctx context.Context, env Env) (*suitebin.Suite, suitebin.BuildOptions, error) {
	o, err := f.options(env)
	if err != nil {
		return nil, o, err
	}
	fmt.Fprintf(env.Stdout, "conformance suite (%s)\n", o.ModuleDir)
	s, err := suitebin.Build(ctx, o)
	return s, o, err
}

func runBuild(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "build", "[--out DIR] [--offline]")
	var bf buildFlags
	bf.register(fs)
	out := fs.String("out", "", "also put e2e.test, kubectl and ginkgo into `dir`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s, _, err := bf.build(ctx, env)
	if err != nil {
		return err
	}
	if *out != "" {
		paths, err := suitebin.Install(s, abs(env, *out))
		if err != nil {
			return err
		}
		for _, p := range paths {
			fmt.Fprintf(env.Stdout, "    %s\n", p)
		}
	}
	return nil
}

// abs resolves a path given on the command line against env.Dir.
func abs(env Env, p string) string {
	if filepath.IsAbs(p) || env.Dir == "" {
		return p
	}
	return filepath.Join(env.Dir, p)
}
