package k3s

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ballast-os/ballast/runtime/datadir"
)

func TestResolvConf(t *testing.T) {
	lay := datadir.Layout{Root: t.TempDir()}
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if s, ok := m[p]; ok {
				return []byte(s), nil
			}
			return nil, os.ErrNotExist
		}
	}
	for _, tc := range []struct {
		name  string
		flag  string
		files map[string]string
		want  string
		warn  bool
	}{
		{"flag wins", "/my/resolv.conf", map[string]string{"/etc/resolv.conf": "nameserver 10.0.0.1\n"}, "/my/resolv.conf", false},
		{"host", "", map[string]string{"/etc/resolv.conf": "search lan\nnameserver 192.168.1.1\n"}, "/etc/resolv.conf", false},
		{"resolved stub", "", map[string]string{"/etc/resolv.conf": "nameserver 127.0.0.53\n", "/run/systemd/resolve/resolv.conf": "nameserver 10.1.1.1\n"}, "/run/systemd/resolve/resolv.conf", false},
		{"docker embedded DNS", "", map[string]string{"/etc/resolv.conf": "nameserver 127.0.0.11\noptions ndots:0\n"}, filepath.Join(lay.Root, "agent/etc/resolv.conf"), true},
		{"air-gapped: none", "", map[string]string{"/etc/resolv.conf": "# no servers\n"}, filepath.Join(lay.Root, "agent/etc/resolv.conf"), true},
	} {
		got, warn, err := resolvConf(tc.flag, lay, files(tc.files))
		if err != nil || got != tc.want || (warn != "") != tc.warn {
			t.Errorf("%s: %q warn %q err %v, want %q", tc.name, got, warn, err, tc.want)
		}
	}
	if data, err := os.ReadFile(filepath.Join(lay.Root, "agent/etc/resolv.conf")); err != nil || string(data) != fallbackResolvConf {
		t.Errorf("fallback file %q %v", data, err)
	}
}
