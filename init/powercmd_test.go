package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPowerCommand(t *testing.T) {
	for _, c := range []struct {
		argv0 string
		sig   unix.Signal
	}{
		{"/usr/sbin/reboot", unix.SIGTERM},
		{"poweroff", unix.SIGUSR2},
		{"/sbin/halt", unix.SIGUSR2},
	} {
		if !isPowerCommand(c.argv0) {
			t.Errorf("%s: not a power command", c.argv0)
		}
		var got []unix.Signal
		var stdout, stderr bytes.Buffer
		code := powerCommand([]string{c.argv0, "-f"}, &stdout, &stderr, func(pid int, sig unix.Signal) error {
			if pid != 1 {
				t.Errorf("%s: signalled pid %d", c.argv0, pid)
			}
			got = append(got, sig)
			return nil
		})
		if code != 0 || len(got) != 1 || got[0] != c.sig {
			t.Errorf("%s: exit %d, signals %v, want %v", c.argv0, code, got, c.sig)
		}
	}
	if isPowerCommand("/usr/lib/ballast/init") || isPowerCommand("init") {
		t.Error("init itself taken for a power command")
	}

	// Not root: says so, exit 1.
	var stderr bytes.Buffer
	code := powerCommand([]string{"reboot"}, &bytes.Buffer{}, &stderr, func(int, unix.Signal) error { return unix.EPERM })
	if code != 1 || !strings.Contains(stderr.String(), "only root may reboot") {
		t.Errorf("EPERM: exit %d, %q", code, stderr.String())
	}
	// --help signals nothing.
	var stdout bytes.Buffer
	code = powerCommand([]string{"poweroff", "--help"}, &stdout, &bytes.Buffer{}, func(int, unix.Signal) error {
		t.Error("--help signalled init")
		return nil
	})
	if code != 0 || !strings.Contains(stdout.String(), "usage: poweroff") {
		t.Errorf("--help: exit %d, %q", code, stdout.String())
	}
}
