package k3s

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ballast-os/ballast/runtime/config"
)

// host is what node setup touches, injectable for tests.
type host interface {
	modprobe(name string) error
	writeSysctl(key, value string) error
	readFile(path string) ([]byte, error)
}

type realHost struct{}

func (realHost) modprobe(name string) error {
	if out, err := exec.Command("modprobe", name).CombinedOutput(); err != nil {
		return fmt.Errorf("modprobe %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (realHost) writeSysctl(key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return os.WriteFile(p, []byte(value), 0o644)
}

func (realHost) readFile(path string) ([]byte, error) { return os.ReadFile(path) }

// nodeModules and nodeSysctls are what k3s sets up before the kubelet
// starts (pkg/agent/syssetup).
var (
	nodeModules = []string{"overlay", "nf_conntrack", "br_netfilter", "iptable_nat", "iptable_filter"}
	nodeSysctls = [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
		{"net.bridge.bridge-nf-call-iptables", "1"},
		{"net.bridge.bridge-nf-call-ip6tables", "1"},
	}
)

// setupNode loads the kernel modules and sets the sysctls a node needs,
// and checks the memory cgroup; it returns warnings (a module built into
// the kernel, a sysctl the kernel lacks) rather than failing, as k3s does,
// except that the cgroup check's message is k3s's own words.
func setupNode(h host) []string {
	var warn []string
	for _, m := range nodeModules {
		if err := h.modprobe(m); err != nil {
			warn = append(warn, err.Error())
		}
	}
	for _, kv := range nodeSysctls {
		if err := h.writeSysctl(kv[0], kv[1]); err != nil {
			warn = append(warn, fmt.Sprintf("sysctl %s=%s: %v", kv[0], kv[1], err))
		}
	}
	if msg := cgroupProblem(h); msg != "" {
		warn = append(warn, msg)
	}
	return warn
}

// capSysResource is CAP_SYS_RESOURCE's bit.
const capSysResource = 24

// hasCapability reports whether this process holds capability bit in its
// effective set (true when the set cannot be read).
func hasCapability(h host, bit uint) bool {
	data, err := h.readFile("/proc/self/status")
	if err != nil {
		return true
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || mask&(1<<bit) != 0
		}
	}
	return true
}

// inUserNS reports whether this process runs in a user namespace other
// than the host's (what k3s's templates know as IsRunningInUserNS): the
// host's maps every uid to itself in one line, "0 0 4294967295". An
// unreadable map counts as the host's.
func inUserNS(h host) bool {
	data, err := h.readFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	return strings.Join(strings.Fields(string(data)), " ") != "0 0 4294967295"
}

// cgroupV1 reports a host without the unified cgroup hierarchy.
func cgroupV1(h host) bool {
	_, err := h.readFile("/sys/fs/cgroup/cgroup.controllers")
	return err != nil
}

// cgroupProblem is k3s's message when the memory cgroup is missing, or "".
func cgroupProblem(h host) string {
	if ctl, err := h.readFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		for _, c := range strings.Fields(string(ctl)) {
			if c == "memory" {
				return ""
			}
		}
		return "failed to find memory cgroup (v2)"
	}
	if data, err := h.readFile("/proc/cgroups"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) >= 4 && f[0] == "memory" && f[3] == "1" {
				return ""
			}
		}
	}
	return "Failed to find memory cgroup, you may need to add cgroup_memory=1 cgroup_enable=memory to your linux cmdline (/boot/cmdline.txt on a Raspberry Pi)"
}

// stargzSupported is k3s's check before it configures the stargz
// snapshotter, which mounts every lazily pulled layer with FUSE: the
// kernel must have it (loaded here when it is a module).
func stargzSupported(h host) error {
	loadErr := h.modprobe("fuse")
	data, err := h.readFile("/proc/filesystems")
	if err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == "fuse" {
				return nil
			}
		}
	}
	why := "fuse is not in /proc/filesystems"
	if loadErr != nil {
		why += " (" + loadErr.Error() + ")"
	}
	return &config.FieldError{Flag: "snapshotter", Value: "stargz", Err: fmt.Errorf("the stargz snapshotter mounts lazily pulled layers with FUSE, and this kernel has none: %s; use overlayfs (the default) or native", why)}
}
