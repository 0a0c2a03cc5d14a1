package k3s

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/runtime/config"
)

func TestEachFlag(t *testing.T) {
	var got []string
	pos, err := eachFlag([]string{"list", "--a=1", "--b", "2", "-c", "3", "--force", "--skip=false", "-", "x"}, []string{"force", "skip"}, func(name, val, arg string) error {
		got = append(got, fmt.Sprintf("%s=%q (%s)", name, val, arg))
		return nil
	})
	want := []string{`a="1" (--a=1)`, `b="2" (--b)`, `c="3" (-c)`, `force="" (--force)`, `skip="false" (--skip=false)`}
	if err != nil || !slices.Equal(got, want) || !slices.Equal(pos, []string{"list", "-", "x"}) {
		t.Errorf("eachFlag: %v, flags %q, positional %q; want flags %q, positional [list - x]", err, got, pos, want)
	}
	if _, err := eachFlag([]string{"--path"}, nil, func(string, string, string) error { return nil }); !errors.Is(err, config.ErrUsage) || !strings.Contains(err.Error(), "--path needs a value") {
		t.Errorf("a flag without its value: %v", err)
	}
	if err := noPositional(eachFlag([]string{"extra"}, nil, func(string, string, string) error { return nil })); !errors.Is(err, config.ErrUsage) {
		t.Errorf("noPositional: %v", err)
	}
	for val, want := range map[string]bool{"": true, "true": true, "false": false} {
		if b, err := flagBool(val, "--force"); err != nil || b != want {
			t.Errorf("flagBool(%q) = %v, %v", val, b, err)
		}
	}
	if _, err := eachFlag([]string{"--force="}, []string{"force"}, func(string, string, string) error { return nil }); !errors.Is(err, config.ErrUsage) {
		t.Errorf("--force= with nothing after it: %v; want a usage error", err)
	}
	if _, err := flagBool("maybe", "--force=maybe"); err == nil {
		t.Error("flagBool(maybe): no error")
	}
}
