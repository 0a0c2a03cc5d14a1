package k3s

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

type fakeHost struct {
	loaded  []string
	sysctls map[string]string
	files   map[string]string
	missing map[string]bool // modules modprobe fails on
}

func (h *fakeHost) modprobe(name string) error {
	if h.missing[name] {
		return errors.New("modprobe " + name + ": not found")
	}
	h.loaded = append(h.loaded, name)
	return nil
}

func (h *fakeHost) writeSysctl(k, v string) error {
	if h.sysctls == nil {
		h.sysctls = map[string]string{}
	}
	h.sysctls[k] = v
	return nil
}

func (h *fakeHost) readFile(p string) ([]byte, error) {
	if v, ok := h.files[p]; ok {
		return []byte(v), nil
	}
	return nil, os.ErrNotExist
}

func TestSetupNodeLoadsModulesAndSysctls(t *testing.T) {
	h := &fakeHost{files: map[string]string{"/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n"}, missing: map[string]bool{"iptable_nat": true}}
	warn := setupNode(h)
	for _, m := range []string{"overlay", "br_netfilter", "nf_conntrack"} {
		if !slices.Contains(h.loaded, m) {
			t.Errorf("module %s not loaded (%v)", m, h.loaded)
		}
	}
	if h.sysctls["net.ipv4.ip_forward"] != "1" || h.sysctls["net.bridge.bridge-nf-call-iptables"] != "1" {
		t.Errorf("sysctls = %v", h.sysctls)
	}
	if len(warn) != 1 || !strings.Contains(warn[0], "iptable_nat") {
		t.Errorf("warnings = %q; want one about iptable_nat", warn)
	}
}

// The cgroup messages are k3s's words, which users search for.
func TestCgroupProblem(t *testing.T) {
	for _, c := range []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{"/sys/fs/cgroup/cgroup.controllers": "cpu io memory"}, ""},
		{map[string]string{"/sys/fs/cgroup/cgroup.controllers": "cpu io"}, "failed to find memory cgroup (v2)"},
		{map[string]string{"/proc/cgroups": "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t1\t0\n"}, "cgroup_memory=1 cgroup_enable=memory"},
		{map[string]string{"/proc/cgroups": "memory\t3\t1\t1\n"}, ""},
	} {
		got := cgroupProblem(&fakeHost{files: c.files})
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%v: %q; want %q", c.files, got, c.want)
		}
	}
}

func TestHasCapability(t *testing.T) {
	h := fakeStatus("Name:\tk3s\nCapEff:\t000001fffeffffff\n")
	if hasCapability(h, capSysResource) {
		t.Error("CAP_SYS_RESOURCE is not in 000001fffeffffff")
	}
	if !hasCapability(h, 21) {
		t.Error("CAP_SYS_ADMIN is in 000001fffeffffff")
	}
	if !hasCapability(fakeStatus("Name:\tk3s\n"), capSysResource) {
		t.Error("an unreadable set must not restrict the node")
	}
}

func TestInUserNS(t *testing.T) {
	for m, want := range map[string]bool{
		"         0          0 4294967295\n":                                   false,
		"         0     100000      65536\n":                                   true,
		"         0       1000          1\n         1     100000      65536\n": true,
	} {
		if got := inUserNS(&fakeHost{files: map[string]string{"/proc/self/uid_map": m}}); got != want {
			t.Errorf("uid_map %q: inUserNS = %v", m, got)
		}
	}
	if inUserNS(&fakeHost{}) {
		t.Error("an unreadable uid_map is the host's")
	}
}

// fakeStatus is a host whose /proc/self/status is s.
type fakeStatus string

func (fakeStatus) modprobe(string) error             { return nil }
func (fakeStatus) writeSysctl(string, string) error  { return nil }
func (f fakeStatus) readFile(string) ([]byte, error) { return []byte(f), nil }

func TestStargzSupported(t *testing.T) {
	h := &fakeHost{files: map[string]string{"/proc/filesystems": "nodev\tsysfs\nnodev\tfuse\n\text4\n"}}
	if err := stargzSupported(h); err != nil || !slices.Contains(h.loaded, "fuse") {
		t.Errorf("with fuse: %v (loaded %v)", err, h.loaded)
	}
	h = &fakeHost{files: map[string]string{"/proc/filesystems": "nodev\tfuseblk\n\text4\n"}, missing: map[string]bool{"fuse": true}}
	if err := stargzSupported(h); err == nil || !strings.Contains(err.Error(), "modprobe fuse") || !strings.Contains(err.Error(), "use overlayfs") {
		t.Errorf("without fuse: %v", err)
	}
}
