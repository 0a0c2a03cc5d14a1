package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ballast-os/ballast/init/agent"
	"github.com/ballast-os/ballast/init/mounts"
)

// handler answers the control agent.
type handler struct{ s *system }

var _ agent.Handler = (*handler)(nil)

func (h *handler) Status() agent.Status {
	s := h.s
	var u unix.Utsname
	unix.Uname(&u)
	s.mu.Lock()
	st := agent.Status{
		Boot:     s.boot,
		Hostname: s.hostname,
		Config:   s.cfgInfo,
		Cgroups:  s.cgroups,
	}
	if s.node != nil {
		n := *s.node
		n.Stages = slices.Clone(n.Stages)
		st.Node = &n
	}
	wd := s.wd
	s.mu.Unlock()
	if wd != nil {
		w := wd.Status()
		st.Watchdog = &w
	}
	st.Boot.Stages = s.run.Stages()
	st.Kernel = unix.ByteSliceToString(u.Release[:])
	st.Arch = goarch
	st.Version = version
	if st.Hostname == "" {
		st.Hostname, _ = os.Hostname()
	}
	st.Services = s.sup.Status()
	s.mu.Lock()
	ns := s.net
	s.mu.Unlock()
	if ns != nil {
		st.Network = ns.Ifaces()
	} else {
		st.Network = interfaces()
	}
	st.Memory = memory(s.path("/proc/meminfo"), s.path("/proc/self/status"))
	st.Disks = diskUsage(s.path("/proc/self/mountinfo"), "/", "/persist", "/run/ballast/boot", liveMount)
	return st
}

func interfaces() []agent.Iface {
	ifs, _ := net.Interfaces()
	var out []agent.Iface
	for _, i := range ifs {
		ai := agent.Iface{Name: i.Name, MAC: i.HardwareAddr.String(), Up: i.Flags&net.FlagUp != 0, Method: "none"}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			ai.Addresses = append(ai.Addresses, a.String())
		}
		out = append(out, ai)
	}
	return out
}

func memory(meminfo, status string) agent.Memory {
	var m agent.Memory
	read := func(path, key string) uint64 {
		b, _ := os.ReadFile(path)
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == key {
				f := strings.Fields(v)
				if len(f) > 0 {
					n, _ := strconv.ParseUint(f[0], 10, 64)
					return n * 1024 // kB
				}
			}
		}
		return 0
	}
	m.Total, m.Available = read(meminfo, "MemTotal"), read(meminfo, "MemAvailable")
	if m.Total > m.Available {
		m.Used = m.Total - m.Available
	}
	m.Free = read(meminfo, "MemFree")
	m.Cache = read(meminfo, "Buffers") + read(meminfo, "Cached") + read(meminfo, "SReclaimable")
	if m.Total > m.Free+m.Cache {
		m.UsedNoCache = m.Total - m.Free - m.Cache
	}
	m.InitRSS = read(status, "VmRSS")
	return m
}

func diskUsage(mountinfo string, targets ...string) []agent.Mount {
	infos, _ := mounts.ReadMountinfo(mountinfo)
	var out []agent.Mount
	for _, t := range targets {
		in, ok := mounts.Find(infos, t)
		if !ok {
			continue
		}
		m := agent.Mount{Target: t, Source: in.Source, FSType: in.FSType}
		var st unix.Statfs_t
		if unix.Statfs(t, &st) == nil {
			m.Size = st.Blocks * uint64(st.Bsize)
			m.Free = st.Bavail * uint64(st.Bsize)
		}
		out = append(out, m)
	}
	return out
}

func (h *handler) Logs(p agent.LogsParams) (agent.Logs, error) {
	n := p.Lines
	if n <= 0 {
		n = agent.DefaultLogLines
	}
	if p.Name == "console" || p.Name == "" {
		return agent.Logs{Name: "console", Lines: h.s.ring.Last(n)}, nil
	}
	lines, ok := h.s.sup.Logs(p.Name, n)
	if !ok {
		return agent.Logs{}, fmt.Errorf("no log named %q (console or a service name)", p.Name)
	}
	return agent.Logs{Name: p.Name, Lines: lines}, nil
}

func (h *handler) Exec(ctx context.Context, p agent.ExecParams) (agent.ExecResult, error) {
	// The service environment (proxy settings), then the caller's.
	p.Env = append(h.s.serviceEnv(), p.Env...)
	return agent.RunCommand(ctx, p)
}

func (h *handler) Poweroff() error {
	return h.s.requestShutdown(shutdownRequest{poweroff: true, why: "agent"})
}
func (h *handler) Reboot() error { return h.s.requestShutdown(shutdownRequest{why: "agent"}) }

func (h *handler) Privileged() bool {
	return h.s.config().AgentPrivileged()
}
