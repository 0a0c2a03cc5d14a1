package cloudconfig

import (
	"reflect"
	"slices"
	"strings"
)

// Merge combines the configs of several datasources, in order: later ones
// win. Each is first made Effective, so the result has no k3os: block, only
// the ballast equivalents. nil configs are skipped; the inputs are not
// changed and share no memory with the result.
//
// Per key:
//   - scalars (hostname, instance_id, proxy.*, ballast.runtime, role,
//     ssh.port, wifi...) are replaced when the later config sets them
//     (non-empty string, non-zero number);
//   - pointer fields (ntp.enabled, network.dhcp, ballast.agent.privileged,
//     ballast.ssh.enabled, ...) are replaced when the later one is non-nil,
//     so a later "false" does turn a setting off;
//   - ssh_authorized_keys, write_files, bootcmd, runcmd and
//     ballast.modules append (identical SSH keys and module names are kept
//     once);
//   - users and manifests append, except that an entry with the name of an
//     earlier one replaces it where it stood (a user or a file is one thing);
//   - ntp.servers, network.interfaces, network.nameservers and
//     network.search are replaced as a whole when the later list is
//     non-empty: a later source describes the network, it does not add to
//     an earlier description;
//   - maps (k3s, ballast.sysctls, ballast.environment) merge key by key, the
//     later value winning; a k3s value is replaced, never appended to.
func Merge(configs ...*Config) *Config {
	out := &Config{}
	for _, c := range configs {
		if c != nil {
			out.mergeFrom(c.Effective())
		}
	}
	return out
}

// Effective returns a copy of the config with k3OS's k3os: block folded
// into the ballast keys, and K3OS nil. Where both say something, the
// ballast key written in the same config wins:
//
//	k3os.modules          -> ballast.modules (k3os ones first)
//	k3os.sysctls          -> ballast.sysctls (ballast.sysctls win)
//	k3os.environment      -> ballast.environment (ballast.environment wins)
//	k3os.ntp_servers      -> ntp.servers, if those are unset
//	k3os.dns_nameservers  -> network.nameservers, if unset
//	k3os.dns_searches     -> network.search, if unset
//	k3os.labels           -> k3s node-label ("key=value", sorted by key)
//	k3os.taints           -> k3s node-taint
//	k3os.k3s_args         -> k3s keys ("--flag=value", "--flag value",
//	                         "--flag"); a leading server/agent -> ballast.role
//	k3os.server_url       -> k3s server
//	k3os.token            -> k3s token
//
// For k3s keys, a value already in the k3s: block wins; when either value
// is a list (node-label, node-taint, disable, or a flag given twice) the
// two are concatenated, k3s: block first. k3os.password and
// k3os.data_sources have no equivalent (validation warns about them).
// Malformed k3s_args entries are skipped here; validation reports them.
func (cfg *Config) Effective() *Config {
	out := &Config{}
	if cfg == nil {
		return out
	}
	out.mergeFrom(cfg)
	k := out.K3OS
	out.K3OS = nil
	if k == nil {
		return out
	}

	if len(k.Modules) > 0 || len(k.Sysctls) > 0 || len(k.Environment) > 0 {
		if out.Ballast == nil {
			out.Ballast = &Ballast{}
		}
		b := out.Ballast
		b.Modules = appendUnique(slices.Clone(k.Modules), b.Modules...)
		b.Sysctls = overlay(k.Sysctls, b.Sysctls)
		b.Environment = overlay(k.Environment, b.Environment)
	}
	if len(k.NTPServers) > 0 && (out.NTP == nil || len(out.NTP.Servers) == 0) {
		if out.NTP == nil {
			out.NTP = &NTP{}
		}
		out.NTP.Servers = slices.Clone(k.NTPServers)
	}
	if len(k.DNSNameservers) > 0 || len(k.DNSSearch) > 0 {
		if out.Network == nil {
			out.Network = &Network{}
		}
		if len(out.Network.Nameservers) == 0 {
			out.Network.Nameservers = slices.Clone(k.DNSNameservers)
		}
		if len(out.Network.Search) == 0 {
			out.Network.Search = slices.Clone(k.DNSSearch)
		}
	}

	role, derived, _ := parseK3sArgs(k.K3sArgs)
	if role != "" {
		if out.Ballast == nil {
			out.Ballast = &Ballast{}
		}
		if out.Ballast.Role == "" {
			out.Ballast.Role = role
		}
	}
	addList := func(key string, items ...string) {
		for _, it := range items {
			list, _ := derived[key].([]any)
			derived[key] = append(list, it)
		}
	}
	for _, key := range sortedKeys(k.Labels) {
		addList("node-label", key+"="+k.Labels[key])
	}
	addList("node-taint", k.Taints...)
	if k.ServerURL != "" {
		if _, set := derived["server"]; !set {
			derived["server"] = k.ServerURL
		}
	}
	if k.Token != "" {
		if _, set := derived["token"]; !set {
			derived["token"] = k.Token
		}
	}
	if len(derived) > 0 && out.K3s == nil {
		out.K3s = map[string]any{}
	}
	for key, v := range derived {
		old, set := out.K3s[key]
		if !set {
			out.K3s[key] = v
			continue
		}
		ol, oldList := old.([]any)
		nl, newList := v.([]any)
		if !oldList && !newList {
			continue // the k3s: block wins
		}
		if !oldList {
			ol = []any{old}
		}
		if !newList {
			nl = []any{v}
		}
		combined := slices.Clone(ol)
		for _, item := range nl {
			if !slices.ContainsFunc(combined, func(x any) bool { return reflect.DeepEqual(x, item) }) {
				combined = append(combined, item)
			}
		}
		out.K3s[key] = combined
	}
	return out
}

