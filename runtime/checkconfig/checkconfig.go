// Package checkconfig is `k3s check-config`: it checks that this machine
// can run the node — the runtime's executables, the system (iptables,
// swap), the cgroup controllers and the kernel's configuration — and says
// what is missing, as k3s's check-config does (sections "Verifying
// binaries", "System", "Limits", "Generally Necessary", "Optional
// Features", then "STATUS: pass" or the number of failures). The lists
// are what ballast's runtime uses: flannel (vxlan, host-gw), the bridge,
// portmap and bandwidth CNI plugins, kube-proxy's iptables rules,
// containerd's overlay snapshotter.
package checkconfig

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Host is what the checks read; Real is this machine.
type Host struct {
	ReadFile func(string) ([]byte, error)
	Stat     func(string) (fs.FileInfo, error)
	// Output runs a command and returns its standard output.
	Output func(name string, args ...string) ([]byte, error)
	Getenv func(string) string
	// Release is the running kernel's version (uname -r).
	Release string
}

// Real is the host this runs on.
func Real() Host {
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return Host{
		ReadFile: os.ReadFile,
		Stat:     os.Stat,
		Output:   func(name string, args ...string) ([]byte, error) { return exec.Command(name, args...).Output() },
		Getenv:   os.Getenv,
		Release:  strings.TrimSpace(string(rel)),
	}
}

// Binaries are the executables the runtime runs besides itself.
var Binaries = []string{
	"/usr/bin/k3s", "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/runc",
	"/usr/lib/ballast/bin/crictl",
	"/usr/lib/ballast/cni/bridge", "/usr/lib/ballast/cni/host-local", "/usr/lib/ballast/cni/loopback",
	"/usr/lib/ballast/cni/portmap", "/usr/lib/ballast/cni/bandwidth", "/usr/lib/ballast/cni/flannel",
	"/usr/sbin/ipset", "/usr/sbin/conntrack",
}

// Necessary kernel options: without one of them pods or their network do
// not work. An alternative is written a|b (either will do).
var Necessary = []string{
	"NAMESPACES", "NET_NS", "PID_NS", "IPC_NS", "UTS_NS",
	"CGROUPS", "CGROUP_CPUACCT", "CGROUP_DEVICE", "CGROUP_FREEZER", "CGROUP_SCHED", "CPUSETS", "MEMCG",
	"KEYS", "VETH", "BRIDGE", "BRIDGE_NETFILTER",
	"NETFILTER_XTABLES", "NF_NAT", "NF_CONNTRACK", "NETFILTER_XT_MATCH_ADDRTYPE", "NETFILTER_XT_MATCH_CONNTRACK",
	"NETFILTER_XT_MATCH_COMMENT", "NETFILTER_XT_MATCH_MULTIPORT", "NETFILTER_XT_MATCH_STATISTIC", "NETFILTER_XT_MARK",
	"NETFILTER_XT_NAT", "NETFILTER_XT_TARGET_MASQUERADE", "IP_NF_IPTABLES|NFT_COMPAT", "IP_NF_FILTER|NFT_COMPAT",
	"IP_NF_NAT|NFT_NAT", "NF_TABLES|IP_NF_IPTABLES",
	"IP_SET", "IP_SET_HASH_IP", "IP_SET_HASH_NET",
	"VXLAN", "OVERLAY_FS", "POSIX_MQUEUE",
}

// Optional kernel options: features some workloads or settings use.
var Optional = []string{
	"USER_NS", "SECCOMP", "SECCOMP_FILTER", "CGROUP_PIDS", "BLK_CGROUP", "BLK_DEV_THROTTLING", "CGROUP_PERF",
	"CGROUP_HUGETLB", "NET_CLS_CGROUP", "CGROUP_NET_PRIO", "CFS_BANDWIDTH", "FAIR_GROUP_SCHED",
	"IP6_NF_IPTABLES|NFT_COMPAT", "IP6_NF_FILTER|NFT_COMPAT", "IP6_NF_NAT|NFT_NAT",
	"NET_SCH_TBF", "IFB", "NETFILTER_XT_MATCH_PHYSDEV", "NETFILTER_XT_MATCH_LIMIT", "NETFILTER_XT_SET",
	"NETFILTER_NETLINK_LOG", "NETFILTER_XT_TARGET_NFLOG", "SECURITY_SELINUX", "SECURITY_APPARMOR",
	"EXT4_FS", "EXT4_FS_POSIX_ACL", "EXT4_FS_SECURITY",
}

