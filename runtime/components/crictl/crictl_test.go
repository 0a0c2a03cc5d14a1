package crictl

import (
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

type fakeInfo struct{ name string }

func (f fakeInfo) Name() string       { return f.name }
func (f fakeInfo) Size() int64        { return 0 }
func (f fakeInfo) Mode() fs.FileMode  { return 0o755 }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return false }
func (f fakeInfo) Sys() any           { return nil }

func statOf(paths ...string) func(string) (os.FileInfo, error) {
	return func(p string) (os.FileInfo, error) {
		if slices.Contains(paths, p) {
			return fakeInfo{p}, nil
		}
		return nil, &fs.PathError{Op: "stat", Path: p, Err: fs.ErrNotExist}
	}
}

const cfg = "/var/lib/rancher/k3s/agent/etc/crictl.yaml"

func TestCommandDefaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
		exists  []string
		want    []string // environment entries that must be there
		notWant string   // an entry prefix that must not be there
	}{
		{"agent wrote its config", []string{"PATH=/usr/bin"}, []string{Path, cfg},
			[]string{"PATH=/usr/bin", "CRI_CONFIG_FILE=" + cfg}, "CONTAINER_RUNTIME_ENDPOINT="},
		{"no agent yet: k3s's socket", nil, []string{Path},
			[]string{"CRI_CONFIG_FILE=" + cfg, "CONTAINER_RUNTIME_ENDPOINT=unix:///run/k3s/containerd/containerd.sock"}, ""},
		{"the user's config wins", []string{"CRI_CONFIG_FILE=/etc/crictl.yaml"}, []string{Path},
			[]string{"CRI_CONFIG_FILE=/etc/crictl.yaml"}, "CONTAINER_RUNTIME_ENDPOINT="},
		{"the user's endpoint wins", []string{"CONTAINER_RUNTIME_ENDPOINT=unix:///x.sock"}, []string{Path},
			[]string{"CRI_CONFIG_FILE=" + cfg, "CONTAINER_RUNTIME_ENDPOINT=unix:///x.sock"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			argv, env, err := command([]string{"ps", "-a"}, tc.environ, statOf(tc.exists...))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(argv, []string{"crictl", "ps", "-a"}) {
				t.Errorf("argv = %q", argv)
			}
			for _, w := range tc.want {
				if !slices.Contains(env, w) {
					t.Errorf("env %q lacks %q", env, w)
				}
			}
			for _, e := range env {
				if tc.notWant != "" && strings.HasPrefix(e, tc.notWant) {
					t.Errorf("env %q has %s", env, e)
				}
			}
		})
	}
}

func TestCommandWithoutBinary(t *testing.T) {
	_, _, err := command([]string{"ps"}, nil, statOf())
	if err == nil || err.Error() != Path+" is missing: the image carries cri-tools' crictl there" {
		t.Fatalf("err = %v", err)
	}
}
