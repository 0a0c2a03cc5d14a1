package checkconfig

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

// host is a fake machine: files, and iptables --version's answer.
func host(files map[string]string, iptables string) Host {
	m := fstest.MapFS{}
	for p, data := range files {
		mode := fs.FileMode(0o644)
		if strings.Contains(p, "bin/") || strings.Contains(p, "/cni/") {
			mode = 0o755
		}
		m[strings.TrimPrefix(p, "/")] = &fstest.MapFile{Data: []byte(data), Mode: mode}
	}
	return Host{
		ReadFile: func(p string) ([]byte, error) { return m.ReadFile(strings.TrimPrefix(p, "/")) },
		Stat:     func(p string) (fs.FileInfo, error) { return m.Stat(strings.TrimPrefix(p, "/")) },
		Output: func(name string, args ...string) ([]byte, error) {
			if iptables == "" {
				return nil, errors.New("not found")
			}
			return []byte(iptables + "\n"), nil
		},
		Getenv:  func(string) string { return "" },
		Release: "6.12.0-test",
	}
}

func fullConfig() string {
	var b strings.Builder
	for _, o := range append(Necessary, Optional...) {
		b.WriteString("CONFIG_" + strings.Split(o, "|")[0] + "=m\n")
	}
	b.WriteString("CONFIG_NAMESPACES=y\n# CONFIG_FOO is not set\n")
	return b.String()
}

func goodFiles() map[string]string {
	f := map[string]string{
		"/sys/fs/cgroup/cgroup.controllers":   "cpuset cpu io memory hugetlb pids rdma misc\n",
		"/proc/swaps":                         "Filename\tType\tSize\tUsed\tPriority\n",
		"/proc/sys/kernel/keys/root_maxkeys":  "1000000\n",
		"/usr/lib/modules/6.12.0-test/config": fullConfig(),
	}
	for _, b := range Binaries {
		f[b] = "\x7fELF"
	}
	return f
}

func TestPass(t *testing.T) {
	var out bytes.Buffer
	if n := Run(&out, host(goodFiles(), "iptables v1.8.11 (nf_tables)")); n != 0 {
		t.Fatalf("%d failures:\n%s", n, out.String())
	}
	for _, want := range []string{"info: reading kernel config from /usr/lib/modules/6.12.0-test/config", "- CONFIG_NAMESPACES: enabled\n",
		"- CONFIG_VXLAN: enabled (as module)", "- iptables: v1.8.11 (nf_tables): ok", "cgroups V2 mounted", "- swap: disabled", "STATUS: pass"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFailures(t *testing.T) {
	f := goodFiles()
	delete(f, "/usr/bin/containerd-shim-runc-v2")
	f["/sys/fs/cgroup/cgroup.controllers"] = "cpuset cpu io pids\n"
	f["/usr/lib/modules/6.12.0-test/config"] = strings.Replace(fullConfig(), "CONFIG_VXLAN=m\n", "", 1)
	f["/proc/swaps"] = "Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1024 0 -2\n"
	var out bytes.Buffer
	n := Run(&out, host(f, "iptables v1.8.4 (legacy)"))
	for _, want := range []string{"- /usr/bin/containerd-shim-runc-v2: missing (fail)", "missing controllers: memory (memory: add cgroup_enable=memory",
		"- CONFIG_VXLAN: missing (fail)", "releases 1.8.0 to 1.8.4 duplicate rules", "- swap: enabled", "STATUS: 4 (fail)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if n != 4 {
		t.Errorf("%d failures, want 4", n)
	}
}

// An alternative satisfies an option (iptables' legacy tables or nft's
// compat layer), and /proc/config.gz is read when there.
func TestAlternativesAndProcConfig(t *testing.T) {
	f := goodFiles()
	delete(f, "/usr/lib/modules/6.12.0-test/config")
	cfg := strings.Replace(fullConfig(), "CONFIG_IP_NF_FILTER=m\n", "", 1) + "CONFIG_NFT_COMPAT=m\n"
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(cfg))
	zw.Close()
	f["/proc/config.gz"] = gz.String()
	var out bytes.Buffer
	if n := Run(&out, host(f, "iptables v1.8.11 (nf_tables)")); n != 0 {
		t.Fatalf("%d failures:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "- CONFIG_IP_NF_FILTER (or CONFIG_NFT_COMPAT): enabled (CONFIG_NFT_COMPAT, as module)") ||
		!strings.Contains(out.String(), "reading kernel config from /proc/config.gz") {
		t.Errorf("report:\n%s", out.String())
	}
}

func TestNoKernelConfig(t *testing.T) {
	f := goodFiles()
	delete(f, "/usr/lib/modules/6.12.0-test/config")
	var out bytes.Buffer
	if n := Run(&out, host(f, "iptables v1.8.11 (nf_tables)")); n != 1 || !strings.Contains(out.String(), "kernel config: not found (looked in /proc/config.gz, /usr/lib/modules/6.12.0-test/config") {
		t.Errorf("%d failures:\n%s", n, out.String())
	}
}
