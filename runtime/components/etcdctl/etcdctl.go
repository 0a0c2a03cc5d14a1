// Package etcdctl is etcd's own etcdctl (go.etcd.io/etcd/etcdctl/v3, the
// version of the linked etcd) as a personality of the runtime's
// multi-call binary (/usr/bin/etcdctl), with one addition: on a server
// with embedded etcd it needs no flags. Where the user gives neither the
// flag nor its ETCDCTL_* variable, the endpoint is this server's etcd and
// the CA, certificate and key are k3s's etcd client files, so `etcdctl
// member list` works as it stands, and so does the documented
// `etcdctl version --cacert=... --cert=... --key=...` (etcdctl refuses a
// flag and its variable together, so the defaults are never exported).
package etcdctl

import (
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/etcd/etcdctl/v3/ctlv3"
)

// defaults are the flags given values when unset: flag -> file under
// server/tls/etcd (or the endpoint).
var defaults = []struct{ flag, value string }{
	{"endpoints", "https://127.0.0.1:2379"},
	{"cacert", "server-ca.crt"},
	{"cert", "client.crt"},
	{"key", "client.key"},
}

// Defaults returns the ETCDCTL_* variables to set for args, given the
// environment (lookup) and the k3s data dir: none when the data dir has
// no etcd client certificate.
func Defaults(args []string, lookup func(string) (string, bool), dataDir string) map[string]string {
	dir := filepath.Join(dataDir, "server", "tls", "etcd")
	if _, err := os.Stat(filepath.Join(dir, "client.crt")); err != nil {
		return nil
	}
	out := map[string]string{}
	for _, d := range defaults {
		env := "ETCDCTL_" + strings.ToUpper(d.flag)
		if _, set := lookup(env); set || hasFlag(args, d.flag) {
			continue
		}
		v := d.value
		if d.flag != "endpoints" {
			v = filepath.Join(dir, d.value)
		}
		out[env] = v
	}
	return out
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--"+name || strings.HasPrefix(a, "--"+name+"=") {
			return true
		}
	}
	return false
}

// Main runs etcdctl with args (what follows the name) and returns its
// exit code; etcdctl exits itself on errors.
func Main(args []string) int {
	dataDir := "/var/lib/rancher/k3s"
	if v, ok := os.LookupEnv("K3S_DATA_DIR"); ok && v != "" {
		dataDir = v
	}
	for k, v := range Defaults(args, os.LookupEnv, dataDir) {
		os.Setenv(k, v)
	}
	os.Args = append([]string{"etcdctl"}, args...)
	ctlv3.MustStart()
	return 0
}
