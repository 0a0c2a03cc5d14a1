package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/init/bootstep"
	"github.com/ballast-os/ballast/init/cmdline"
	"github.com/ballast-os/ballast/init/console"
	"github.com/ballast-os/ballast/init/datasource"
	"github.com/ballast-os/ballast/init/state"
)

type nopMounter struct{ calls []string }

func (m *nopMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	m.calls = append(m.calls, source+" "+target+" "+fstype)
	return nil
}
func (m *nopMounter) Unmount(string, int) error { return nil }

func testSystem(t *testing.T) *system {
	s := newSystem(slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard, console.NewRing(10), time.Now())
	s.root = t.TempDir()
	s.mnt = &nopMounter{}
	return s
}

func TestParseCmdline(t *testing.T) {
	got := cmdline.Parse(`BOOT_IMAGE=/ballast/vmlinuz console=ttyS0,115200 ballast.slot=A quiet ballast.config_url="http://h/a b"` + "\n")
	want := map[string]string{"BOOT_IMAGE": "/ballast/vmlinuz", "console": "ttyS0,115200", "ballast.slot": "A", "quiet": "", "ballast.config_url": "http://h/a b"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add(`a=b "c d"=e ballast.live=1`)
	f.Fuzz(func(t *testing.T, s string) { cmdline.Parse(s) })
}

func TestSetupCgroupsReportsMissingControllers(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "sys/fs/cgroup")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte("cpuset cpu io pids\n"), 0o644)
	m := &nopMounter{}
	cg, err := setupCgroups(m, root)
	if err == nil || !strings.Contains(err.Error(), "memory") {
		t.Fatalf("err = %v", err)
	}
	if !reflect.DeepEqual(cg.Missing, []string{"memory"}) || cg.Version != 2 || len(m.calls) != 0 {
		t.Fatalf("cg = %+v, mounts %v", cg, m.calls)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if string(b) != "+cpu +cpuset +pids" {
		t.Fatalf("subtree_control = %q", b)
	}
	// Not mounted yet: the step mounts cgroup2 first.
	root2 := t.TempDir()
	if _, err := setupCgroups(m, root2); err == nil || len(m.calls) != 1 || !strings.HasSuffix(m.calls[0], "/sys/fs/cgroup cgroup2") {
		t.Fatalf("unmounted: err=%v calls=%v", err, m.calls)
	}
}

func TestSysctlsAndModules(t *testing.T) {
	cfg := &cloudconfig.Config{
		Ballast: &cloudconfig.Ballast{Sysctls: map[string]string{"vm.max_map_count": "262144", "net.ipv4.ip_forward": "0"}, Modules: []string{"wireguard", "vxlan"}},
		K3OS:    &cloudconfig.K3OS{Modules: []string{"kvm"}},
	}
	kv := sysctlsFor(cfg)
	if kv["net.ipv4.ip_forward"] != "0" || kv["vm.max_map_count"] != "262144" || kv["net.bridge.bridge-nf-call-iptables"] != "1" {
		t.Fatalf("sysctls = %v", kv)
	}
	procSys := t.TempDir()
	os.MkdirAll(filepath.Join(procSys, "net/ipv4"), 0o755)
	os.MkdirAll(filepath.Join(procSys, "vm"), 0o755)
	err := writeSysctls(procSys, map[string]string{"net.ipv4.ip_forward": "1", "vm.max_map_count": "5", "net.bridge.x": "1", "a..b": "1"})
	if err == nil || !strings.Contains(err.Error(), "net.bridge.x") || !strings.Contains(err.Error(), `"a..b"`) {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(procSys, "vm/max_map_count")); string(b) != "5" {
		t.Fatalf("max_map_count = %q", b)
	}
	mods := modulesFor(cfg)
	if strings.Join(mods, ",") != "overlay,nf_conntrack,br_netfilter,iptable_nat,iptable_filter,vxlan,kvm,wireguard" {
		t.Fatalf("modules = %v", mods)
	}
}

