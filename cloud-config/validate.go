package cloudconfig

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// check validates the typed config; c knows the positions (if any).
func (cfg *Config) check(c *checker) {
	if cfg.Hostname != "" {
		if err := checkHostname(cfg.Hostname); err != nil {
			c.errorf("hostname", "%v", err)
		}
	}
	checkSSHKeys(c, "ssh_authorized_keys", cfg.SSHAuthorizedKeys)

	userAt := map[string]int{}
	for i, u := range cfg.Users {
		p := joinIndex("users", i)
		u.check(c, p)
		if first, dup := userAt[u.Name]; dup && u.Name != "" {
			c.errorf(p+".name", "user %q is already defined at users[%d]", u.Name, first)
		} else {
			userAt[u.Name] = i
		}
	}
	for i, f := range cfg.WriteFiles {
		f.check(c, joinIndex("write_files", i))
	}
	for i, cmd := range cfg.BootCmd {
		cmd.check(c, joinIndex("bootcmd", i))
	}
	for i, cmd := range cfg.RunCmd {
		cmd.check(c, joinIndex("runcmd", i))
	}
	if cfg.NTP != nil {
		for i, s := range cfg.NTP.Servers {
			if err := checkHost(s); err != nil {
				c.errorf(joinIndex("ntp.servers", i), "%v", err)
			}
		}
	}
	if cfg.Network != nil {
		cfg.Network.check(c, "network")
	}
	if cfg.Proxy != nil {
		if v := cfg.Proxy.HTTPProxy; v != "" {
			if err := checkProxyURL(v); err != nil {
				c.errorf("proxy.http_proxy", "%v", err)
			}
		}
		if v := cfg.Proxy.HTTPSProxy; v != "" {
			if err := checkProxyURL(v); err != nil {
				c.errorf("proxy.https_proxy", "%v", err)
			}
		}
		if v := cfg.Proxy.ContainerdHTTPProxy; v != "" {
			if err := checkProxyURL(v); err != nil {
				c.errorf("proxy.containerd_http_proxy", "%v", err)
			}
		}
		if v := cfg.Proxy.ContainerdHTTPSProxy; v != "" {
			if err := checkProxyURL(v); err != nil {
				c.errorf("proxy.containerd_https_proxy", "%v", err)
			}
		}
	}
	manifestAt := map[string]int{}
	for i, m := range cfg.Manifests {
		p := joinIndex("manifests", i)
		if err := checkManifestName(m.Name); err != nil {
			c.errorf(p+".name", "%v", err)
		} else if first, dup := manifestAt[m.Name]; dup {
			c.errorf(p+".name", "manifest %q is already defined at manifests[%d]", m.Name, first)
		} else {
			manifestAt[m.Name] = i
		}
	}
	checkK3s(c, "k3s", cfg.K3s)
	checkJoiningServer(c, cfg)
	if cfg.K3OS != nil {
		cfg.K3OS.check(c, "k3os")
	}
	if cfg.Ballast != nil {
		cfg.Ballast.check(c, "ballast")
	}
}

