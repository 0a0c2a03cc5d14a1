package main

import (
	"context"
	"errors"
	"fmt"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
)

// errInvalid means validation found errors (already printed): exit 1.
var errInvalid = errors.New("invalid cloud-config")

func runValidate(_ context.Context, env Env, args []string) error {
	fs := newFlags(env, "validate", "FILE...")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: name at least one cloud-config file", errUsage)
	}
	warnings, errs := cloudconfig.ValidateFiles(fs.Args())
	for _, w := range warnings {
		fmt.Fprintf(env.Stderr, "warning: %s\n", w)
	}
	for _, err := range errs {
		fmt.Fprintf(env.Stderr, "%v\n", err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %d error(s)", errInvalid, len(errs))
	}
	fmt.Fprintf(env.Stdout, "%d file(s) valid\n", fs.NArg())
	return nil
}
