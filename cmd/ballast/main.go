// Command ballast builds bootable appliance images for Kubernetes nodes and
// boots them in QEMU.
//
//	ballast build [-f spec.yaml] [--board B] [--format raw,iso] [--config FILE] [-o DIR] [--offline]
//	ballast inspect IMAGE
//	ballast validate FILE...
//	ballast run IMAGE [--config FILE]
//	ballast flash [--yes] IMAGE DEVICE
//	ballast lock [-f spec.yaml]
//
// Every command is a function over a context and its arguments, so tests run
// the CLI in-process; only main prints and picks the exit code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

// Env is what a command sees of the world.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

type command struct {
	name, summary string
	run           func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{"build", "build images from a spec (no arguments: the embedded default)", runBuild},
		{"inspect", "show what an image holds: partitions, boot files, kernel, cmdline, config", runInspect},
		{"validate", "check cloud-config files; print every error", runValidate},
		{"run", "boot an image in QEMU with the console on this terminal", runRun},
		{"flash", "write an image to an SD card or USB stick and verify it", runFlash},
		{"lock", "resolve packages afresh and rewrite the lock file", runLock},
		{"version", "print the version", func(_ context.Context, env Env, _ []string) error {
			fmt.Fprintf(env.Stdout, "ballast %s\n", version)
			return nil
		}},
	}
}

// errUsage marks a command-line mistake: exit code 2.
var errUsage = errors.New("usage")

// Run executes the CLI with args (without the program name).
func Run(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.Stderr)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, env, args[1:])
		}
	}
	usage(env.Stderr)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "ballast builds bootable Kubernetes appliance images.\n\nUsage: ballast COMMAND [options]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'ballast COMMAND -h' for a command's options.\n")
}

// newFlags returns a FlagSet that reports errors instead of exiting.
func newFlags(env Env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: ballast %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses and maps flag errors to errUsage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := Run(ctx, Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err and maps it: 0 ok, 2 usage, 1 anything else.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		if msg := err.Error(); msg != errUsage.Error() {
			fmt.Fprintf(stderr, "ballast: %s\n", msg)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "ballast: %v\n", err)
		return 1
	}
}
