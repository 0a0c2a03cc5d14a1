package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/init/accounts"
	"github.com/ballast-os/ballast/init/agent"
	"github.com/ballast-os/ballast/init/bootstep"
	"github.com/ballast-os/ballast/init/cmdline"
	"github.com/ballast-os/ballast/init/console"
	"github.com/ballast-os/ballast/init/datapart"
	"github.com/ballast-os/ballast/init/datasource"
	"github.com/ballast-os/ballast/init/kmod"
	"github.com/ballast-os/ballast/init/mounts"
	"github.com/ballast-os/ballast/init/network"
	"github.com/ballast-os/ballast/init/state"
	"github.com/ballast-os/ballast/init/supervise"
	"github.com/ballast-os/ballast/init/timesync"
	"github.com/ballast-os/ballast/init/watchdog"
	"github.com/ballast-os/ballast/init/writefiles"
)

// k3sModules are loaded on every node, as k3s expects them.
var k3sModules = []string{"overlay", "nf_conntrack", "br_netfilter", "iptable_nat", "iptable_filter", "vxlan"}

// baseSysctls are set before the config's own.
var baseSysctls = map[string]string{
	"net.ipv4.ip_forward":                 "1",
	"net.bridge.bridge-nf-call-iptables":  "1",
	"net.bridge.bridge-nf-call-ip6tables": "1",
}

// requiredControllers are the cgroup v2 controllers Kubernetes needs.
var requiredControllers = []string{"cpu", "cpuset", "memory", "pids"}

// system is the PID 1 stage's state. Fields written by the steps are read
// by the agent handler under mu.
type system struct {
	log   *slog.Logger
	out   io.Writer
	ring  *console.Ring
	root  string // "/"; tests use a temporary directory
	mnt   mounts.Mounter
	run   *bootstep.Runner
	sup   *supervise.Supervisor
	reap  *supervise.Reaper
	start time.Time

	shutdown chan shutdownRequest

	mu        sync.Mutex
	boot      agent.Boot
	cfg       *cloudconfig.Config
	cfgInfo   agent.Config
	cgroups   agent.Cgroups
	db        *state.DB
	rootInfo  rootInfo
	data      datapart.Result
	bootNum   int
	hostname  string
	net       *network.State // nil until the network step ran
	cmdline   map[string]string
	bootIDHex string
	node      *agent.Node // nil until the runtime starts
	// nodeReady is closed when the node is first Ready in this boot; nil
	// when this boot runs no k3s.
	nodeReady chan struct{}
	trial     trial // the config generation on trial, if any
	// trialExempt says why this boot failed through no fault of its
	// config (notTheConfig); nil otherwise.
	trialExempt error
	// noCloud is this boot's NoCloud policy, and freshNode whether no
	// config was recorded before it (datasource.Env's FirstBoot).
	noCloud   string
	freshNode bool
	// wd is the armed hardware watchdog: nil until the watchdog step,
	// and on a machine without one.
	wd *watchdog.Watchdog
}

func newSystem(log *slog.Logger, out io.Writer, ring *console.Ring, kernelStart time.Time) *system {
	s := &system{
		log: log, out: out, ring: ring, root: "/", mnt: mounts.System{},
		start:    time.Now(),
		shutdown: make(chan shutdownRequest, 1),
		cfg:      &cloudconfig.Config{},
	}
	s.run = &bootstep.Runner{Phase: bootstep.PhaseSystem, Clock: bootstep.SystemClock{}, KernelStart: kernelStart, Log: log}
	s.sup = &supervise.Supervisor{LogDir: "/var/log", Console: out, Log: log}
	s.reap = &supervise.Reaper{Log: log}
	s.reap.Tick = s.petWatchdog
	var id [8]byte
	rand.Read(id[:])
	s.bootIDHex = hex.EncodeToString(id[:])
	s.boot = agent.Boot{ID: s.bootIDHex, KernelStart: kernelStart}
	return s
}

func (s *system) path(p string) string { return filepath.Join(s.root, p) }

