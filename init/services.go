package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/init/accounts"
	"github.com/ballast-os/ballast/init/agent"
	"github.com/ballast-os/ballast/init/bootstep"
	"github.com/ballast-os/ballast/init/datasource"
	"github.com/ballast-os/ballast/init/network"
	"github.com/ballast-os/ballast/init/supervise"
)

// configureNetwork brings up the interfaces (DHCP on every wired one by
// default; static ones as configured; Wi-Fi joined in the background).
func (s *system) configureNetwork(ctx context.Context) error {
	cfg := s.config()
	st, netErr := network.Configure(ctx, cfg.Network, network.Options{
		Root:     s.root,
		Hostname: s.hostname,
		Log:      s.log,
		// wpa_supplicant for network.wifi, supervised like sshd.
		StartService: func(name string, argv []string) error {
			return s.sup.Start(supervise.Service{Name: name, Argv: argv, Env: s.serviceEnv()})
		},
	})
	s.mu.Lock()
	s.net = st
	s.mu.Unlock()
	return netErr
}

// fetchConfigURL fetches the config URL the cmdline names, once the
// network is up and the clock synchronised (a board without a clock would
// otherwise check the server's certificate against 1970 or its floor),
// and merges it last, as the design orders sources.
func (s *system) fetchConfigURL(ctx context.Context) error {
	u, ok := datasource.ConfigURL(s.cmdline)
	if !ok {
		return bootstep.Skip("no ballast.config_url")
	}
	src := datasource.FetchURL(ctx, u, s.cmdline[datasource.PinKey], 30*time.Second)
	s.log.Info("fetched cloud-config", "url", datasource.RedactURL(u), "err", src.Err)
	srcs := append(datasource.Gather(s.datasourceEnv()), src)
	s.mu.Lock()
	s.cfgInfo.Sources = nil
	s.mu.Unlock()
	cfg, info := parseSources(srcs)
	return s.applyConfigChoice(cfg, info, configChoice{need: datasource.NameCmdlineURL})
}

// commandArgv turns a cloud-config command into argv.
func commandArgv(c cloudconfig.Command) []string {
	if len(c.Argv) > 0 {
		return c.Argv
	}
	return []string{"/bin/sh", "-c", c.Shell}
}

// runCommands runs each command in order, its output appended to
// /var/log/<kind>.log and echoed to the init's log; a failure is logged
// and the next command still runs. It returns how many failed.
func (s *system) runCommands(ctx context.Context, kind string, cmds []cloudconfig.Command) int {
	failed := 0
	for i, c := range cmds {
		argv := commandArgv(c)
		out, err := runLogged(ctx, argv, s.serviceEnv(), s.path("/var/log/"+kind+".log"), commandTimeout)
		for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			if l != "" {
				s.log.Info(kind+" output", "n", i, "line", l)
			}
		}
		if err != nil {
			failed++
			s.log.Error(kind+" failed", "n", i, "cmd", strings.Join(argv, " "), "err", err)
		}
	}
	return failed
}

// commandTimeout bounds one bootcmd or runcmd command.
const commandTimeout = 10 * time.Minute

// maxCommandLog is the size past which a command log starts afresh (the
// previous one kept as .1): bootcmd runs at every boot.
const maxCommandLog = 1 << 20

// runLogged runs argv in its own process group with its output appended
// to logPath, and returns that output (its first 64 KiB). It waits for
// the command itself, not for what the command left running: `daemon &`
// returns at once and the daemon's output keeps going to the file, as
// with a service. At the time-out the whole group is killed.
func runLogged(ctx context.Context, argv, env []string, logPath string, timeout time.Duration) (string, error) {
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > maxCommandLog {
		_ = os.Rename(logPath, logPath+".1")
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return "", err
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return "", err
	}
	defer f.Close()
	start, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err = cmd.Run()
	if err != nil && cctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		err = fmt.Errorf("timed out after %v; its process group was killed", timeout)
	}
	out := ""
	if r, rerr := os.Open(logPath); rerr == nil {
		b, _ := io.ReadAll(io.LimitReader(io.NewSectionReader(r, start, 1<<62), 64<<10))
		r.Close()
		out = string(b)
	}
	return out, err
}

func (s *system) bootCmd(ctx context.Context) error {
	cmds := s.config().BootCmd
	if len(cmds) == 0 {
		return bootstep.Skip("no bootcmd")
	}
	if n := s.runCommands(ctx, "bootcmd", cmds); n > 0 {
		return fmt.Errorf("%d of %d bootcmd command(s) failed", n, len(cmds))
	}
	return nil
}

// runOnceKey names this instance for runcmd: the config's instance_id, or
// the state database's node ID (one per data partition).
// persistent says why this boot has no persistent storage: a disk boot
// whose data partition is missing or was refused runs on tmpfs, where k3s
// would make a new node at every boot (a new identity, a throwaway
// cluster) and runcmd, which runs once per node, would run every boot.
// A live boot (the ISO) is ephemeral by design.
func (s *system) persistent() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data.TmpFS && !s.rootInfo.Live {
		return errors.New("the data partition is not mounted (see the data-partition step): everything would be lost at reboot")
	}
	return nil
}

func runOnceKey(cfg *cloudconfig.Config, nodeID string) string {
	if cfg.InstanceID != "" {
		return "runcmd:instance:" + cfg.InstanceID
	}
	return "runcmd:node:" + nodeID
}

