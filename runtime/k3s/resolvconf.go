package k3s

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/datadir"
)

// hostResolvConfs are the files k3s looks in, in order, for the
// nameservers pods get (the second is systemd-resolved's real servers
// behind its 127.0.0.53 stub).
var hostResolvConfs = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}

// fallbackResolvConf is what k3s writes when the host has no usable
// nameserver: CoreDNS needs an upstream that is not itself.
const fallbackResolvConf = "nameserver 8.8.8.8\n"

// usableResolvConf reports whether data names a nameserver a pod can use:
// a unicast address that is not loopback (in a pod, 127.0.0.x is the pod
// itself: CoreDNS would forward to itself and stop on its loop check).
func usableResolvConf(data []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err == nil && a.IsGlobalUnicast() && !a.IsLoopback() {
			return true
		}
	}
	return false
}

// resolvConf is the resolv.conf the kubelet hands to pods, as k3s picks
// it: --resolv-conf when given; else the first of hostResolvConfs with a
// usable nameserver; else agent/etc/resolv.conf, written with a public
// fallback (the node's air-gapped pods still resolve cluster names; only
// outside names fail). warn says why the fallback was needed.
func resolvConf(flag string, lay datadir.Layout, readFile func(string) ([]byte, error)) (path, warn string, err error) {
	if flag != "" {
		return flag, "", nil
	}
	for _, p := range hostResolvConfs {
		if data, err := readFile(p); err == nil && usableResolvConf(data) {
			return p, "", nil
		}
	}
	path = lay.AgentFile("etc/resolv.conf")
	if err := certs.WriteFile(path, []byte(fallbackResolvConf), 0o644); err != nil {
		return "", "", err
	}
	return path, fmt.Sprintf("%s has no usable nameserver (none, or only loopback ones that would point pods at themselves); pods get %s (nameserver 8.8.8.8)", strings.Join(hostResolvConfs, " and "), path), nil
}

// nodeResolvConf is resolvConf on the real host, warning on stderr.
func (a *app) nodeResolvConf(flag string, lay datadir.Layout) (string, error) {
	p, warn, err := resolvConf(flag, lay, os.ReadFile)
	if warn != "" {
		fmt.Fprintln(a.stderr, "warning:", warn)
	}
	return p, err
}