func TestDefaultHostname(t *testing.T) {
	ifs := []net.Interface{
		{Name: "lo", Flags: net.FlagLoopback},
		{Name: "eth1", HardwareAddr: net.HardwareAddr{2, 0, 0, 0xaa, 0xbb, 0xcc}},
		{Name: "eth0", HardwareAddr: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}},
	}
	if got := defaultHostname(ifs); got != "ballast-123456" {
		t.Fatalf("got %s", got)
	}
	if got := defaultHostname(nil); got != "ballast" {
		t.Fatalf("no NIC: %s", got)
	}
}

// testSystemWithState is testSystem with a state database.
func testSystemWithState(t *testing.T) *system {
	s := testSystem(t)
	db, _, err := state.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s.db = db
	return s
}

func TestBrokenConfigUsesLastGood(t *testing.T) {
	s := testSystemWithState(t)
	good := []datasource.Source{{Name: "baked", Path: "/run/ballast/baked.yaml", Data: []byte("#cloud-config\nhostname: node1\n")}}
	cfg, info := parseSources(good)
	if err := s.applyConfigChoice(cfg, info, configChoice{}); err != nil {
		t.Fatal(err)
	}
	if s.cfg.Hostname != "node1" || s.cfgInfo.Generation != 1 || s.cfgInfo.Hash == "" {
		t.Fatalf("good: cfg=%+v info=%+v", s.cfg, s.cfgInfo)
	}
	s.cfgInfo.Sources = nil
	bad := append(good, datasource.Source{Name: "fw_cfg", Path: "opt/ballast/user-data", Data: []byte("#cloud-config\nhostnme: typo\n")})
	cfg, info = parseSources(bad)
	err := s.applyConfigChoice(cfg, info, configChoice{})
	if err == nil {
		t.Fatal("broken config accepted")
	}
	if s.cfg.Hostname != "node1" || !s.cfgInfo.UsedLastGood || len(s.cfgInfo.Errors) == 0 {
		t.Fatalf("bad: cfg=%+v info=%+v", s.cfg, s.cfgInfo)
	}
	if !strings.HasPrefix(s.cfgInfo.Errors[0], "fw_cfg: ") || !strings.Contains(s.cfgInfo.Errors[0], "hostnme") {
		t.Fatalf("errors = %q", s.cfgInfo.Errors)
	}
	if s.cfgInfo.Sources[1].Error == "" || s.cfgInfo.Sources[0].Error != "" {
		t.Fatalf("sources = %+v", s.cfgInfo.Sources)
	}
}

func TestRunCmdOncePerInstance(t *testing.T) {
	s := testSystem(t)
	dbPath := filepath.Join(t.TempDir(), "state.db")
	db, _, _ := state.Open(dbPath)
	s.db = db
	counter := filepath.Join(t.TempDir(), "count")
	s.cfg = &cloudconfig.Config{RunCmd: []cloudconfig.Command{
		{Shell: "echo x >> " + counter},
		{Argv: []string{"false"}},
	}}
	err := s.runCmdOnce(context.Background())
	if err == nil || !strings.Contains(err.Error(), "1 of 2") {
		t.Fatalf("first boot: %v", err)
	}
	// Second boot, database reopened.
	db.Close()
	db, _, _ = state.Open(dbPath)
	defer db.Close()
	s.db = db
	if err := s.runCmdOnce(context.Background()); err == nil || !strings.Contains(err.Error(), "skipped") {
		t.Fatalf("second boot: %v", err)
	}
	// A new instance_id runs it again.
	s.cfg.InstanceID = "i-2"
	s.runCmdOnce(context.Background())
	if b, _ := os.ReadFile(counter); string(b) != "x\nx\n" {
		t.Fatalf("ran %q", b)
	}
	if err := s.bootCmd(context.Background()); err == nil {
		t.Fatal("empty bootcmd not skipped")
	}
}

func TestWriteRuntimeConfig(t *testing.T) {
	root := t.TempDir()
	cfg := &cloudconfig.Config{K3s: map[string]any{"token": "secret"}, Manifests: []cloudconfig.Manifest{{Name: "a.yaml", Content: "kind: X\n"}}}
	if err := writeRuntimeConfig(root, cfg); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(root, "etc/rancher/k3s/config.yaml"))
	if !strings.Contains(string(b), "token: secret") {
		t.Fatalf("config.yaml = %s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "var/lib/rancher/k3s/server/manifests/a.yaml")); string(b) != "kind: X\n" {
		t.Fatalf("manifest = %q", b)
	}
	cfg.Manifests[0].Name = "../evil"
	if err := writeRuntimeConfig(root, cfg); err == nil {
		t.Fatal("path manifest name accepted")
	}
}

