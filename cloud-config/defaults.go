package cloudconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// DefaultNTPServers are used when the config names none: the Debian pool.
var DefaultNTPServers = []string{
	"0.debian.pool.ntp.org",
	"1.debian.pool.ntp.org",
	"2.debian.pool.ntp.org",
	"3.debian.pool.ntp.org",
}

// DefaultSSHPort is the OpenSSH port unless ballast.ssh.port says otherwise.
const DefaultSSHPort = 22

// The accessors below read the config as given: call them on the result of
// Merge (or Effective) so that k3os: settings are counted. All are safe on
// a nil *Config.

// NTPEnabled: time sync runs unless ntp.enabled is false.
func (cfg *Config) NTPEnabled() bool {
	if cfg == nil || cfg.NTP == nil || cfg.NTP.Enabled == nil {
		return true
	}
	return *cfg.NTP.Enabled
}

// NTPServersOrDefault is ntp.servers, or DefaultNTPServers when none are set.
func (cfg *Config) NTPServersOrDefault() []string {
	if cfg != nil && cfg.NTP != nil && len(cfg.NTP.Servers) > 0 {
		return slices.Clone(cfg.NTP.Servers)
	}
	return slices.Clone(DefaultNTPServers)
}

// DHCPOrDefault is network.dhcp: DHCP on every wired interface not listed
// in network.interfaces; true when unset.
func (cfg *Config) DHCPOrDefault() bool {
	if cfg == nil || cfg.Network == nil || cfg.Network.DHCP == nil {
		return true
	}
	return *cfg.Network.DHCP
}

// DHCPOrDefault for a listed interface: its dhcp key, or else DHCP exactly
// when it has no static addresses.
func (i Interface) DHCPOrDefault() bool {
	if i.DHCP != nil {
		return *i.DHCP
	}
	return len(i.Addresses) == 0
}

// AgentPrivileged: the control agent's privileged calls (exec, poweroff,
// reboot) are refused unless ballast.agent.privileged is true.
func (cfg *Config) AgentPrivileged() bool {
	if cfg == nil || cfg.Ballast == nil || cfg.Ballast.Agent == nil || cfg.Ballast.Agent.Privileged == nil {
		return false
	}
	return *cfg.Ballast.Agent.Privileged
}

func (cfg *Config) ssh() *SSHSettings {
	if cfg == nil || cfg.Ballast == nil || cfg.Ballast.SSH == nil {
		return &SSHSettings{}
	}
	return cfg.Ballast.SSH
}

// SSHEnabled: the SSH server runs unless ballast.ssh.enabled is false.
func (cfg *Config) SSHEnabled() bool {
	if s := cfg.ssh(); s.Enabled != nil {
		return *s.Enabled
	}
	return true
}

// SSHPort is ballast.ssh.port, DefaultSSHPort when unset.
func (cfg *Config) SSHPort() int {
	if s := cfg.ssh(); s.Port != 0 {
		return s.Port
	}
	return DefaultSSHPort
}

// SSHPasswordAuth: password logins over SSH are off unless
// ballast.ssh.password_authentication is true.
func (cfg *Config) SSHPasswordAuth() bool {
	if s := cfg.ssh(); s.PasswordAuthentication != nil {
		return *s.PasswordAuthentication
	}
	return false
}

// RuntimeOrDefault is ballast.runtime, "k3s" when unset.
func (cfg *Config) RuntimeOrDefault() string {
	if cfg != nil && cfg.Ballast != nil && cfg.Ballast.Runtime != "" {
		return cfg.Ballast.Runtime
	}
	return "k3s"
}

// RoleOrDefault is ballast.role; when unset, "agent" if k3s.server names a
// server to join, else "server", which is k3OS's rule.
func (cfg *Config) RoleOrDefault() string {
	if cfg == nil {
		return "server"
	}
	if cfg.Ballast != nil && cfg.Ballast.Role != "" {
		return cfg.Ballast.Role
	}
	if s, _ := cfg.K3s["server"].(string); s != "" {
		return "agent"
	}
	return "server"
}

// Hash is the hex SHA-256 of the config's canonical JSON serialization
// (fields in schema order, map keys sorted), to tell config generations
// apart: equal configs hash equal, whatever source order or YAML layout
// produced them. It hashes the config as given; Merge's result is what
// the init records.
func (cfg *Config) Hash() string {
	data, err := json.Marshal(canonical(cfg))
	if err != nil {
		// canonical leaves nothing json cannot encode; if that ever
		// changes, still hash something stable rather than panic in init.
		data = []byte(fmt.Sprintf("unencodable config: %v", err))
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// canonical is a copy whose k3s values json can always encode: values
// built in code may hold NaN or types json refuses; those become text.
func canonical(cfg *Config) *Config {
	if cfg == nil {
		return &Config{}
	}
	c := *cfg
	if cfg.K3s != nil {
		c.K3s = make(map[string]any, len(cfg.K3s))
		for k, v := range cfg.K3s {
			c.K3s[k] = jsonSafe(v)
		}
	}
	return &c
}

func jsonSafe(v any) any {
	switch v := v.(type) {
	case nil, string, bool, int, int64, uint64:
		return v
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Sprint(v)
		}
		return v
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = jsonSafe(e)
		}
		return l
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = jsonSafe(e)
		}
		return m
	case []string:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = e
		}
		return l
	}
	return fmt.Sprint(v)
}