var (
	hostLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	// Debian's useradd default NAME_REGEX, without the trailing "$" of
	// Samba machine accounts.
	accountName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	numericID   = regexp.MustCompile(`^[0-9]{1,10}$`)
	octalMode   = regexp.MustCompile(`^(0o|0)?[0-7]{3,4}$`)
	moduleName  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	sysctlKey   = regexp.MustCompile(`^[A-Za-z0-9_-]+([./][A-Za-z0-9_:-]+)*$`)
	envName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	wifiCountry = regexp.MustCompile(`^[A-Z]{2}$`)
	hexKey      = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// checkHostname: RFC 1123 host name, and at most 64 bytes, the kernel's
// limit for sethostname(2).
func checkHostname(h string) error {
	if len(h) > 64 {
		return fmt.Errorf("%q is longer than 64 characters, the kernel's limit", clip(h))
	}
	for _, label := range strings.Split(h, ".") {
		if !hostLabel.MatchString(label) {
			return fmt.Errorf("%q is not a valid host name (RFC 1123: letters, digits and inner hyphens, dot-separated labels of at most 63)", h)
		}
	}
	return nil
}

// checkDomain: a DNS name (search domains): RFC 1123 labels, 253 bytes.
func checkDomain(d string) error {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 {
		return fmt.Errorf("%q is not a valid domain name", clip(d))
	}
	for _, label := range strings.Split(d, ".") {
		if !hostLabel.MatchString(label) {
			return fmt.Errorf("%q is not a valid domain name", clip(d))
		}
	}
	return nil
}

// checkHost: an IP address or a DNS name (NTP servers).
func checkHost(h string) error {
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if err := checkDomain(h); err != nil {
		return fmt.Errorf("%q is neither an IP address nor a host name", clip(h))
	}
	return nil
}

func checkProxyURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", clip(v), err)
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return fmt.Errorf("%q is not a proxy URL (http://host:port)", clip(v))
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", clip(v))
	}
	return nil
}

func checkManifestName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("a manifest needs a name (e.g. my-app.yaml)")
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%q must be a file name, without slashes", clip(name))
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%q must not start with a dot (k3s skips hidden files)", clip(name))
	case !strings.HasSuffix(name, ".yaml") && !strings.HasSuffix(name, ".yml") && !strings.HasSuffix(name, ".json"):
		return fmt.Errorf("%q must end in .yaml, .yml or .json (k3s ignores other files)", clip(name))
	}
	return nil
}

func (u User) check(c *checker, p string) {
	switch {
	case u.Name == "":
		c.errorf(p+".name", "a user needs a name")
	case !accountName.MatchString(u.Name):
		c.errorf(p+".name", "%q is not a valid user name (lower-case letters, digits, _ and -, starting with a letter or _, at most 32)", clip(u.Name))
	}
	for i, g := range u.Groups {
		if !accountName.MatchString(g) {
			c.errorf(joinIndex(p+".groups", i), "%q is not a valid group name", clip(g))
		}
	}
	if u.Shell != "" && !path.IsAbs(u.Shell) {
		c.errorf(p+".shell", "%q must be an absolute path (e.g. /bin/bash)", clip(u.Shell))
	}
	if u.HomeDir != "" && !path.IsAbs(u.HomeDir) {
		c.errorf(p+".homedir", "%q must be an absolute path", clip(u.HomeDir))
	}
	if u.UID != nil && (*u.UID < 0 || *u.UID > 1<<31-2) {
		c.errorf(p+".uid", "%d is out of range", *u.UID)
	}
	if u.PasswdHash != "" && !strings.HasPrefix(u.PasswdHash, "$") && u.PasswdHash != "!" && u.PasswdHash != "*" {
		c.errorf(p+".passwd", "must be a crypt(3) hash such as `mkpasswd -m yescrypt` prints ($y$...), not a plain password")
	}
	checkSSHKeys(c, p+".ssh_authorized_keys", u.SSHAuthorizedKeys)
}

func checkSSHKeys(c *checker, p string, keys []string) {
	for i, k := range keys {
		if err := checkSSHKey(k); err != nil {
			c.errorf(joinIndex(p, i), "%v", err)
		}
	}
}

var sshKeyTypes = map[string]bool{
	"ssh-ed25519":                        true,
	"ssh-rsa":                            true,
	"ssh-dss":                            true,
	"ecdsa-sha2-nistp256":                true,
	"ecdsa-sha2-nistp384":                true,
	"ecdsa-sha2-nistp521":                true,
	"sk-ssh-ed25519@openssh.com":         true,
	"sk-ecdsa-sha2-nistp256@openssh.com": true,
}

func isSSHKeyType(t string) bool {
	if base, ok := strings.CutSuffix(t, "-cert-v01@openssh.com"); ok {
		t = base
		if base == "sk-ssh-ed25519" || base == "sk-ecdsa-sha2-nistp256" {
			t += "@openssh.com"
		}
	}
	return sshKeyTypes[t]
}

