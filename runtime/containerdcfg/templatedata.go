package containerdcfg

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
)

// TemplateData is the dot a template sees. It carries ballast's own names
// (the embedded Config: .Root, .SandboxImage, .Runtimes, .Registry, ...),
// which the base template and existing users' templates use, and beside
// them the names of k3s's templates.ContainerdConfig, so that a template
// written for k3s renders unchanged. Every k3s name holds the value
// ballast's runtime really uses; where ballast has no such setting the
// field is its zero value, as noted on each.
type TemplateData struct {
	*Config

	// NodeConfig is k3s's config.Node: the paths, images and node
	// identity the generated config is built from.
	NodeConfig *Node
	// DisableCgroup is always false: ballast never runs containers
	// without cgroups (k3s does only when rootless without delegated
	// controllers, and ballast refuses rootless).
	DisableCgroup bool
	// IsRunningInUserNS: the node runs in a user namespace other than the
	// host's (Config.InUserNS).
	IsRunningInUserNS bool
	// EnableUnprivileged is always true: the base config allows
	// unprivileged ports and ICMP (k3s checks for kernel 4.11, older than
	// any kernel ballast boots).
	EnableUnprivileged bool
	// NonrootDevices and NoDefaultEndpoint are always false: ballast
	// refuses nonroot-devices and disable-default-registry-endpoint.
	NonrootDevices    bool
	NoDefaultEndpoint bool
	// PrivateRegistryConfig is registries.yaml (Config.Registry), an empty
	// Registry when there is none, as in k3s, so a template may range over
	// .PrivateRegistryConfig.Mirrors without a guard.
	PrivateRegistryConfig *Registry
	// ExtraRuntimes are Config.Runtimes by name (the NVIDIA runtimes found
	// on the node).
	ExtraRuntimes map[string]RuntimeConfig
	// Program is "k3s", the name k3s's templates print in their header and
	// paths.
	Program string
}

// Node is k3s's config.Node as a template sees it. Only the fields a
// containerd template has a use for are here; a template naming another
// of k3s's fields fails with its file and line.
type Node struct {
	// Docker, ContainerRuntimeEndpoint, ImageServiceEndpoint and
	// EmbeddedRegistry are always zero: when a template is rendered,
	// ballast runs its own containerd, with no embedded registry (the
	// runtime writes no containerd config for an external
	// container-runtime-endpoint).
	Docker                   bool
	ContainerRuntimeEndpoint string
	ImageServiceEndpoint     string
	EmbeddedRegistry         bool
	// NoFlannel: flannel-backend is none (Config.NoFlannel). k3s's older
	// templates leave containerd's CNI directories at their defaults then,
	// for the CNI the user installs.
	NoFlannel      bool
	SELinux        bool
	DefaultRuntime string
	Containerd     Containerd
	AgentConfig    Agent
}

// Containerd is k3s's config.Containerd: where containerd keeps its
// files.
type Containerd struct {
	Address string
	Root    string
	State   string
	// Opt is the opt plugin's directory, <Root>/opt (k3s uses Root
	// itself).
	Opt string
	// Config is config.toml beside the templates; Template is the
	// directory the templates are read from.
	Config   string
	Template string
	// Registry is the certs.d directory of hosts.toml files.
	Registry string
	SELinux  bool
	// Log is always "": ballast's containerd logs to the runtime's own
	// output, not a file. BlockIOConfig and RDTConfig are "" (ballast has
	// no such settings); NoDefault, NonrootDevices and Debug are false.
	Log            string
	BlockIOConfig  string
	RDTConfig      string
	NoDefault      bool
	NonrootDevices bool
	Debug          bool
}

// Agent is the part of k3s's config.Agent a containerd template uses.
type Agent struct {
	NodeName string
	// NodeIP is the first of NodeIPs, "" when there is none.
	NodeIP      string
	NodeIPs     []netip.Addr
	PauseImage  string
	Snapshotter string
	CNIBinDir   string
	CNIConfDir  string
	// RuntimeSocket is containerd's socket; ImageServiceSocket is the
	// stargz snapshotter's image service (its keychain wraps containerd's
	// CRI) with that snapshotter, else "".
	RuntimeSocket      string
	ImageServiceSocket string
	Systemd            bool
	// Rootless is always false: ballast refuses rootless.
	Rootless bool
	// PrivateRegistry is the registries.yaml path (Config.PrivateRegistry);
	// Registry is what it holds, the same as PrivateRegistryConfig.
	PrivateRegistry string
	Registry        *Registry
}

// RuntimeConfig is one of k3s's ExtraRuntimes.
type RuntimeConfig struct {
	RuntimeType string
	BinaryName  string
}

// program is what k3s's templates know as .Program.
const program = "k3s"

// newTemplateData is what Render executes templates with; templateDir is
// where Render reads them (and its caller writes config.toml).
func newTemplateData(c *Config, templateDir string) *TemplateData {
	reg := c.Registry
	if reg == nil {
		reg = &Registry{}
	}
	runtimes := make(map[string]RuntimeConfig, len(c.Runtimes))
	for _, r := range c.Runtimes {
		runtimes[r.Name] = RuntimeConfig{RuntimeType: "io.containerd.runc.v2", BinaryName: r.BinaryName}
	}
	agent := Agent{
		NodeName: c.NodeName, NodeIPs: c.NodeIPs,
		PauseImage: c.SandboxImage, Snapshotter: c.Snapshotter,
		CNIBinDir: c.CNIBinDir, CNIConfDir: c.CNIConfDir,
		RuntimeSocket: c.Address, Systemd: c.SystemdCgroup,
		PrivateRegistry: c.PrivateRegistry, Registry: reg,
	}
	if len(c.NodeIPs) > 0 {
		agent.NodeIP = c.NodeIPs[0].String()
	}
	if c.Snapshotter == "stargz" {
		agent.ImageServiceSocket = c.ImageServiceSocket
	}
	return &TemplateData{
		Config: c,
		NodeConfig: &Node{
			NoFlannel:      c.NoFlannel,
			SELinux:        c.SELinux,
			DefaultRuntime: c.DefaultRuntime,
			Containerd: Containerd{
				Address: c.Address, Root: c.Root, State: c.State, Opt: c.Root + "/opt",
				Config: filepath.Join(templateDir, "config.toml"), Template: templateDir,
				Registry: c.CertsDir, SELinux: c.SELinux,
			},
			AgentConfig: agent,
		},
		IsRunningInUserNS:     c.InUserNS,
		EnableUnprivileged:    true,
		PrivateRegistryConfig: reg,
		ExtraRuntimes:         runtimes,
		Program:               program,
	}
}

// The functions k3s registers for Linux templates.

// deschemify is the identity, as on Linux in k3s: only Windows addresses
// (npipe://) carry a scheme there.
func deschemify(s string) string { return s }

// toJSON is k3s's toJson; unlike k3s's, which prints "" for a value JSON
// cannot encode, it fails the template at that line.
func toJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("toJson: %w", err)
	}
	return string(b), nil
}
