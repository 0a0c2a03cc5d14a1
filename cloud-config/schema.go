// Package cloudconfig is the schema, strict parser, validator and merger of
// ballast's #cloud-config: the one file that configures a node.
//
// The schema follows cloud-init and k3OS where they have a key for a thing
// (hostname, ssh_authorized_keys, users, write_files, bootcmd, runcmd, and
// k3OS's k3os: block), and adds ballast's own blocks (k3s:, manifests:,
// proxy:, ntp:, network:, ballast:).
//
// Unset vs empty: pointer fields are nil when the key is absent, so merging
// can tell "not said" from "said false/empty". Use the XOrDefault accessors.
package cloudconfig

import (
	"strings"
	"time"
)

// Config is one parsed cloud-config document, or the merge of several.
type Config struct {
	Hostname          string   `yaml:"hostname,omitempty" json:"hostname,omitempty"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys,omitempty" json:"ssh_authorized_keys,omitempty"`
	Users             []User   `yaml:"users,omitempty" json:"users,omitempty"`
	WriteFiles        []File   `yaml:"write_files,omitempty" json:"write_files,omitempty"`
	// BootCmd runs on every boot, before services start.
	BootCmd []Command `yaml:"bootcmd,omitempty" json:"bootcmd,omitempty"`
	// RunCmd runs once per instance (per distinct InstanceID, or per data
	// partition when none is set), after services start.
	RunCmd     []Command `yaml:"runcmd,omitempty" json:"runcmd,omitempty"`
	InstanceID string    `yaml:"instance_id,omitempty" json:"instance_id,omitempty"`

	NTP       *NTP       `yaml:"ntp,omitempty" json:"ntp,omitempty"`
	Network   *Network   `yaml:"network,omitempty" json:"network,omitempty"`
	Proxy     *Proxy     `yaml:"proxy,omitempty" json:"proxy,omitempty"`
	Manifests []Manifest `yaml:"manifests,omitempty" json:"manifests,omitempty"`
	// K3s is written verbatim as /etc/rancher/k3s/config.yaml: its keys are
	// k3s's long flag names (token, server, node-label, disable, ...).
	K3s map[string]any `yaml:"k3s,omitempty" json:"k3s,omitempty"`
	// K3OS accepts a k3OS config's k3os: block so its users can bring it.
	K3OS    *K3OS    `yaml:"k3os,omitempty" json:"k3os,omitempty"`
	Ballast *Ballast `yaml:"ballast,omitempty" json:"ballast,omitempty"`
}

// User is an account to create. Root is the appliance's admin; the
// top-level ssh_authorized_keys authorize root.
type User struct {
	Name              string   `yaml:"name" json:"name"`
	Gecos             string   `yaml:"gecos,omitempty" json:"gecos,omitempty"`
	Groups            []string `yaml:"groups,omitempty" json:"groups,omitempty"`
	Shell             string   `yaml:"shell,omitempty" json:"shell,omitempty"`
	UID               *int     `yaml:"uid,omitempty" json:"uid,omitempty"`
	HomeDir           string   `yaml:"homedir,omitempty" json:"homedir,omitempty"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys,omitempty" json:"ssh_authorized_keys,omitempty"`
	// PasswdHash is a crypt(3) hash; password login stays off over SSH
	// unless ballast.ssh.password_authentication is true.
	PasswdHash string `yaml:"passwd,omitempty" json:"passwd,omitempty"`
}

// File is a write_files entry.
type File struct {
	Path    string `yaml:"path" json:"path"`
	Content string `yaml:"content,omitempty" json:"content,omitempty"`
	// Encoding: "" or "text", "b64"/"base64", "gz"/"gzip", "gz+b64"/"gzip+base64".
	Encoding string `yaml:"encoding,omitempty" json:"encoding,omitempty"`
	// Owner is "user", "user:group", or numeric "uid:gid"; default root:root.
	Owner string `yaml:"owner,omitempty" json:"owner,omitempty"`
	// Permissions is an octal string, default "0644".
	Permissions string `yaml:"permissions,omitempty" json:"permissions,omitempty"`
	Append      bool   `yaml:"append,omitempty" json:"append,omitempty"`
}

// Command is a shell string ("echo hi > /x", run by /bin/sh -c) or an argv
// list (["touch", "/x"]). In YAML either form is accepted.
type Command struct {
	Shell string   `json:"shell,omitempty"`
	Argv  []string `json:"argv,omitempty"`
}

