package k3s

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestExtendNoProxy(t *testing.T) {
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("10.43.0.0/16")}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // NO_PROXY afterwards; "" = untouched
	}{
		{"no proxy: nothing changes", map[string]string{"NO_PROXY": "example.com"}, ""},
		{"appended once", map[string]string{"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "127.0.0.1, example.com,.svc"},
			"127.0.0.1,example.com,.svc,10.42.0.0/16,10.43.0.0/16,.cluster.local"},
		{"lower-case names", map[string]string{"http_proxy": "http://proxy:3128", "no_proxy": "localhost"},
			"localhost,10.42.0.0/16,10.43.0.0/16,.svc,.cluster.local"},
		{"none given", map[string]string{"HTTP_PROXY": "http://proxy:3128"}, "10.42.0.0/16,10.43.0.0/16,.svc,.cluster.local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := map[string]string{}
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			var log bytes.Buffer
			if err := extendNoProxy(lookup, func(k, v string) error { set[k] = v; return nil }, &log, cidrs, "cluster.local"); err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if len(set) != 0 {
					t.Errorf("set %v without a proxy", set)
				}
				return
			}
			if set["NO_PROXY"] != tc.want || set["no_proxy"] != tc.want {
				t.Errorf("NO_PROXY=%q no_proxy=%q, want %q", set["NO_PROXY"], set["no_proxy"], tc.want)
			}
		})
	}
}