// badIPTables are iptables releases known to duplicate or mangle rules
// (k3s #3117): 1.8.0 to 1.8.4.
var badIPTables = regexp.MustCompile(`^v1\.8\.[0-4]\b`)

type checker struct {
	w     io.Writer
	h     Host
	fails int
}

func (c *checker) ok(label, msg string) { fmt.Fprintf(c.w, "- %s: %s\n", label, msg) }
func (c *checker) fail(label, msg string) {
	c.fails++
	fmt.Fprintf(c.w, "- %s: %s (fail)\n", label, msg)
}
func (c *checker) warn(label, msg string) { fmt.Fprintf(c.w, "- %s: %s (warning)\n", label, msg) }

// Run writes the report to w and returns the number of failures.
func Run(w io.Writer, h Host) int {
	c := &checker{w: w, h: h}
	fmt.Fprintln(w, "Verifying binaries:")
	for _, b := range Binaries {
		st, err := h.Stat(b)
		switch {
		case err != nil:
			c.fail(b, "missing")
		case !st.Mode().IsRegular() || st.Mode()&0o111 == 0:
			c.fail(b, "not an executable file")
		default:
			c.ok(b, "ok")
		}
	}

	fmt.Fprintln(w, "\nSystem:")
	c.iptables()
	if data, err := h.ReadFile("/proc/swaps"); err == nil && len(bytes.Split(bytes.TrimSpace(data), []byte("\n"))) > 1 {
		c.warn("swap", "enabled; the kubelet runs with failSwapOn=false and does not use it (k3s: should be disabled)")
	} else {
		c.ok("swap", "disabled")
	}

	fmt.Fprintln(w, "\nLimits:")
	if data, err := h.ReadFile("/proc/sys/kernel/keys/root_maxkeys"); err == nil {
		c.ok("/proc/sys/kernel/keys/root_maxkeys", strings.TrimSpace(string(data)))
	}

	cfg, from := c.kernelConfig()
	fmt.Fprintln(w, "\nGenerally Necessary:")
	c.cgroups()
	if cfg == nil {
		c.fail("kernel config", "not found (looked in "+from+"); set CONFIG=/path/to/the/kernel/.config")
	} else {
		for _, o := range Necessary {
			if v := value(cfg, o); v == "" {
				c.fail(label(o), "missing")
			} else {
				c.ok(label(o), v)
			}
		}
		fmt.Fprintln(w, "\nOptional Features:")
		for _, o := range Optional {
			if v := value(cfg, o); v == "" {
				c.ok(label(o), "missing")
			} else {
				c.ok(label(o), v)
			}
		}
	}
	fmt.Fprintln(w)
	if c.fails == 0 {
		fmt.Fprintln(w, "STATUS: pass")
	} else {
		fmt.Fprintf(w, "STATUS: %d (fail)\n", c.fails)
	}
	return c.fails
}

// label is an option as the report names it: CONFIG_A (or CONFIG_B).
func label(o string) string {
	first, rest, alt := strings.Cut(o, "|")
	if !alt {
		return "CONFIG_" + o
	}
	return "CONFIG_" + first + " (or CONFIG_" + strings.ReplaceAll(rest, "|", ", CONFIG_") + ")"
}