func TestSystemStepTableOrder(t *testing.T) {
	var names []string
	for _, st := range testSystem(t).steps() {
		names = append(names, st.Name)
	}
	want := "mounts,devices,watchdog,data-partition,cgroups,state,cloud-config,modules,sysctls,hostname,network,time,config-url,users,write-files,bootcmd,services,runcmd"
	if strings.Join(names, ",") != want {
		t.Fatalf("steps = %s", strings.Join(names, ","))
	}
	_ = bootstep.PhaseSystem
}

func TestFindInputDevice(t *testing.T) {
	dir := t.TempDir()
	for n, name := range map[string]string{"event0": "AT Translated Set 2 keyboard", "event1": "Power Button"} {
		os.MkdirAll(filepath.Join(dir, n, "device"), 0o755)
		os.WriteFile(filepath.Join(dir, n, "device/name"), []byte(name+"\n"), 0o644)
	}
	if got := findInputDevice(dir, "Power Button"); got != "event1" {
		t.Fatalf("got %q", got)
	}
}

func TestMemoryFromProc(t *testing.T) {
	dir := t.TempDir()
	mi := filepath.Join(dir, "meminfo")
	st := filepath.Join(dir, "status")
	os.WriteFile(mi, []byte("MemTotal:        1000000 kB\nMemFree:          800000 kB\nMemAvailable:     850000 kB\nBuffers:            1000 kB\nCached:            20000 kB\nSReclaimable:       4000 kB\n"), 0o644)
	os.WriteFile(st, []byte("Name:\tinit\nVmRSS:\t   18000 kB\n"), 0o644)
	m := memory(mi, st)
	const k = 1024
	if m.Total != 1000000*k || m.Used != 150000*k || m.Free != 800000*k || m.Cache != 25000*k || m.UsedNoCache != 175000*k || m.InitRSS != 18000*k {
		t.Fatalf("memory = %+v", m)
	}
}

// With ballast.config_url, the config merged before the network is up is
// not recorded as a good generation; when a later boot cannot fetch the
// URL, the fallback is the last generation that had it (an agent stays an
// agent), not the local-only config.
func TestConfigURLGenerations(t *testing.T) {
	s := testSystemWithState(t)
	db := s.db
	local := []datasource.Source{{Name: "baked", Path: "/run/ballast/baked.yaml", Data: []byte("#cloud-config\nhostname: node1\n")}}
	viaURL := append(local, datasource.Source{Name: datasource.NameCmdlineURL, Path: "https://cfg/x", Data: []byte("#cloud-config\nk3s:\n  server: https://10.0.0.1:6443\n  token: secret\n")})
	failed := append(local, datasource.Source{Name: datasource.NameCmdlineURL, Path: "https://cfg/x", Err: errors.New("connection refused")})
	apply := func(srcs []datasource.Source, choice configChoice) error {
		s.cfgInfo.Sources = nil
		cfg, info := parseSources(srcs)
		return s.applyConfigChoice(cfg, info, choice)
	}
	// First boot: local (provisional), then the URL.
	if err := apply(local, configChoice{provisional: true, need: datasource.NameCmdlineURL}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.LastGoodConfig(); !errors.Is(err, state.ErrNoConfig) {
		t.Fatalf("the provisional local config was recorded: %v", err)
	}
	if err := apply(viaURL, configChoice{need: datasource.NameCmdlineURL}); err != nil {
		t.Fatal(err)
	}
	// A later boot: local again (provisional), then the URL fails.
	if err := apply(local, configChoice{provisional: true, need: datasource.NameCmdlineURL}); err != nil {
		t.Fatal(err)
	}
	if err := apply(failed, configChoice{need: datasource.NameCmdlineURL}); err == nil {
		t.Fatal("a failed URL fetch was not reported")
	}
	if s.cfg.K3s["server"] != "https://10.0.0.1:6443" || !s.cfgInfo.UsedLastGood {
		t.Errorf("after a failed fetch: k3s %v, info %+v; want the generation that had the URL (an agent)", s.cfg.K3s, s.cfgInfo)
	}
}