// checkSSHKey checks an authorized_keys line: [options] type base64 [comment].
// The base64 blob must decode and name the same key type, which catches
// truncated and mangled pastes.
func checkSSHKey(line string) error {
	line = strings.TrimSpace(line)
	if strings.Contains(line, "PRIVATE KEY") {
		return fmt.Errorf("this is a private key: put the public key (the .pub file) here, and keep the private one secret")
	}
	fields := strings.Fields(line)
	for i, f := range fields {
		if !isSSHKeyType(f) {
			continue
		}
		if i+1 >= len(fields) {
			return fmt.Errorf("SSH key %q has no key data after the type", clip(line))
		}
		blob, err := base64.StdEncoding.DecodeString(fields[i+1])
		if err != nil {
			return fmt.Errorf("SSH key %q: the key data is not base64 (truncated when pasted?)", clip(line))
		}
		if len(blob) < 4 {
			return fmt.Errorf("SSH key %q: the key data is too short", clip(line))
		}
		n := binary.BigEndian.Uint32(blob)
		if uint64(n) > uint64(len(blob)-4) || string(blob[4:4+n]) != f {
			return fmt.Errorf("SSH key %q: the key data is not a %s key", clip(line), f)
		}
		return nil
	}
	return fmt.Errorf("%q is not an SSH public key (expected \"ssh-ed25519 AAAA... comment\"; types: ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*)", clip(line))
}

func (f File) check(c *checker, p string) {
	switch {
	case f.Path == "":
		c.errorf(p+".path", "a file needs a path")
	case !path.IsAbs(f.Path):
		c.errorf(p+".path", "%q must be an absolute path", clip(f.Path))
	case strings.HasSuffix(f.Path, "/"):
		c.errorf(p+".path", "%q names a directory, not a file", clip(f.Path))
	case path.Clean(f.Path) != f.Path:
		c.errorf(p+".path", "%q is not a clean path (write %q)", clip(f.Path), path.Clean(f.Path))
	}
	encodingOK := true
	if _, err := canonicalEncoding(f.Encoding); err != nil {
		c.errorf(p+".encoding", "%v", err)
		encodingOK = false
	}
	if f.Permissions != "" && !octalMode.MatchString(f.Permissions) {
		c.errorf(p+".permissions", "%q is not an octal mode (e.g. \"0644\")", clip(f.Permissions))
	}
	if f.Owner != "" {
		if err := checkOwner(f.Owner); err != nil {
			c.errorf(p+".owner", "%v", err)
		}
	}
	if encodingOK {
		if _, err := f.Decode(); err != nil {
			c.errorf(p+".content", "%v", err)
		}
	}
}

func checkOwner(o string) error {
	user, group, hasGroup := strings.Cut(o, ":")
	ok := func(s string) bool { return accountName.MatchString(s) || numericID.MatchString(s) }
	if !ok(user) || (hasGroup && !ok(group)) {
		return fmt.Errorf("%q is not an owner (user, user:group, or uid:gid)", clip(o))
	}
	return nil
}

func (cmd Command) check(c *checker, p string) {
	switch {
	case cmd.Shell == "" && len(cmd.Argv) == 0:
		c.errorf(p, "empty command")
	case cmd.Shell == "" && cmd.Argv[0] == "":
		c.errorf(joinIndex(p, 0), "the program name is empty")
	}
}

