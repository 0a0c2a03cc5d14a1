package cloudconfig

import (
	"slices"
	"strings"
	"testing"
)

// TestProxyEnv: the proxy block becomes k3s's environment, containerd's
// own variables included; a bad containerd proxy URL is an error that
// names the file, line and key.
func TestProxyEnv(t *testing.T) {
	cfg, err := Parse("user-data", []byte("#cloud-config\nproxy:\n  http_proxy: http://proxy.lan:3128\n  no_proxy: localhost\n"+
		"  containerd_https_proxy: http://registry-proxy.lan:3128\n  containerd_no_proxy: 10.0.0.0/8\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"HTTP_PROXY=http://proxy.lan:3128", "http_proxy=http://proxy.lan:3128", "NO_PROXY=localhost", "no_proxy=localhost",
		"CONTAINERD_HTTPS_PROXY=http://registry-proxy.lan:3128", "CONTAINERD_NO_PROXY=10.0.0.0/8"}
	if got := cfg.Proxy.Env(); !slices.Equal(got, want) {
		t.Errorf("Env() = %q, want %q", got, want)
	}
	if (*Proxy)(nil).Env() != nil {
		t.Error("no proxy block: want no environment")
	}
	_, err = Parse("user-data", []byte("#cloud-config\nproxy:\n  containerd_http_proxy: \"ftp://x\"\n"))
	if err == nil || !strings.Contains(err.Error(), "user-data:3") || !strings.Contains(err.Error(), "proxy.containerd_http_proxy") {
		t.Errorf("bad containerd_http_proxy: %v", err)
	}
}