func (s *system) runCmdOnce(ctx context.Context) error {
	cfg := s.config()
	if len(cfg.RunCmd) == 0 {
		return bootstep.Skip("no runcmd")
	}
	if err := s.persistent(); err != nil {
		return fmt.Errorf("runcmd not run: %w", err)
	}
	s.mu.Lock()
	db := s.db
	s.mu.Unlock()
	if db == nil {
		return fmt.Errorf("runcmd: no state database, cannot tell whether it already ran")
	}
	key := runOnceKey(cfg, db.NodeID())
	if db.RunOnceDone(key) {
		return bootstep.Skip("runcmd already ran for " + key)
	}
	// Mark first: a command that reboots the node must not run again.
	if err := db.MarkRunOnce(key, time.Now()); err != nil {
		return fmt.Errorf("runcmd: marking %s: %w", key, err)
	}
	if n := s.runCommands(ctx, "runcmd", cfg.RunCmd); n > 0 {
		return fmt.Errorf("%d of %d runcmd command(s) failed", n, len(cfg.RunCmd))
	}
	return nil
}

// serviceEnv is the environment of services and commands: PATH, the
// proxy, and ballast.environment.
func (s *system) serviceEnv() []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"KUBECONFIG=/etc/rancher/k3s/k3s.yaml",
	}
	cfg := s.config().Effective()
	env = append(env, cfg.Proxy.Env()...)
	if cfg.Ballast != nil {
		for k, v := range cfg.Ballast.Environment {
			env = append(env, k+"="+v)
		}
	}
	slices.Sort(env[3:])
	return env
}

func (s *system) startServices(ctx context.Context) error {
	cfg := s.config()
	var errs []string
	if cfg.SSHEnabled() {
		argv, err := accounts.PrepareSSHD(s.root, cfg)
		if err == nil {
			err = s.sup.Start(supervise.Service{Name: "sshd", Argv: argv, Env: s.serviceEnv()})
		}
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	var warning error
	if err := s.startRuntime(ctx, cfg); errors.Is(err, bootstep.ErrWarn) {
		warning = err
	} else if err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		if warning != nil {
			errs = append(errs, warning.Error())
		}
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return warning
}

// k3sBinaries are where the runtime may be installed, first found wins.
var k3sBinaries = []string{"/usr/bin/k3s", "/usr/local/bin/k3s"}

// startRuntime writes k3s's config and manifests and supervises
// `k3s server` (or `agent`) when the image has a runtime.
func (s *system) startRuntime(ctx context.Context, cfg *cloudconfig.Config) error {
	if cfg.RuntimeOrDefault() == "none" || s.cmdline["ballast.runtime"] == "none" {
		return nil
	}
	if err := s.persistent(); err != nil {
		return s.notTheConfig(fmt.Errorf("not starting k3s: %w", err))
	}
	if err := checkClockSane(s.root, time.Now()); err != nil {
		return s.notTheConfig(fmt.Errorf("not starting k3s: %w", err))
	}
	bin := ""
	for _, b := range k3sBinaries {
		if _, err := os.Stat(s.path(b)); err == nil {
			bin = b
			break
		}
	}
	if bin == "" {
		s.log.Info("no runtime in this image", "looked", strings.Join(k3sBinaries, " "))
		return nil
	}
	// Before k3s fills a partition too small for its images and leaves
	// the node half-pulled with nothing saying why.
	warning, err := s.checkDataSpace()
	if err != nil {
		return s.notTheConfig(fmt.Errorf("not starting k3s: %w", err))
	}
	if err := writeRuntimeConfig(s.root, cfg); err != nil {
		return err
	}
	if err := linkImages(s.path(imagesDir), s.path(k3sImagesDir)); err != nil {
		s.log.Warn("runtime: linking the image's container images", "err", err)
	}
	if err := s.sup.Start(supervise.Service{Name: "k3s", Argv: []string{bin, cfg.RoleOrDefault()}, Env: s.serviceEnv()}); err != nil {
		return err
	}
	kubeconfig := k3sAdminKC
	if cfg.RoleOrDefault() == "agent" {
		kubeconfig = k3sAgentKC
	}
	ready := make(chan struct{})
	s.mu.Lock()
	s.nodeReady = ready
	s.mu.Unlock()
	go s.watchNode(ctx, ready, func() string {
		return nodeName(cfg, s.hostname, func(p string) ([]byte, error) { return os.ReadFile(s.path(p)) })
	}, kubeconfig)
	if warning != "" {
		return bootstep.Warn(errors.New(warning))
	}
	return nil
}

// writeRuntimeConfig writes /etc/rancher/k3s/config.yaml and the manifests.
func writeRuntimeConfig(root string, cfg *cloudconfig.Config) error {
	y, err := cfg.K3sConfigYAML()
	if err != nil {
		return fmt.Errorf("k3s config: %w", err)
	}
	dir := filepath.Join(root, "/etc/rancher/k3s")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), y, 0o600); err != nil {
		return err
	}
	mdir := filepath.Join(root, "/var/lib/rancher/k3s/server/manifests")
	if len(cfg.Manifests) > 0 {
		if err := os.MkdirAll(mdir, 0o755); err != nil {
			return err
		}
	}
	for _, m := range cfg.Manifests {
		name := filepath.Base(m.Name)
		if name != m.Name || name == "." || name == ".." {
			return fmt.Errorf("manifest %q: a file name, not a path", m.Name)
		}
		if err := os.WriteFile(filepath.Join(mdir, name), []byte(m.Content), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// startAgent serves the control protocol on the virtio-serial port and,
// where it exists, vsock.
func (s *system) startAgent(ctx context.Context) {
	h := &handler{s: s}
	logf := func(format string, args ...any) { s.log.Warn(fmt.Sprintf(format, args...)) }
	go agent.ServePort(ctx, agent.PortName, h, logf)
	go func() {
		if err := agent.ServeVsock(ctx, agent.VsockPort, h); err != nil && ctx.Err() == nil {
			s.log.Info("agent: no vsock", "err", err)
		}
	}()
}