func (n *Network) check(c *checker, p string) {
	for i, iface := range n.Interfaces {
		ip := joinIndex(p+".interfaces", i)
		if iface.Name == "" && iface.MAC == "" {
			c.errorf(ip, "an interface needs a name or a mac to match")
		}
		if iface.Name != "" && (len(iface.Name) > 15 || strings.ContainsAny(iface.Name, "/ \t:")) {
			c.errorf(ip+".name", "%q is not an interface name (at most 15 characters, no '/', ':' or spaces)", clip(iface.Name))
		}
		if iface.MAC != "" {
			if hw, err := net.ParseMAC(iface.MAC); err != nil || len(hw) != 6 {
				c.errorf(ip+".mac", "%q is not a MAC address (aa:bb:cc:dd:ee:ff)", clip(iface.MAC))
			}
		}
		for j, a := range iface.Addresses {
			if _, err := netip.ParsePrefix(a); err != nil {
				c.errorf(joinIndex(ip+".addresses", j), "%q is not an address with prefix length (e.g. 192.168.1.10/24)", clip(a))
			}
		}
		if iface.Gateway != "" {
			if _, err := netip.ParseAddr(iface.Gateway); err != nil {
				c.errorf(ip+".gateway", "%q is not an IP address", clip(iface.Gateway))
			}
		}
		if iface.MTU != 0 && (iface.MTU < 68 || iface.MTU > 65535) {
			c.errorf(ip+".mtu", "%d is not an MTU (68 to 65535)", iface.MTU)
		}
		if iface.DHCP != nil && *iface.DHCP && len(iface.Addresses) > 0 {
			// Both at once is legal for the kernel but almost never meant.
			c.warnf(ip+".dhcp", "dhcp is on and static addresses are set: both will be configured")
		}
	}
	for i, ns := range n.Nameservers {
		if _, err := netip.ParseAddr(ns); err != nil {
			c.errorf(joinIndex(p+".nameservers", i), "%q is not an IP address", clip(ns))
		}
	}
	for i, d := range n.Search {
		if err := checkDomain(d); err != nil {
			c.errorf(joinIndex(p+".search", i), "%v", err)
		}
	}
	if w := n.WiFi; w != nil {
		if w.SSID == "" || len(w.SSID) > 32 {
			c.errorf(p+".wifi.ssid", "an SSID is 1 to 32 bytes")
		}
		if w.PSK != "" && !(len(w.PSK) >= 8 && len(w.PSK) <= 63 || hexKey.MatchString(w.PSK)) {
			c.errorf(p+".wifi.psk", "a WPA2 passphrase is 8 to 63 characters (or 64 hex digits)")
		}
		if w.Interface != "" && (len(w.Interface) > 15 || strings.ContainsAny(w.Interface, "/ \t:")) {
			c.errorf(p+".wifi.interface", "%q is not an interface name (at most 15 characters, no '/', ':' or spaces)", clip(w.Interface))
		}
		if w.Country != "" && !wifiCountry.MatchString(w.Country) {
			c.errorf(p+".wifi.country", "%q is not an ISO 3166 country code (two capital letters, e.g. DE)", clip(w.Country))
		}
	}
}

func (b *Ballast) check(c *checker, p string) {
	checkModules(c, p+".modules", b.Modules)
	checkSysctls(c, p+".sysctls", b.Sysctls)
	checkEnvironment(c, p+".environment", b.Environment)
	if b.SSH != nil && b.SSH.Port != 0 && (b.SSH.Port < 1 || b.SSH.Port > 65535) {
		c.errorf(p+".ssh.port", "%d is not a TCP port (1 to 65535)", b.SSH.Port)
	}
	switch b.Runtime {
	case "", "k3s", "none":
	default:
		c.errorf(p+".runtime", "%q is not a runtime (k3s or none)", clip(b.Runtime))
	}
	switch b.Role {
	case "", "server", "agent":
	default:
		c.errorf(p+".role", "%q is not a role (server or agent)", clip(b.Role))
	}
	if t := b.ConfigTrial; t != nil {
		if t.Boots < 0 || t.Boots > 100 {
			c.errorf(p+".config_trial.boots", "%d is not a number of boots (1 to 100)", t.Boots)
		}
		if t.Timeout != "" && t.Timeout != "0" {
			if d, err := time.ParseDuration(t.Timeout); err != nil || d < time.Minute {
				c.errorf(p+".config_trial.timeout", "%q is not a duration of a minute or more (e.g. 15m), or 0 to never reboot", clip(t.Timeout))
			}
		}
	}
}

