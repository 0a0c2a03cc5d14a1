// Command conformance builds the upstream Kubernetes [Conformance] suite at
// the version the ballast runtime embeds and runs it against a cluster.
//
//	conformance build [--out DIR] [--offline]
//	conformance run [--kubeconfig FILE | --bed containers|qemu] [--out out/conformance]
//	                [--parallel N] [--focus REGEX] [--skip REGEX] [--quick] [--keep]
//
// build compiles e2e.test, kubectl and ginkgo for this machine from the
// conformance module (cached under the user cache dir); run builds them if
// needed, and with no kubeconfig brings up a cluster of its own with the
// suite's images built here and preloaded (no registry is reachable): a
// server and an agent on the container test bed, or for --quick one node
// in QEMU. It runs the tests that may share the cluster on N ginkgo
// processes, then the [Serial] ones alone, and writes e2e.log, JUnit XML,
// ginkgo's JSON reports and summary.md under --out. It exits 1 when a test
// failed.
//
// It shells out to go, ginkgo and e2e.test; of Kubernetes it imports only
// the test images' manifest: it builds in seconds, the suite in ten
// minutes.
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

// Env is what a command sees of the world.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	// Dir is where relative paths start and the module is looked for.
	Dir string
}

type command struct {
	name, summary string
	run           func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{"build", "compile e2e.test, kubectl and ginkgo (cached)", runBuild},
		{"run", "run the [Conformance] tests against a cluster", runRun},
	}
}

// errUsage marks a command-line mistake: exit code 2.
var errUsage = errors.New("usage")

// errFailed marks a run whose tests failed: exit code 1, the summary has
// said what failed.
var errFailed = errors.New("conformance tests failed")

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
	fmt.Fprintf(w, "conformance builds and runs the upstream Kubernetes [Conformance] suite.\n\nUsage: conformance COMMAND [options]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-6s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'conformance COMMAND -h' for a command's options.\n")
}

// newFlags returns a FlagSet that reports errors instead of exiting.
func newFlags(env Env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: conformance %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses and maps flag errors to errUsage; no positional
// arguments are taken.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %v\n", err)
		os.Exit(1)
	}
	err = Run(ctx, Env{Stdout: os.Stdout, Stderr: os.Stderr, Dir: dir}, os.Args[1:])
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err and maps it: 0 ok, 2 usage, 1 anything else.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		if msg := err.Error(); msg != errUsage.Error() {
			fmt.Fprintf(stderr, "conformance: %s\n", msg)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "conformance: %v\n", err)
		return 1
	}
}