// NTP configures time sync, which runs before anything that checks
// certificates.
type NTP struct {
	Enabled *bool    `yaml:"enabled,omitempty" json:"enabled,omitempty"`
	Servers []string `yaml:"servers,omitempty" json:"servers,omitempty"`
}

// Network configures interfaces. With no network block every wired
// interface is brought up with DHCP.
type Network struct {
	// DHCP on every wired interface not listed in Interfaces; default true.
	DHCP        *bool       `yaml:"dhcp,omitempty" json:"dhcp,omitempty"`
	Interfaces  []Interface `yaml:"interfaces,omitempty" json:"interfaces,omitempty"`
	Nameservers []string    `yaml:"nameservers,omitempty" json:"nameservers,omitempty"`
	Search      []string    `yaml:"search,omitempty" json:"search,omitempty"`
	WiFi        *WiFi       `yaml:"wifi,omitempty" json:"wifi,omitempty"`
}

// Interface is the configuration of one interface, matched by name or MAC.
type Interface struct {
	Name      string   `yaml:"name,omitempty" json:"name,omitempty"`
	MAC       string   `yaml:"mac,omitempty" json:"mac,omitempty"`
	DHCP      *bool    `yaml:"dhcp,omitempty" json:"dhcp,omitempty"`
	Addresses []string `yaml:"addresses,omitempty" json:"addresses,omitempty"` // CIDR
	Gateway   string   `yaml:"gateway,omitempty" json:"gateway,omitempty"`
	MTU       int      `yaml:"mtu,omitempty" json:"mtu,omitempty"`
}

// WiFi joins one WPA2 network (Raspberry Pi). An empty PSK joins an open
// network. The interface's addresses come from network.interfaces when it
// is listed there, else DHCP.
type WiFi struct {
	SSID    string `yaml:"ssid" json:"ssid"`
	PSK     string `yaml:"psk,omitempty" json:"psk,omitempty"`
	Country string `yaml:"country,omitempty" json:"country,omitempty"`
	// Interface names the wireless interface; unset: the first one
	// (by name) that appears.
	Interface string `yaml:"interface,omitempty" json:"interface,omitempty"`
}

// Proxy is the HTTP proxy environment for the runtime and containerd,
// as k3s takes it: HTTP_PROXY, HTTPS_PROXY and NO_PROXY for k3s and
// everything it runs (k3s appends the cluster and service CIDRs, .svc
// and .<cluster-domain> to NO_PROXY), and the containerd_* ones for
// containerd alone (CONTAINERD_HTTP_PROXY... in k3s's environment), which
// replace the others there.
type Proxy struct {
	HTTPProxy            string `yaml:"http_proxy,omitempty" json:"http_proxy,omitempty"`
	HTTPSProxy           string `yaml:"https_proxy,omitempty" json:"https_proxy,omitempty"`
	NoProxy              string `yaml:"no_proxy,omitempty" json:"no_proxy,omitempty"`
	ContainerdHTTPProxy  string `yaml:"containerd_http_proxy,omitempty" json:"containerd_http_proxy,omitempty"`
	ContainerdHTTPSProxy string `yaml:"containerd_https_proxy,omitempty" json:"containerd_https_proxy,omitempty"`
	ContainerdNoProxy    string `yaml:"containerd_no_proxy,omitempty" json:"containerd_no_proxy,omitempty"`
}

// Env is the proxy environment of services and commands: each variable
// set, in upper and (for the standard three) lower case.
func (p *Proxy) Env() []string {
	if p == nil {
		return nil
	}
	var env []string
	for _, kv := range []struct {
		k, v  string
		lower bool
	}{
		{"HTTP_PROXY", p.HTTPProxy, true}, {"HTTPS_PROXY", p.HTTPSProxy, true}, {"NO_PROXY", p.NoProxy, true},
		{"CONTAINERD_HTTP_PROXY", p.ContainerdHTTPProxy, false}, {"CONTAINERD_HTTPS_PROXY", p.ContainerdHTTPSProxy, false},
		{"CONTAINERD_NO_PROXY", p.ContainerdNoProxy, false},
	} {
		if kv.v == "" {
			continue
		}
		env = append(env, kv.k+"="+kv.v)
		if kv.lower {
			env = append(env, strings.ToLower(kv.k)+"="+kv.v)
		}
	}
	return env
}

// Manifest is written to /var/lib/rancher/k3s/server/manifests/<Name>.
type Manifest struct {
	Name    string `yaml:"name" json:"name"`
	Content string `yaml:"content" json:"content"`
}