// steps is the PID 1 boot, in order.
func (s *system) steps() []bootstep.Step {
	return []bootstep.Step{
		{Name: "mounts", Run: s.checkMounts},
		{Name: "devices", Run: s.coldplug},
		// As soon as its driver is loaded: from here a hung kernel or a
		// wedged PID 1 resets the board.
		{Name: "watchdog", Run: s.armWatchdog},
		// Not cancelled by a shutdown request: a format or a partition
		// table rewrite cut short is what bricks a node.
		{Name: "data-partition", Run: func(ctx context.Context) error { return s.dataPartition(context.WithoutCancel(ctx)) }},
		{Name: "cgroups", Run: s.setupCgroups},
		{Name: "state", Run: s.openState},
		{Name: "cloud-config", Run: s.gatherConfig},
		{Name: "modules", Run: s.loadModules},
		{Name: "sysctls", Run: s.applySysctls},
		{Name: "hostname", Run: s.setHostname},
		{Name: "network", Run: s.configureNetwork},
		{Name: "time", Run: s.syncTime},
		{Name: "config-url", Run: s.fetchConfigURL},
		{Name: "users", Run: s.applyUsers},
		{Name: "write-files", Run: s.writeFiles},
		{Name: "bootcmd", Run: s.bootCmd},
		{Name: "services", Run: s.startServices},
		{Name: "runcmd", Run: s.runCmdOnce},
	}
}

func runSystem(ctx context.Context, s *system) {
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	os.Setenv("HOME", "/root")
	// From now on ctrl-alt-del is a SIGINT to us, not an immediate reboot.
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	// Signals first: a request that arrives while booting waits in the channel.
	s.watchSignals(ctx)
	go s.reap.Run(ctx)
	s.log.Info("ballast init", "version", version, "phase", "system")
	s.run.Record(readStages(stagesFile)...)
	if b, err := os.ReadFile(rootFile); err == nil {
		json.Unmarshal(b, &s.rootInfo)
	}
	s.cmdline = readCmdline(s.path("/proc/cmdline"))
	// The agent starts before the boot steps so even a broken boot is reported.
	s.startAgent(ctx)

	early, err := runUntilShutdown(ctx, s.shutdown, func(ctx context.Context) error { return s.run.Run(ctx, s.steps()) })
	if early != nil {
		s.log.Warn("shutdown requested while booting: the boot steps were stopped", "why", early.why)
	}
	s.mu.Lock()
	s.boot.Ready = err == nil
	readyAfter := time.Since(s.boot.KernelStart).Milliseconds()
	if s.boot.Ready {
		s.boot.ReadyAfterMS = readyAfter
	}
	db, num := s.db, s.bootNum
	s.mu.Unlock()
	if early == nil {
		// Healthy needs every step done without an error: a bootcmd
		// that fails or a network that did not come up is a config that
		// does not work, even where the boot goes on.
		stepsOK := err == nil && !slices.ContainsFunc(s.run.Stages(), func(st agent.Stage) bool { return st.Error != "" })
		go s.superviseTrial(ctx, stepsOK)
	}
	result := "ready"
	if err != nil {
		result = "failed: " + err.Error()
		s.log.Error("boot failed", "err", err)
	} else {
		fmt.Fprintf(s.out, "%sready\n", console.Prefix)
		s.log.Info("boot done", "ready_after_ms", readyAfter)
	}
	if db != nil {
		if err := db.UpdateBoot(num, s.run.Stages(), result); err != nil {
			s.log.Error("recording boot", "err", err)
		}
	}
	if early != nil {
		s.doShutdown(*early)
		return
	}
	req := <-s.shutdown
	s.doShutdown(req)
}

// runUntilShutdown runs the boot steps with a context that a shutdown
// request cancels (a power button pressed during a 10-minute bootcmd must
// not wait for it), and returns the request that stopped them, if any.
//
// The steps' context is not cancelled when they end: services they start
// (the node watch, the agent) live on with it.
func runUntilShutdown(ctx context.Context, shutdown <-chan shutdownRequest, steps func(context.Context) error) (*shutdownRequest, error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	got := make(chan shutdownRequest, 1)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case r := <-shutdown:
			got <- r
			cancel()
		case <-done:
		}
	}()
	err := steps(ctx)
	close(done)
	<-watched
	select {
	case r := <-got:
		return &r, err
	default:
		return nil, err
	}
}

func readCmdline(path string) map[string]string {
	b, _ := os.ReadFile(path)
	return cmdline.Parse(string(b))
}

