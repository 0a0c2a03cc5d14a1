package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// Command-line mistakes are found before anything is built.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"build", "extra"}, `unexpected argument "extra"`},
		{[]string{"run", "--bed", "cloud"}, `--bed "cloud": want containers or qemu`},
		{[]string{"run", "--kubeconfig", "k", "--bed", "qemu"}, "--kubeconfig and --bed: give one"},
		{[]string{"run", "--kubeconfig", "k", "--focus", "("}, "--focus: error parsing regexp"},
		{[]string{"run", "--kubeconfig", "k", "--skip", "[a"}, "--skip: error parsing regexp"},
		{[]string{"run", "--kubeconfig", "k", "--parallel", "-1"}, "--parallel must be at least 1"},
		{[]string{"run", "--nonsense"}, "flag provided but not defined"},
	} {
		t.Setenv("KUBECONFIG", "")
		var stderr bytes.Buffer
		err := Run(context.Background(), Env{Stdout: &bytes.Buffer{}, Stderr: &stderr, Dir: t.TempDir()}, c.args)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want a usage error with %q", c.args, err, c.want)
		}
		if exitCode(err, &bytes.Buffer{}) != 2 {
			t.Errorf("%q: exit code %d, want 2", c.args, exitCode(err, &bytes.Buffer{}))
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"run", "-h"}, {"build", "--help"}} {
		var stderr bytes.Buffer
		err := Run(context.Background(), Env{Stdout: &bytes.Buffer{}, Stderr: &stderr}, args)
		if exitCode(err, &bytes.Buffer{}) != 0 || !strings.Contains(stderr.String(), "Usage: conformance") {
			t.Errorf("%q: err = %v, output %q", args, err, stderr.String())
		}
	}
}

func TestFailedRunExitsOne(t *testing.T) {
	var stderr bytes.Buffer
	err := errors.Join(errFailed)
	if code := exitCode(err, &stderr); code != 1 || !strings.Contains(stderr.String(), "conformance tests failed") {
		t.Errorf("exit %d, %q", code, stderr.String())
	}
}