// mergeFrom merges src into cfg with Merge's rules, deep-copying.
func (cfg *Config) mergeFrom(src *Config) {
	if src.Hostname != "" {
		cfg.Hostname = src.Hostname
	}
	if src.InstanceID != "" {
		cfg.InstanceID = src.InstanceID
	}
	cfg.SSHAuthorizedKeys = appendUniqueKeys(cfg.SSHAuthorizedKeys, src.SSHAuthorizedKeys...)
	for _, u := range src.Users {
		u = u.clone()
		if i := slices.IndexFunc(cfg.Users, func(x User) bool { return x.Name == u.Name }); i >= 0 {
			cfg.Users[i] = u
		} else {
			cfg.Users = append(cfg.Users, u)
		}
	}
	cfg.WriteFiles = append(cfg.WriteFiles, src.WriteFiles...) // File holds no references
	for _, c := range src.BootCmd {
		cfg.BootCmd = append(cfg.BootCmd, Command{Shell: c.Shell, Argv: slices.Clone(c.Argv)})
	}
	for _, c := range src.RunCmd {
		cfg.RunCmd = append(cfg.RunCmd, Command{Shell: c.Shell, Argv: slices.Clone(c.Argv)})
	}
	if s := src.NTP; s != nil {
		if cfg.NTP == nil {
			cfg.NTP = &NTP{}
		}
		mergeBoolPtr(&cfg.NTP.Enabled, s.Enabled)
		replaceList(&cfg.NTP.Servers, s.Servers)
	}
	if s := src.Network; s != nil {
		if cfg.Network == nil {
			cfg.Network = &Network{}
		}
		d := cfg.Network
		mergeBoolPtr(&d.DHCP, s.DHCP)
		if len(s.Interfaces) > 0 {
			d.Interfaces = make([]Interface, len(s.Interfaces))
			for i, iface := range s.Interfaces {
				iface.DHCP = cloneBoolPtr(iface.DHCP)
				iface.Addresses = slices.Clone(iface.Addresses)
				d.Interfaces[i] = iface
			}
		}
		replaceList(&d.Nameservers, s.Nameservers)
		replaceList(&d.Search, s.Search)
		if s.WiFi != nil {
			w := *s.WiFi
			d.WiFi = &w
		}
	}
	if s := src.Proxy; s != nil {
		if cfg.Proxy == nil {
			cfg.Proxy = &Proxy{}
		}
		mergeString(&cfg.Proxy.HTTPProxy, s.HTTPProxy)
		mergeString(&cfg.Proxy.HTTPSProxy, s.HTTPSProxy)
		mergeString(&cfg.Proxy.NoProxy, s.NoProxy)
		mergeString(&cfg.Proxy.ContainerdHTTPProxy, s.ContainerdHTTPProxy)
		mergeString(&cfg.Proxy.ContainerdHTTPSProxy, s.ContainerdHTTPSProxy)
		mergeString(&cfg.Proxy.ContainerdNoProxy, s.ContainerdNoProxy)
	}
	for _, m := range src.Manifests {
		if i := slices.IndexFunc(cfg.Manifests, func(x Manifest) bool { return x.Name == m.Name }); i >= 0 {
			cfg.Manifests[i] = m
		} else {
			cfg.Manifests = append(cfg.Manifests, m)
		}
	}
	if src.K3s != nil {
		if cfg.K3s == nil {
			cfg.K3s = map[string]any{}
		}
		for k, v := range src.K3s {
			cfg.K3s[k] = cloneAny(v)
		}
	}
	if s := src.K3OS; s != nil {
		if cfg.K3OS == nil {
			cfg.K3OS = &K3OS{}
		}
		d := cfg.K3OS
		d.Modules = appendUnique(d.Modules, s.Modules...)
		d.Sysctls = overlay(d.Sysctls, s.Sysctls)
		replaceList(&d.NTPServers, s.NTPServers)
		replaceList(&d.DNSNameservers, s.DNSNameservers)
		d.Labels = overlay(d.Labels, s.Labels)
		d.Taints = appendUnique(d.Taints, s.Taints...)
		replaceList(&d.K3sArgs, s.K3sArgs)
		d.Environment = overlay(d.Environment, s.Environment)
		mergeString(&d.ServerURL, s.ServerURL)
		mergeString(&d.Token, s.Token)
		mergeString(&d.Password, s.Password)
		replaceList(&d.DataSources, s.DataSources)
		replaceList(&d.DNSSearch, s.DNSSearch)
	}
	if s := src.Ballast; s != nil {
		if cfg.Ballast == nil {
			cfg.Ballast = &Ballast{}
		}
		d := cfg.Ballast
		d.Modules = appendUnique(d.Modules, s.Modules...)
		d.Sysctls = overlay(d.Sysctls, s.Sysctls)
		d.Environment = overlay(d.Environment, s.Environment)
		if s.Agent != nil {
			if d.Agent == nil {
				d.Agent = &AgentSettings{}
			}
			mergeBoolPtr(&d.Agent.Privileged, s.Agent.Privileged)
		}
		if s.SSH != nil {
			if d.SSH == nil {
				d.SSH = &SSHSettings{}
			}
			mergeBoolPtr(&d.SSH.Enabled, s.SSH.Enabled)
			if s.SSH.Port != 0 {
				d.SSH.Port = s.SSH.Port
			}
			mergeBoolPtr(&d.SSH.PasswordAuthentication, s.SSH.PasswordAuthentication)
		}
		mergeString(&d.Runtime, s.Runtime)
		mergeString(&d.Role, s.Role)
		if t := s.ConfigTrial; t != nil {
			if d.ConfigTrial == nil {
				d.ConfigTrial = &ConfigTrial{}
			}
			if t.Boots != 0 {
				d.ConfigTrial.Boots = t.Boots
			}
			mergeString(&d.ConfigTrial.Timeout, t.Timeout)
		}
	}
}

