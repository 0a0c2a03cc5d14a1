package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ballast-os/ballast/imagebuild/inspect"
)

func runInspect(_ context.Context, env Env, args []string) error {
	fs := newFlags(env, "inspect", "[--json] IMAGE")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: name one image", errUsage)
	}
	r, err := inspect.Inspect(fs.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return r.WriteText(env.Stdout)
}
