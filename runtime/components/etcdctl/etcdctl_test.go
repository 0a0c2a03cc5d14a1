package etcdctl

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	none := func(string) (string, bool) { return "", false }
	if d := Defaults(nil, none, dir); d != nil {
		t.Errorf("no etcd certificates, defaults %v", d)
	}
	etcd := filepath.Join(dir, "server", "tls", "etcd")
	os.MkdirAll(etcd, 0o700)
	os.WriteFile(filepath.Join(etcd, "client.crt"), []byte("x"), 0o600)
	d := Defaults([]string{"member", "list"}, none, dir)
	if d["ETCDCTL_CACERT"] != filepath.Join(etcd, "server-ca.crt") || d["ETCDCTL_KEY"] != filepath.Join(etcd, "client.key") || d["ETCDCTL_ENDPOINTS"] != "https://127.0.0.1:2379" {
		t.Errorf("defaults %v", d)
	}
	// The seed's flags, or the user's variables, are never shadowed:
	// etcdctl refuses a flag and its variable together.
	d = Defaults([]string{"version", "--cacert=/a", "--cert", "/b", "--key=/c"}, func(k string) (string, bool) { return "x", k == "ETCDCTL_ENDPOINTS" }, dir)
	if len(d) != 0 {
		t.Errorf("defaults beside flags and variables: %v", d)
	}
}