func (u User) clone() User {
	u.Groups = slices.Clone(u.Groups)
	u.SSHAuthorizedKeys = slices.Clone(u.SSHAuthorizedKeys)
	if u.UID != nil {
		uid := *u.UID
		u.UID = &uid
	}
	return u
}

func mergeString(dst *string, src string) {
	if src != "" {
		*dst = src
	}
}

func cloneBoolPtr(b *bool) *bool {
	if b == nil {
		return nil
	}
	v := *b
	return &v
}

func mergeBoolPtr(dst **bool, src *bool) {
	if src != nil {
		*dst = cloneBoolPtr(src)
	}
}

func replaceList(dst *[]string, src []string) {
	if len(src) > 0 {
		*dst = slices.Clone(src)
	}
}

// appendUnique appends the items not already in list.
func appendUnique(list []string, items ...string) []string {
	for _, it := range items {
		if !slices.Contains(list, it) {
			list = append(list, it)
		}
	}
	return list
}

// appendUniqueKeys is appendUnique for SSH keys, which are the same key
// whatever the surrounding whitespace.
func appendUniqueKeys(list []string, keys ...string) []string {
	for _, k := range keys {
		norm := strings.Join(strings.Fields(k), " ")
		if !slices.ContainsFunc(list, func(x string) bool { return strings.Join(strings.Fields(x), " ") == norm }) {
			list = append(list, k)
		}
	}
	return list
}

// overlay returns base with over's keys set on top, as a new map; nil when
// both are empty.
func overlay(base, over map[string]string) map[string]string {
	if len(base) == 0 && len(over) == 0 {
		return nil
	}
	out := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// cloneAny deep-copies the plain values generic decoding produces.
func cloneAny(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = cloneAny(e)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = cloneAny(e)
		}
		return l
	}
	return v
}