// value is how the config has option o (or the first of its
// alternatives it has): "enabled" or "enabled (as module)", "" when none.
func value(cfg map[string]string, o string) string {
	for _, alt := range strings.Split(o, "|") {
		switch cfg["CONFIG_"+alt] {
		case "y":
			if alt != strings.Split(o, "|")[0] {
				return "enabled (CONFIG_" + alt + ")"
			}
			return "enabled"
		case "m":
			if alt != strings.Split(o, "|")[0] {
				return "enabled (CONFIG_" + alt + ", as module)"
			}
			return "enabled (as module)"
		}
	}
	return ""
}

func (c *checker) iptables() {
	out, err := c.h.Output("iptables", "--version")
	if err != nil {
		c.fail("iptables", "not found: kube-proxy and flannel need it")
		return
	}
	// "iptables v1.8.11 (nf_tables)"
	f := strings.Fields(strings.TrimSpace(string(out)))
	if len(f) < 2 {
		c.fail("iptables", fmt.Sprintf("unexpected version output %q", out))
		return
	}
	mode := "legacy"
	if len(f) > 2 {
		mode = strings.Trim(f[2], "()")
	}
	if badIPTables.MatchString(f[1]) {
		c.fail("iptables", fmt.Sprintf("%s (%s): releases 1.8.0 to 1.8.4 duplicate rules (k3s #3117); use 1.8.5 or later", f[1], mode))
		return
	}
	c.ok("iptables", fmt.Sprintf("%s (%s): ok", f[1], mode))
}

// cgroups checks the controllers the kubelet needs: on v2 in the root's
// cgroup.controllers, on v1 as mounted hierarchies.
func (c *checker) cgroups() {
	if data, err := c.h.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		have := strings.Fields(string(data))
		var missing []string
		for _, k := range []string{"cpu", "cpuset", "memory", "pids"} {
			if !contains(have, k) {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			c.fail("cgroup hierarchy", "cgroups V2 mounted, missing controllers: "+strings.Join(missing, ", ")+
				" (memory: add cgroup_enable=memory cgroup_memory=1 to the kernel command line)")
			return
		}
		c.ok("cgroup hierarchy", "cgroups V2 mounted, cpu|cpuset|memory|pids controllers status: good")
		return
	}
	data, err := c.h.ReadFile("/proc/self/cgroup")
	if err != nil {
		c.fail("cgroup hierarchy", "no cgroup hierarchy found")
		return
	}
	var have []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if f := strings.SplitN(sc.Text(), ":", 3); len(f) == 3 {
			have = append(have, strings.Split(f[1], ",")...)
		}
	}
	var missing []string
	for _, k := range []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "pids"} {
		if !contains(have, k) {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		c.fail("cgroup hierarchy", "cgroups V1 mounted, missing controllers: "+strings.Join(missing, ", "))
		return
	}
	c.ok("cgroup hierarchy", "cgroups V1 mounted, cpu|cpuacct|cpuset|memory|devices|freezer|pids controllers status: good")
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// kernelConfig reads the running kernel's configuration from $CONFIG,
// /proc/config.gz or the usual files; it returns nil and the places it
// looked when there is none.
func (c *checker) kernelConfig() (map[string]string, string) {
	var paths []string
	if p := c.h.Getenv("CONFIG"); p != "" {
		paths = append(paths, p)
	}
	paths = append(paths, "/proc/config.gz",
		"/usr/lib/modules/"+c.h.Release+"/config", "/boot/config-"+c.h.Release,
		"/usr/src/linux-"+c.h.Release+"/.config", "/usr/src/linux/.config")
	for _, p := range paths {
		data, err := c.h.ReadFile(p)
		if err != nil {
			continue
		}
		if filepath.Ext(p) == ".gz" {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				continue
			}
			if data, err = io.ReadAll(io.LimitReader(zr, 16<<20)); err != nil {
				continue
			}
		}
		fmt.Fprintf(c.w, "\ninfo: reading kernel config from %s ...\n", p)
		return parse(data), ""
	}
	return nil, strings.Join(paths, ", ")
}

func parse(data []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			m[k] = strings.Trim(v, `"`)
		}
	}
	return m
}