// K3OS is k3OS's k3os: block.
type K3OS struct {
	Modules        []string          `yaml:"modules,omitempty" json:"modules,omitempty"`
	Sysctls        map[string]string `yaml:"sysctls,omitempty" json:"sysctls,omitempty"`
	NTPServers     []string          `yaml:"ntp_servers,omitempty" json:"ntp_servers,omitempty"`
	DNSNameservers []string          `yaml:"dns_nameservers,omitempty" json:"dns_nameservers,omitempty"`
	Labels         map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	Taints         []string          `yaml:"taints,omitempty" json:"taints,omitempty"`
	K3sArgs        []string          `yaml:"k3s_args,omitempty" json:"k3s_args,omitempty"`
	Environment    map[string]string `yaml:"environment,omitempty" json:"environment,omitempty"`
	ServerURL      string            `yaml:"server_url,omitempty" json:"server_url,omitempty"`
	Token          string            `yaml:"token,omitempty" json:"token,omitempty"`
	Password       string            `yaml:"password,omitempty" json:"password,omitempty"`
	DataSources    []string          `yaml:"data_sources,omitempty" json:"data_sources,omitempty"`
	DNSSearch      []string          `yaml:"dns_searches,omitempty" json:"dns_searches,omitempty"`
}

// Ballast holds ballast's own node settings.
type Ballast struct {
	Modules     []string          `yaml:"modules,omitempty" json:"modules,omitempty"`
	Sysctls     map[string]string `yaml:"sysctls,omitempty" json:"sysctls,omitempty"`
	Environment map[string]string `yaml:"environment,omitempty" json:"environment,omitempty"`
	Agent       *AgentSettings    `yaml:"agent,omitempty" json:"agent,omitempty"`
	SSH         *SSHSettings      `yaml:"ssh,omitempty" json:"ssh,omitempty"`
	// Runtime: "k3s" (default, when the image has one) or "none".
	Runtime string `yaml:"runtime,omitempty" json:"runtime,omitempty"`
	// Role is how the runtime runs: "server" or "agent". Unset: "agent"
	// when k3s.server names a server to join, else "server" (k3OS's rule).
	// A k3OS k3s_args list that starts with "server" or "agent" sets it.
	Role string `yaml:"role,omitempty" json:"role,omitempty"`
	// ConfigTrial says how a changed config proves itself before it
	// becomes the one a broken config falls back to.
	ConfigTrial *ConfigTrial `yaml:"config_trial,omitempty" json:"config_trial,omitempty"`
}

// ConfigTrial: a changed config is on trial until a boot with it is ready
// (and, where the node runs k3s, the node Ready). A config that fails
// Boots boots in a row is set aside and the last good one applied again,
// until the config changes. Unset fields take the defaults below.
type ConfigTrial struct {
	// Boots is how many boots a new config gets; 0 means DefaultTrialBoots.
	Boots int `yaml:"boots,omitempty" json:"boots,omitempty"`
	// Timeout: a boot whose config is on trial and not healthy after this
	// long reboots (to try again, or to fall back), but only when a last
	// good config exists. A Go duration ("15m"); "0" never reboots; unset
	// means DefaultTrialTimeout.
	Timeout string `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// Defaults of ConfigTrial.
const (
	DefaultTrialBoots   = 3
	DefaultTrialTimeout = 15 * time.Minute
)

// BootsOrDefault returns Boots, or DefaultTrialBoots when unset.
func (t *ConfigTrial) BootsOrDefault() int {
	if t == nil || t.Boots <= 0 {
		return DefaultTrialBoots
	}
	return t.Boots
}

// TimeoutOrDefault returns Timeout (0: never reboot), or
// DefaultTrialTimeout when unset or unreadable (validate reports that).
func (t *ConfigTrial) TimeoutOrDefault() time.Duration {
	if t == nil || t.Timeout == "" {
		return DefaultTrialTimeout
	}
	d, err := time.ParseDuration(t.Timeout)
	if t.Timeout == "0" {
		d, err = 0, nil
	}
	if err != nil || d < 0 {
		return DefaultTrialTimeout
	}
	return d
}

// AgentSettings controls the control agent. Privileged calls (poweroff,
// reboot, exec) are refused unless Privileged is true, as in test images.
type AgentSettings struct {
	Privileged *bool `yaml:"privileged,omitempty" json:"privileged,omitempty"`
}

// SSHSettings controls the OpenSSH server.
type SSHSettings struct {
	Enabled                *bool `yaml:"enabled,omitempty" json:"enabled,omitempty"`
	Port                   int   `yaml:"port,omitempty" json:"port,omitempty"`
	PasswordAuthentication *bool `yaml:"password_authentication,omitempty" json:"password_authentication,omitempty"`
}