// serverOnlyK3sKeys are options only a k3s server acts on, which say
// that a config meant a server.
var serverOnlyK3sKeys = []string{"cluster-init", "cluster-reset", "datastore-endpoint", "tls-san", "cluster-cidr", "service-cidr", "etcd-snapshot-schedule-cron", "etcd-arg", "agent-token", "disable"}

// checkJoiningServer warns about a config that names a server to join
// (k3s.server) and server options, but leaves the role to its default:
// with k3s.server the node is an agent, and the agent ignores them. A
// server that joins another (HA) says ballast.role: server.
func checkJoiningServer(c *checker, cfg *Config) {
	if s, _ := cfg.K3s["server"].(string); s == "" || (cfg.Ballast != nil && cfg.Ballast.Role != "") {
		return
	}
	for _, key := range serverOnlyK3sKeys {
		if _, ok := cfg.K3s[key]; ok {
			c.keyWarnf(joinKey("k3s", key), "%s is a server option, but k3s.server makes this node an agent, which ignores it; to join as another server (HA), add ballast.role: server", key)
			return
		}
	}
}

func checkModules(c *checker, p string, mods []string) {
	for i, m := range mods {
		if !moduleName.MatchString(m) {
			c.errorf(joinIndex(p, i), "%q is not a kernel module name", clip(m))
		}
	}
}

func checkSysctls(c *checker, p string, sysctls map[string]string) {
	for _, k := range sortedKeys(sysctls) {
		if !sysctlKey.MatchString(k) || strings.Contains(k, "..") {
			c.keyErrorf(joinKey(p, k), "%q is not a sysctl name (e.g. net.ipv4.ip_forward)", clip(k))
		}
	}
}

func checkEnvironment(c *checker, p string, env map[string]string) {
	for _, k := range sortedKeys(env) {
		if !envName.MatchString(k) {
			c.keyErrorf(joinKey(p, k), "%q is not an environment variable name", clip(k))
		}
	}
}

func (k *K3OS) check(c *checker, p string) {
	checkModules(c, p+".modules", k.Modules)
	checkSysctls(c, p+".sysctls", k.Sysctls)
	checkEnvironment(c, p+".environment", k.Environment)
	for i, s := range k.NTPServers {
		if err := checkHost(s); err != nil {
			c.errorf(joinIndex(p+".ntp_servers", i), "%v", err)
		}
	}
	for i, ns := range k.DNSNameservers {
		if _, err := netip.ParseAddr(ns); err != nil {
			c.errorf(joinIndex(p+".dns_nameservers", i), "%q is not an IP address", clip(ns))
		}
	}
	for i, d := range k.DNSSearch {
		if err := checkDomain(d); err != nil {
			c.errorf(joinIndex(p+".dns_searches", i), "%v", err)
		}
	}
	for _, key := range sortedKeys(k.Labels) {
		value := k.Labels[key]
		if err := checkNodeLabel(key + "=" + value); err != nil {
			c.errorf(joinKey(p+".labels", key), "%v", err)
		}
	}
	for i, t := range k.Taints {
		if err := checkNodeTaint(t); err != nil {
			c.errorf(joinIndex(p+".taints", i), "%v", err)
		}
	}
	checkK3sArgs(c, p+".k3s_args", k.K3sArgs)
	if k.ServerURL != "" {
		if err := checkServerURL(k.ServerURL); err != nil {
			c.errorf(p+".server_url", "%v", err)
		}
	}
	if k.Token != "" {
		if err := checkToken(k.Token); err != nil {
			c.errorf(p+".token", "%v", err)
		}
	}
	if k.Password != "" {
		c.warnf(p+".password", "ballast does not set passwords from k3os.password; add a user with a passwd hash, or use ssh_authorized_keys")
	}
	if len(k.DataSources) > 0 {
		c.warnf(p+".data_sources", "ignored: ballast reads its own datasources (boot partition user-data, CIDATA, fw_cfg, ballast.config_url=)")
	}
}

// sortedKeys makes map checks report in a stable order.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
