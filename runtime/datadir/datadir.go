// Package datadir names and creates the k3s data-dir layout
// (/var/lib/rancher/k3s by default) with k3s's permissions.
package datadir

import (
	"fmt"
	"os"
	"path/filepath"
)

// Layout is a data dir. Its methods return absolute paths inside it.
type Layout struct{ Root string }

func (l Layout) p(parts ...string) string {
	return filepath.Join(append([]string{l.Root}, parts...)...)
}

// Server paths.
func (l Layout) Server() string         { return l.p("server") }
func (l Layout) DB() string             { return l.p("server", "db") }
func (l Layout) TLS() string            { return l.p("server", "tls") }
func (l Layout) Cred() string           { return l.p("server", "cred") }
func (l Layout) ServerEtc() string      { return l.p("server", "etc") }
func (l Layout) Manifests() string      { return l.p("server", "manifests") }
func (l Layout) Static() string         { return l.p("server", "static") }
func (l Layout) TokenFile() string      { return l.p("server", "token") }
func (l Layout) AgentTokenFile() string { return l.p("server", "agent-token") }
func (l Layout) NodeTokenFile() string  { return l.p("server", "node-token") }
func (l Layout) KineSocket() string     { return l.p("server", "kine.sock") }

// Agent paths.
func (l Layout) Agent() string                { return l.p("agent") }
func (l Layout) ContainerdEtc() string        { return l.p("agent", "etc", "containerd") }
func (l Layout) ContainerdConfig() string     { return l.p("agent", "etc", "containerd", "config.toml") }
func (l Layout) ContainerdCertsD() string     { return l.p("agent", "etc", "containerd", "certs.d") }
func (l Layout) CNIConf() string              { return l.p("agent", "etc", "cni", "net.d") }
func (l Layout) KubeletConfigDir() string     { return l.p("agent", "etc", "kubelet.conf.d") }
func (l Layout) CrictlConfig() string         { return l.p("agent", "etc", "crictl.yaml") }
func (l Layout) Images() string               { return l.p("agent", "images") }
func (l Layout) ContainerdRoot() string       { return l.p("agent", "containerd") }
func (l Layout) PodManifests() string         { return l.p("agent", "pod-manifests") }
func (l Layout) KubeletRoot() string          { return l.p("agent", "kubelet") }
func (l Layout) AgentFile(name string) string { return l.p("agent", name) }

// Storage is local-path-provisioner's default volume directory.
func (l Layout) Storage() string { return l.p("storage") }

// Dir is one directory of the layout and its mode.
type Dir struct {
	Path string
	Mode os.FileMode
}

// ServerDirs are created by `k3s server`. The server tree is 0700: it holds
// CA keys and tokens.
func (l Layout) ServerDirs() []Dir {
	return []Dir{
		{l.Root, 0o755},
		{l.Server(), 0o700},
		{l.DB(), 0o700},
		{l.TLS(), 0o700},
		{l.Cred(), 0o700},
		{l.ServerEtc(), 0o700},
		{l.Manifests(), 0o700},
		{l.Static(), 0o700},
		{l.Storage(), 0o701},
	}
}

// AgentDirs are created by `k3s agent` and by a server that runs an agent.
func (l Layout) AgentDirs() []Dir {
	return []Dir{
		{l.Root, 0o755},
		{l.Agent(), 0o755},
		{l.p("agent", "etc"), 0o755},
		{l.ContainerdEtc(), 0o700},
		{l.p("agent", "etc", "cni"), 0o755},
		{l.CNIConf(), 0o755},
		{l.KubeletConfigDir(), 0o700},
		{l.Images(), 0o755},
		{l.ContainerdRoot(), 0o700},
		{l.PodManifests(), 0o755},
	}
}

// Create makes the directories (server and agent, or agent only) and sets
// their modes, also on directories that already exist, so that a data dir
// copied with wrong modes is repaired.
func (l Layout) Create(server, agent bool) error {
	var dirs []Dir
	if server {
		dirs = append(dirs, l.ServerDirs()...)
	}
	if agent {
		dirs = append(dirs, l.AgentDirs()...)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.Path, d.Mode); err != nil {
			return fmt.Errorf("datadir: %w", err)
		}
		if err := os.Chmod(d.Path, d.Mode); err != nil {
			return fmt.Errorf("datadir: %w", err)
		}
	}
	return nil
}
