package k3s

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// extendNoProxy gives the components k3s's proxy environment: with
// HTTP_PROXY or HTTPS_PROXY set, NO_PROXY (and no_proxy) get the cluster
// and service CIDRs, .svc and .<cluster-domain> appended, so that traffic
// inside the cluster never goes to the proxy. The components inherit the
// k3s process's environment; containerd's own CONTAINERD_* proxy
// variables (containerdEnv) are left as given.
func extendNoProxy(lookupEnv func(string) (string, bool), setenv func(string, string) error, log io.Writer, cidrs []netip.Prefix, domain string) error {
	proxied := false
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		if v, ok := lookupEnv(k); ok && v != "" {
			proxied = true
		}
	}
	if !proxied {
		return nil
	}
	cur, ok := lookupEnv("NO_PROXY")
	if !ok {
		cur, _ = lookupEnv("no_proxy")
	}
	v := noProxy(cur, cidrs, domain)
	for _, k := range []string{"NO_PROXY", "no_proxy"} {
		if err := setenv(k, v); err != nil {
			return err
		}
	}
	fmt.Fprintf(log, "proxy: NO_PROXY=%s\n", v)
	return nil
}

// noProxy is cur with the cluster's own destinations appended, each once.
func noProxy(cur string, cidrs []netip.Prefix, domain string) string {
	var out []string
	for _, e := range strings.Split(cur, ",") {
		if e = strings.TrimSpace(e); e != "" && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	if domain == "" {
		domain = "cluster.local"
	}
	add := []string{}
	for _, p := range cidrs {
		add = append(add, p.String())
	}
	add = append(add, ".svc", "."+strings.TrimPrefix(domain, "."))
	for _, e := range add {
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return strings.Join(out, ",")
}

func osSetenv(k, v string) error { return os.Setenv(k, v) }