// checkMounts makes sure the pseudo file systems are there (a system booted
// without our initramfs has only what the kernel mounted).
func (s *system) checkMounts(context.Context) error {
	infos, err := mounts.ReadMountinfo(s.path("/proc/self/mountinfo"))
	if err != nil {
		// /proc itself is missing: mount the basics blind.
		return mounts.ApplyAll(s.mnt, s.root, pseudoMounts)
	}
	var errs []error
	for _, m := range pseudoMounts {
		if _, ok := mounts.Find(infos, m.Target); !ok {
			if err := m.Apply(s.mnt, s.root); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, m := range []mounts.Mount{
		{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "mode=0620,ptmxmode=0666,gid=5"},
		{Source: "tmpfs", Target: "/dev/shm", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
	} {
		if _, ok := mounts.Find(infos, m.Target); !ok {
			if err := m.Apply(s.mnt, s.root); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (s *system) dataPartition(ctx context.Context) error {
	p := &datapart.Preparer{
		SysClassBlock: s.path("/sys/class/block"), DevDir: s.path("/dev"), Root: s.root,
		Mounter: s.mnt, Log: s.log, Run: runCombined,
	}
	disk := s.rootInfo.Disk
	if s.rootInfo.Live {
		disk = "" // any disk with a data partition
	}
	res, err := p.Prepare(ctx, disk, s.rootInfo.Live)
	s.mu.Lock()
	s.data = res
	s.boot.FirstBoot = res.FirstBoot
	s.mu.Unlock()
	return err
}

// runCombined runs a program and returns its combined output.
func runCombined(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

func (s *system) openState(context.Context) error {
	// The data partition is mounted: the floor's saved time is readable,
	// and the boot record below gets a sane time.
	s.applyClockFloor()
	path := s.path("/var/lib/ballast/state.db")
	db, moved, err := state.Open(path)
	if moved != "" {
		s.log.Error("state database was corrupt; moved aside", "to", moved)
	}
	if err != nil {
		return err
	}
	n, err := db.StartBoot(s.bootIDHex, time.Now())
	s.mu.Lock()
	s.db, s.bootNum, s.boot.Number = db, n, n
	s.mu.Unlock()
	return err
}

// gatherConfig reads every datasource, parses and merges them. Any source
// with errors makes the whole new config suspect: the last good config is
// applied instead, and the errors are reported.
func (s *system) gatherConfig(ctx context.Context) error {
	policy, err := datasource.NoCloudPolicy(s.cmdline)
	if err != nil {
		s.log.Error("cloud-config sources", "err", err)
	}
	fresh := true
	s.mu.Lock()
	if s.db != nil {
		_, err := s.db.Fallback("")
		fresh = errors.Is(err, state.ErrNoConfig)
	}
	s.noCloud, s.freshNode = policy, fresh
	s.mu.Unlock()
	sources := datasource.Gather(s.datasourceEnv())
	if u, ok := datasource.ConfigURL(s.cmdline); ok {
		// The network is not up yet: fetched by the config-url step.
		s.mu.Lock()
		s.cfgInfo.Sources = append(s.cfgInfo.Sources, agent.ConfigSource{Name: datasource.NameCmdlineURL, Path: datasource.RedactURL(u), Error: "fetched after the network and the clock are up"})
		s.mu.Unlock()
	}
	cfg, info := parseSources(sources)
	_, viaURL := datasource.ConfigURL(s.cmdline)
	return s.applyConfigChoice(cfg, info, configChoice{provisional: viaURL, need: urlSource(viaURL)})
}

// datasourceEnv is where this boot reads its config: the live medium on a
// live boot, NoCloud as the cmdline says (gatherConfig decides once).
func (s *system) datasourceEnv() datasource.Env {
	s.mu.Lock()
	defer s.mu.Unlock()
	env := datasource.Env{
		Root: s.root, NoCloud: s.noCloud, FirstBoot: s.freshNode,
		Warn: func(msg string) { s.log.Warn(msg) },
	}
	if s.rootInfo.Live {
		env.LiveMedia = liveMount
	} else {
		env.Disk = s.rootInfo.Disk
	}
	return env
}

// configChoice says how a merged config may be recorded and replaced.
type configChoice struct {
	// provisional: not the whole config yet (the config URL is fetched
	// after the network is up), so not recorded as a good generation.
	provisional bool
	// need names a source the config must have come from: on errors the
	// fallback is the last generation that included it.
	need string
}

func urlSource(viaURL bool) string {
	if viaURL {
		return datasource.NameCmdlineURL
	}
	return ""
}

// parseSources parses each source; info lists sources and errors.
func parseSources(sources []datasource.Source) (*cloudconfig.Config, agent.Config) {
	var info agent.Config
	var parsed []*cloudconfig.Config
	for _, src := range sources {
		cs := agent.ConfigSource{Name: src.Name, Path: src.Path}
		err := src.Err
		var c *cloudconfig.Config
		if err == nil {
			c, err = cloudconfig.Parse(src.Path, src.Data)
		}
		if err != nil {
			cs.Error = err.Error()
			for _, line := range strings.Split(err.Error(), "\n") {
				info.Errors = append(info.Errors, src.Name+": "+line)
			}
		} else {
			parsed = append(parsed, c)
		}
		info.Sources = append(info.Sources, cs)
	}
	return cloudconfig.Merge(parsed...), info
}

func (s *system) applyConfigChoice(cfg *cloudconfig.Config, info agent.Config, choice configChoice) error {
	var names []string
	for _, src := range info.Sources {
		names = append(names, src.Name)
	}
	s.mu.Lock()
	db := s.db
	info.Sources = append(s.cfgInfo.Sources, info.Sources...)
	s.mu.Unlock()
	if len(info.Errors) > 0 {
		for _, e := range info.Errors {
			s.log.Error("cloud-config", "error", e)
		}
		info.UsedLastGood = true
		cfg = &cloudconfig.Config{}
		if choice.need != "" {
			// Without a generation that had the needed source, the
			// config applied before it was fetched stays.
			s.mu.Lock()
			if s.cfg != nil {
				cfg = s.cfg
			}
			s.mu.Unlock()
		}
		if db != nil {
			if g, err := db.Fallback(choice.need); err == nil {
				var last cloudconfig.Config
				if err := json.Unmarshal(g.Config, &last); err == nil {
					cfg = &last
					info.Generation, info.Confirmed = g.Number, g.Good()
				}
			}
		}
		s.log.Warn("using the last good cloud-config", "generation", info.Generation)
	} else if db != nil && !choice.provisional {
		cfg, info = s.beginTrial(db, cfg, info, names, choice.need)
	}
	info.Hash = cfg.Hash()
	s.mu.Lock()
	s.cfg, s.cfgInfo = cfg, info
	s.mu.Unlock()
	if len(info.Errors) > 0 {
		return fmt.Errorf("%d cloud-config error(s); the last good config is applied", len(info.Errors))
	}
	return nil
}

func (s *system) config() *cloudconfig.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func (s *system) setupCgroups(context.Context) error {
	cg, err := setupCgroups(s.mnt, s.root)
	s.mu.Lock()
	s.cgroups = cg
	s.mu.Unlock()
	var enabled []string
	for _, c := range requiredControllers {
		if !slices.Contains(cg.Missing, c) {
			enabled = append(enabled, c)
		}
	}
	// One plain line on the console for whoever checks a Pi's cmdline.txt.
	s.log.Info("cgroup controllers: "+strings.Join(enabled, " "), "available", strings.Join(cg.Controllers, ","))
	if len(cg.Missing) > 0 {
		s.log.Error("cgroup controllers missing: Kubernetes will not run",
			"missing", strings.Join(cg.Missing, ","),
			"fix", "add to the kernel command line: cgroup_enable=memory cgroup_memory=1 (Raspberry Pi: cmdline.txt)")
	}
	return err
}

// setupCgroups mounts cgroup2 at /sys/fs/cgroup, enables the required
// controllers for children and reports which are missing.
func setupCgroups(mnt mounts.Mounter, root string) (agent.Cgroups, error) {
	cg := agent.Cgroups{Version: 2}
	dir := filepath.Join(root, "/sys/fs/cgroup")
	if _, err := os.Stat(filepath.Join(dir, "cgroup.controllers")); err != nil {
		m := mounts.Mount{Source: "cgroup2", Target: "/sys/fs/cgroup", FSType: "cgroup2", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Data: "nsdelegate"}
		if err := m.Apply(mnt, root); err != nil {
			cg.Missing = requiredControllers
			return cg, err
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		cg.Missing = requiredControllers
		return cg, fmt.Errorf("cgroup v2: %w", err)
	}
	cg.Controllers = strings.Fields(string(b))
	var enable []string
	for _, c := range requiredControllers {
		if slices.Contains(cg.Controllers, c) {
			enable = append(enable, "+"+c)
		} else {
			cg.Missing = append(cg.Missing, c)
		}
	}
	if len(enable) > 0 {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0o644); err != nil {
			return cg, fmt.Errorf("enabling cgroup controllers %v: %w", enable, err)
		}
	}
	if len(cg.Missing) > 0 {
		return cg, fmt.Errorf("cgroup controllers missing: %s", strings.Join(cg.Missing, ", "))
	}
	return cg, nil
}

// modulesFor lists the modules to load: the k3s defaults, then the config's.
func modulesFor(cfg *cloudconfig.Config) []string {
	mods := slices.Clone(k3sModules)
	eff := cfg.Effective()
	if eff.Ballast != nil {
		for _, m := range eff.Ballast.Modules {
			if !slices.Contains(mods, m) {
				mods = append(mods, m)
			}
		}
	}
	return mods
}

func (s *system) loadModules(context.Context) error {
	var u unix.Utsname
	unix.Uname(&u)
	dir := s.path(filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:])))
	l, err := kmod.NewLoader(kmod.System{}, dir, s.path("/sys/module"))
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range modulesFor(s.config()) {
		if err := l.Load(m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sysctlsFor is the base sysctls overlaid with the config's.
func sysctlsFor(cfg *cloudconfig.Config) map[string]string {
	out := map[string]string{}
	for k, v := range baseSysctls {
		out[k] = v
	}
	if eff := cfg.Effective(); eff.Ballast != nil {
		for k, v := range eff.Ballast.Sysctls {
			out[k] = v
		}
	}
	return out
}

// writeSysctls writes each key under procSys (/proc/sys), sorted.
func writeSysctls(procSys string, kv map[string]string) error {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []error
	for _, k := range keys {
		if strings.Contains(k, "..") {
			errs = append(errs, fmt.Errorf("sysctl %q: bad key", k))
			continue
		}
		p := filepath.Join(procSys, strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(kv[k]), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s=%s: %w", k, kv[k], err))
		}
	}
	return errors.Join(errs...)
}

func (s *system) applySysctls(context.Context) error {
	return writeSysctls(s.path("/proc/sys"), sysctlsFor(s.config()))
}

// defaultHostname is "ballast-" and the last 6 hex digits of the first
// non-loopback MAC, sorted by interface name.
func defaultHostname(ifaces []net.Interface) string {
	slices.SortFunc(ifaces, func(a, b net.Interface) int { return strings.Compare(a.Name, b.Name) })
	for _, i := range ifaces {
		if i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) < 3 {
			continue
		}
		m := i.HardwareAddr
		return fmt.Sprintf("ballast-%02x%02x%02x", m[len(m)-3], m[len(m)-2], m[len(m)-1])
	}
	return "ballast"
}

func (s *system) setHostname(context.Context) error {
	name := s.config().Hostname
	if name == "" {
		ifs, _ := net.Interfaces()
		name = defaultHostname(ifs)
	}
	s.mu.Lock()
	s.hostname = name
	s.mu.Unlock()
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname %q: %w", name, err)
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n", name)
	errs := []error{
		os.WriteFile(s.path("/etc/hostname"), []byte(name+"\n"), 0o644),
		os.WriteFile(s.path("/etc/hosts"), []byte(hosts), 0o644),
	}
	return errors.Join(errs...)
}

func (s *system) syncTime(ctx context.Context) error {
	cfg := s.config()
	if !cfg.NTPEnabled() {
		return bootstep.Skip("ntp disabled by cloud-config")
	}
	servers := cfg.NTPServersOrDefault()
	if cfg.NTP == nil || len(cfg.NTP.Servers) == 0 {
		// Servers the DHCP lease offers come before the public pool.
		s.mu.Lock()
		if s.net != nil {
			servers = append(s.net.NTPServers(), servers...)
		}
		s.mu.Unlock()
	}
	build, _ := clockFloor(s.root)
	opts := timesync.Options{Log: s.log, Floor: build}
	off, err := timesync.Sync(ctx, servers, opts)
	if err != nil {
		// Keep syncing in the background; certificates may be wrong until then.
		go timesync.Run(context.Background(), servers, 15*time.Minute, opts)
		// An air-gapped node has no NTP server: worth a warning, not a failed boot.
		return bootstep.Warn(err)
	}
	s.log.Info("clock synchronised", "offset", off)
	s.saveClock()
	go timesync.Run(context.Background(), servers, time.Hour, opts)
	return nil
}

func (s *system) applyUsers(context.Context) error {
	return accounts.Apply(s.root, s.config(), accounts.Options{})
}

func (s *system) writeFiles(context.Context) error {
	cfg := s.config()
	if len(cfg.WriteFiles) == 0 {
		return bootstep.Skip("no write_files")
	}
	users, err := writefiles.NewPasswdLookup(s.root)
	if err != nil {
		return err
	}
	return writefiles.Apply(s.root, cfg.WriteFiles, users)
}

// init's runtime reports Go's architecture.
var goarch = runtime.GOARCH
