package cloudconfig

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

// sshKey builds a well-formed authorized_keys line of the given type with
// a made-up key body (the validator checks the framing, not the curve).
func sshKey(typ, comment string) string {
	var blob []byte
	put := func(b []byte) {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(b)))
		blob = append(blob, b...)
	}
	put([]byte(typ))
	put([]byte(strings.Repeat("k", 32)))
	return typ + " " + base64.StdEncoding.EncodeToString(blob) + " " + comment
}

// errorLines parses doc as "user-data" and returns each error's text.
func errorLines(t *testing.T, doc string) []string {
	t.Helper()
	cfg, err := Parse("user-data", []byte(doc))
	if err == nil {
		t.Fatalf("no error for:\n%s", doc)
	}
	if cfg != nil {
		t.Errorf("a config came back with the error")
	}
	var list *ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is not an *ErrorList: %T %v", err, err)
	}
	var lines []string
	for _, e := range list.Errors {
		lines = append(lines, e.Error())
	}
	return lines
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string // "#cloud-config\n" is prepended
		want []string
	}{
		{
			name: "unknown top-level key suggests",
			doc:  "hostnme: node-1\n",
			want: []string{`user-data:2:1: hostnme: unknown key "hostnme" (did you mean "hostname"?)`},
		},
		{
			name: "unknown key with dashes for underscores",
			doc:  "ssh-authorized-keys: []\n",
			want: []string{`user-data:2:1: ssh-authorized-keys: unknown key "ssh-authorized-keys" (did you mean "ssh_authorized_keys"?)`},
		},
		{
			name: "unknown key with no close match",
			doc:  "flavour: vanilla\n",
			want: []string{`user-data:2:1: flavour: unknown key "flavour"`},
		},
		{
			name: "cloud-init key ballast does not have",
			doc:  "packages: [htop]\nssh_pwauth: true\n",
			want: []string{
				`user-data:2:1: packages: cloud-init's packages is not supported by ballast: a node has no package manager; add packages to the build spec`,
				`user-data:3:1: ssh_pwauth: cloud-init's ssh_pwauth is not supported by ballast: use ballast.ssh.password_authentication`,
			},
		},
		{
			name: "nested unknown key",
			doc:  "ballast:\n  ssh:\n    prot: 2222\n",
			want: []string{`user-data:4:5: ballast.ssh.prot: unknown key "prot" (did you mean "port"?)`},
		},
		{
			name: "transposed letters",
			doc:  "write_files:\n  - path: /etc/x\n    contnet: hi\n",
			want: []string{`user-data:4:5: write_files[0].contnet: unknown key "contnet" (did you mean "content"?)`},
		},
		{
			name: "string expected",
			doc:  "hostname: [a, b]\n",
			want: []string{`user-data:2:11: hostname: expected a string, got a list`},
		},
		{
			name: "list expected",
			doc:  "ssh_authorized_keys: " + sshKey("ssh-ed25519", "me") + "\n",
			want: []string{`user-data:2:22: ssh_authorized_keys: expected a list, got the string "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtra2tra2tra2tra2tra..." (write a one-item list as "- value" on the next line, or [value])`},
		},
		{
			name: "map expected",
			doc:  "ntp: pool.ntp.org\n",
			want: []string{`user-data:2:6: ntp: expected a map, got the string "pool.ntp.org"`},
		},
		{
			name: "boolean expected",
			doc:  "ntp:\n  enabled: maybe\n",
			want: []string{`user-data:3:12: ntp.enabled: expected true or false, got the string "maybe"`},
		},
		{
			name: "quoted boolean is a string",
			doc:  "network:\n  dhcp: \"false\"\n",
			want: []string{`user-data:3:9: network.dhcp: expected true or false, got the string "false"`},
		},
		{
			name: "number expected",
			doc:  "ballast:\n  ssh:\n    port: \"22\"\n",
			want: []string{`user-data:4:11: ballast.ssh.port: expected a whole number, got the string "22"`},
		},
		{
			name: "permissions not octal",
			doc:  "write_files:\n  - path: /a\n    content: a\n  - path: /b\n  - path: /c\n    permissions: \"0x644\"\n",
			want: []string{`user-data:7:18: write_files[2].permissions: "0x644" is not an octal mode (e.g. "0644")`},
		},
		{
			name: "file path, encoding, owner, content",
			doc: "write_files:\n" +
				"  - path: etc/x\n" +
				"    encoding: rot13\n" +
				"    owner: \"root:wheel:extra\"\n" +
				"  - path: /etc/y\n" +
				"    encoding: b64\n" +
				"    content: \"not*base64\"\n" +
				"  - content: x\n" +
				"  - path: /etc/../x\n",
			want: []string{
				`user-data:3:11: write_files[0].path: "etc/x" must be an absolute path`,
				`user-data:4:15: write_files[0].encoding: "rot13" is not an encoding (text, b64, base64, gz, gzip, gz+b64, gz+base64, gzip+base64)`,
				`user-data:5:12: write_files[0].owner: "root:wheel:extra" is not an owner (user, user:group, or uid:gid)`,
				`user-data:8:14: write_files[1].content: content is not base64: illegal base64 data at input byte 3`,
				`user-data:9:5: write_files[2].path: a file needs a path`,
				`user-data:10:11: write_files[3].path: "/etc/../x" is not a clean path (write "/x")`,
			},
		},
		{
			name: "gzip content that is not gzip",
			doc:  "write_files:\n  - path: /x\n    encoding: gz+b64\n    content: aGVsbG8gd29ybGQsIG5vdCBnemlw\n",
			want: []string{`user-data:5:14: write_files[0].content: content is not gzip: gzip: invalid header`},
		},
		{
			name: "users",
			doc: "users:\n" +
				"  - name: Admin\n" +
				"    passwd: hunter2\n" +
				"    shell: bash\n" +
				"    ssh_authorized_keys:\n" +
				"      - ssh-ed25519 AAAA me@laptop\n" +
				"      - not a key\n" +
				"  - gecos: nobody\n" +
				"  - name: ops\n" +
				"  - name: ops\n",
			want: []string{
				`user-data:3:11: users[0].name: "Admin" is not a valid user name (lower-case letters, digits, _ and -, starting with a letter or _, at most 32)`,
				"user-data:4:13: users[0].passwd: must be a crypt(3) hash such as `mkpasswd -m yescrypt` prints ($y$...), not a plain password",
				`user-data:5:12: users[0].shell: "bash" must be an absolute path (e.g. /bin/bash)`,
				`user-data:7:9: users[0].ssh_authorized_keys[0]: SSH key "ssh-ed25519 AAAA me@laptop": the key data is too short`,
				`user-data:8:9: users[0].ssh_authorized_keys[1]: "not a key" is not an SSH public key (expected "ssh-ed25519 AAAA... comment"; types: ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*)`,
				`user-data:9:5: users[1].name: a user needs a name`,
				`user-data:11:11: users[3].name: user "ops" is already defined at users[2]`,
			},
		},
		{
			name: "ssh key mislabelled and private",
			doc: "ssh_authorized_keys:\n" +
				"  - " + strings.Replace(sshKey("ssh-ed25519", "a"), "ssh-ed25519 ", "ssh-rsa ", 1) + "\n" +
				"  - \"-----BEGIN OPENSSH PRIVATE KEY-----\"\n",
			want: []string{
				`user-data:3:5: ssh_authorized_keys[0]: SSH key "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGtra2tra2tra2tra2tra2tra...": the key data is not a ssh-rsa key`,
				`user-data:4:5: ssh_authorized_keys[1]: this is a private key: put the public key (the .pub file) here, and keep the private one secret`,
			},
		},
		{
			name: "network",
			doc: "network:\n" +
				"  interfaces:\n" +
				"    - name: eth0\n" +
				"      mac: 52:54:00:zz:00:01\n" +
				"      addresses: [192.168.1.10, 10.0.0.1/8]\n" +
				"      gateway: 192.168.1.300\n" +
				"      mtu: 20\n" +
				"    - dhcp: true\n" +
				"  nameservers: [1.1.1.1, dns.google]\n" +
				"  search: [lan, \"bad_domain\"]\n",
			want: networkWant,
		},
		{
			name: "wifi",
			doc: "network:\n" +
				"  wifi:\n" +
				"    ssid: home\n" +
				"    psk: short\n" +
				"    interface: \"wlan 0\"\n" +
				"    country: de\n",
			want: []string{
				`user-data:5:10: network.wifi.psk: a WPA2 passphrase is 8 to 63 characters (or 64 hex digits)`,
				`user-data:6:16: network.wifi.interface: "wlan 0" is not an interface name (at most 15 characters, no '/', ':' or spaces)`,
				`user-data:7:14: network.wifi.country: "de" is not an ISO 3166 country code (two capital letters, e.g. DE)`,
			},
		},
		{
			name: "manifests",
			doc: "manifests:\n" +
				"  - name: apps/web.yaml\n    content: x\n" +
				"  - name: web.txt\n    content: x\n" +
				"  - name: web.yaml\n    content: x\n" +
				"  - name: web.yaml\n    content: y\n",
			want: []string{
				`user-data:3:11: manifests[0].name: "apps/web.yaml" must be a file name, without slashes`,
				`user-data:5:11: manifests[1].name: "web.txt" must end in .yaml, .yml or .json (k3s ignores other files)`,
				`user-data:9:11: manifests[3].name: manifest "web.yaml" is already defined at manifests[2]`,
			},
		},
		{
			name: "hostname",
			doc:  "hostname: -node_1\n",
			want: []string{`user-data:2:11: hostname: "-node_1" is not a valid host name (RFC 1123: letters, digits and inner hyphens, dot-separated labels of at most 63)`},
		},
		{
			name: "k3s join: server URL and token shape",
			doc: "k3s:\n" +
				"  server: 10.0.0.1:6443\n" +
				"  token: K10abc::node:secret\n" +
				"k3os:\n" +
				"  server_url: https://\n" +
				"  token: K10" + strings.Repeat("a", 64) + "::nocolon\n",
			want: []string{
				`user-data:3:11: k3s.server: server "10.0.0.1:6443": want https://HOST:6443 (the server's https-listen-port)`,
				`user-data:4:10: k3s.token: the token starts with K10 but is not K10<64 lower-case hex digits>::<credentials> (copy it whole from the server's /var/lib/rancher/k3s/server/node-token)`,
				`user-data:6:15: k3os.server_url: server "https://" has no host: want https://HOST:6443`,
				`user-data:7:10: k3os.token: the token's credentials after "::" are not <user>:<password> or a bootstrap token (copy it whole from the server's /var/lib/rancher/k3s/server/node-token)`,
			},
		},
		{
			name: "k3s node labels and taints",
			doc: "k3s:\n" +
				"  node-label:\n" +
				"    - node-role.kubernetes.io/worker=true\n" +
				"    - node.kubernetes.io/instance-type=pi4\n" +
				"    - example.com/site=lab\n" +
				"    - k8s.io/team=a\n" +
				"    - justakey\n" +
				"  node-taint: dedicated=edge:NoWhere\n" +
				"  cluster-init: perhaps\n" +
				"  disable: {traefik: true}\n",
			want: []string{
				`user-data:4:7: k3s.node-label[0]: node label "node-role.kubernetes.io/worker": the kubelet refuses labels under kubernetes.io and k8s.io other than node.kubernetes.io/*, kubelet.kubernetes.io/* and a few well-known ones, so k3s would not start; set roles with kubectl label after the node joined, or use a label of your own (e.g. example.com/role)`,
				`user-data:7:7: k3s.node-label[3]: node label "k8s.io/team": the kubelet refuses labels under kubernetes.io and k8s.io other than node.kubernetes.io/*, kubelet.kubernetes.io/* and a few well-known ones, so k3s would not start`,
				`user-data:8:7: k3s.node-label[4]: node label "justakey" must be key=value`,
				`user-data:9:15: k3s.node-taint: node taint "dedicated=edge:NoWhere": effect "NoWhere" is not NoSchedule, PreferNoSchedule or NoExecute`,
				`user-data:10:17: k3s.cluster-init: cluster-init is a true/false option; "perhaps" would stop k3s from starting`,
				`user-data:11:12: k3s.disable: a k3s option's value is a string, number, boolean, or a list of those; got a map`,
			},
		},
		{
			name: "k3s etcd options that k3s refuses together",
			doc: "k3s:\n" +
				"  cluster-init: true\n" +
				"  datastore-endpoint: https://etcd.example:2379\n" +
				"  cluster-reset-restore-path: /var/lib/rancher/k3s/server/db/snapshots/x\n" +
				"  etcd-snapshot-schedule-cron: every day\n" +
				"  etcd-arg: [quota-backend-bytes]\n",
			want: []string{
				`user-data:3:17: k3s.cluster-init: cluster-init (embedded etcd) cannot be used with datastore-endpoint (an external datastore): k3s refuses to start; remove one`,
				`user-data:5:31: k3s.cluster-reset-restore-path: cluster-reset-restore-path needs cluster-reset: true (restoring a snapshot resets the cluster to this one server)`,
				`user-data:6:32: k3s.etcd-snapshot-schedule-cron: not a cron schedule (five fields, e.g. "0 */12 * * *"): expected exactly 5 fields, found 2: [every day]`,
				`user-data:7:14: k3s.etcd-arg[0]: etcd-arg "quota-backend-bytes": want key=value (an etcd config key, e.g. quota-backend-bytes=8589934592)`,
			},
		},
		{
			name: "k3os block",
			doc: "k3os:\n" +
				"  labels:\n" +
				"    node-role.kubernetes.io/worker: \"true\"\n" +
				"  taints: [\"CriticalAddonsOnly=true\"]\n" +
				"  k3s_args: [server, stray, --node-name]\n" +
				"  server_url: http://10.0.0.1:6443\n" +
				"  dns_nameservers: [one.one.one.one]\n",
			want: []string{
				`user-data:4:37: k3os.labels["node-role.kubernetes.io/worker"]: node label "node-role.kubernetes.io/worker": the kubelet refuses labels under kubernetes.io and k8s.io other than node.kubernetes.io/*, kubelet.kubernetes.io/* and a few well-known ones, so k3s would not start; set roles with kubectl label after the node joined, or use a label of your own (e.g. example.com/role)`,
				`user-data:5:12: k3os.taints[0]: node taint "CriticalAddonsOnly=true" must be key=value:Effect or key:Effect`,
				`user-data:6:22: k3os.k3s_args[1]: unexpected argument "stray": k3s_args are flags (--name=value or --name value), optionally after server or agent`,
				`user-data:6:29: k3os.k3s_args[2]: --node-name needs a value`,
				`user-data:7:15: k3os.server_url: server "http://10.0.0.1:6443": want https://HOST:6443 (the server's https-listen-port)`,
				`user-data:8:21: k3os.dns_nameservers[0]: "one.one.one.one" is not an IP address`,
			},
		},
		{
			name: "ballast block",
			doc: "ballast:\n" +
				"  modules: [br_netfilter, \"bad module\"]\n" +
				"  sysctls:\n" +
				"    net.ipv4.ip_forward: 1\n" +
				"    \"../../etc/shadow\": x\n" +
				"  environment: {\"1BAD\": x}\n" +
				"  runtime: docker\n" +
				"  role: master\n" +
				"  ssh: {port: 70000}\n" +
				"  config_trial: {boots: -1, timeout: 10s}\n",
			want: []string{
				`user-data:3:27: ballast.modules[1]: "bad module" is not a kernel module name`,
				`user-data:6:5: ballast.sysctls["../../etc/shadow"]: "../../etc/shadow" is not a sysctl name (e.g. net.ipv4.ip_forward)`,
				`user-data:7:17: ballast.environment.1BAD: "1BAD" is not an environment variable name`,
				`user-data:8:12: ballast.runtime: "docker" is not a runtime (k3s or none)`,
				`user-data:9:9: ballast.role: "master" is not a role (server or agent)`,
				`user-data:10:15: ballast.ssh.port: 70000 is not a TCP port (1 to 65535)`,
				`user-data:11:25: ballast.config_trial.boots: -1 is not a number of boots (1 to 100)`,
				`user-data:11:38: ballast.config_trial.timeout: "10s" is not a duration of a minute or more (e.g. 15m), or 0 to never reboot`,
			},
		},
		{
			name: "commands",
			doc:  "runcmd:\n  - echo ok\n  - [touch, /x]\n  - {sh: x}\n  - [ls, [nested]]\n  - []\n",
			want: []string{
				`user-data:5:5: runcmd[2]: a command is a string (run by /bin/sh -c) or a list of arguments, got a map`,
				`user-data:6:10: runcmd[3][1]: a command's arguments are strings, got a list`,
				`user-data:7:5: runcmd[4]: empty command`,
			},
		},
		{
			name: "duplicate key",
			doc:  "hostname: a\nntp: {}\nhostname: b\n",
			want: []string{`user-data:4:1: hostname: key is already set at line 2`},
		},
		{
			name: "root is a list",
			doc:  "- hostname: a\n",
			want: []string{`user-data:2:1: a cloud-config is a map of keys (hostname: ..., write_files: ...), got a list`},
		},
		{
			name: "second document",
			doc:  "hostname: a\n---\nhostname: b\n",
			want: []string{`user-data:3: a cloud-config is one YAML document; found a second one (after ---)`},
		},
		{
			name: "syntax error",
			doc:  "hostname: a\nntp:\n  servers: [a\n",
			want: []string{`user-data:4: YAML syntax: did not find expected ',' or ']'`},
		},
		{
			name: "key that is not a string",
			doc:  "? [a]\n: b\n",
			want: []string{`user-data:2:3: keys must be strings, got a list`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := errorLines(t, "#cloud-config\n"+tt.doc)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tt.want, "\n      "))
			}
		})
	}
}

var networkWant = []string{
	`user-data:5:12: network.interfaces[0].mac: "52:54:00:zz:00:01" is not a MAC address (aa:bb:cc:dd:ee:ff)`,
	`user-data:6:19: network.interfaces[0].addresses[0]: "192.168.1.10" is not an address with prefix length (e.g. 192.168.1.10/24)`,
	`user-data:7:16: network.interfaces[0].gateway: "192.168.1.300" is not an IP address`,
	`user-data:8:12: network.interfaces[0].mtu: 20 is not an MTU (68 to 65535)`,
	`user-data:9:7: network.interfaces[1]: an interface needs a name or a mac to match`,
	`user-data:10:26: network.nameservers[1]: "dns.google" is not an IP address`,
	`user-data:11:17: network.search[1]: "bad_domain" is not a valid domain name`,
}

func TestHeader(t *testing.T) {
	for _, tt := range []struct {
		name, doc, want string
	}{
		{"missing", "hostname: a\n", `user-data:1:1: the first line must be "#cloud-config", found "hostname: a"`},
		{"script", "#!/bin/sh\necho hi\n", `user-data:1:1: the first line must be "#cloud-config", found "#!/bin/sh" (scripts are not supported as user-data: use bootcmd or runcmd)`},
		{"other comment", "# my node\n#cloud-config\n", `user-data:1:1: the first line must be "#cloud-config", found "# my node"`},
		{"after blank lines", "\n\nhostname: a\n", `user-data:3:1: the first line must be "#cloud-config", found "hostname: a"`},
		{"k3os key that is no block", "k3os: yes\n", `user-data:1:1: the first line must be "#cloud-config", found "k3os: yes"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := errorLines(t, tt.doc)
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
	for _, ok := range []string{
		"",
		"  \n\t\n",
		"#cloud-config",
		"#cloud-config\n",
		"\xEF\xBB\xBF#cloud-config\r\nhostname: a\r\n",
		"\n  #cloud-config  \nhostname: a\n",
		"#cloud-config\n# just comments\n",
		"#cloud-config\n~\n",
	} {
		cfg, err := Parse("user-data", []byte(ok))
		if err != nil || cfg == nil {
			t.Errorf("Parse(%q) = %v, %v; want a config", ok, cfg, err)
		}
	}
	cfg, err := Parse("user-data", []byte("\xEF\xBB\xBF#cloud-config\r\nhostname: a\r\n"))
	if err != nil || cfg.Hostname != "a" {
		t.Errorf("BOM and CRLF: %+v, %v", cfg, err)
	}
	// A k3OS config.yaml as k3OS users have it: no #cloud-config line, a
	// k3os: block.
	k3os := "# k3OS config\nhostname: pi1\nk3os:\n  ntp_servers: [10.0.0.1]\n  k3s_args: [server]\n  labels: {zone: a}\n"
	cfg, err = Parse("config.yaml", []byte(k3os))
	if err != nil || cfg.Hostname != "pi1" || cfg.K3OS == nil {
		t.Fatalf("k3OS config.yaml without the header: %+v, %v", cfg, err)
	}
	if eff := cfg.Effective(); eff.NTP == nil || len(eff.NTP.Servers) != 1 || eff.NTP.Servers[0] != "10.0.0.1" {
		t.Errorf("k3os.ntp_servers did not fold into ntp.servers: %+v", eff.NTP)
	}
}

// Every problem is reported, across the whole file, in file order.
func TestParseCollectsAllErrors(t *testing.T) {
	doc := "#cloud-config\n" +
		"hostnme: a\n" +
		"write_files:\n  - path: rel\n" +
		"network:\n  dhcp: sometimes\n" +
		"k3s:\n  node-label: [node-role.kubernetes.io/master=true]\n" +
		"runcmd: echo\n"
	got := errorLines(t, doc)
	want := []string{
		"user-data:2:1: hostnme:",
		"user-data:4:11: write_files[0].path:",
		"user-data:6:9: network.dhcp:",
		"user-data:8:16: k3s.node-label[0]:",
		"user-data:9:9: runcmd:",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
	// errors.As reaches the single errors too.
	_, err := Parse("user-data", []byte(doc))
	var one *Error
	if !errors.As(err, &one) || one.Key != "hostnme" || one.Line != 2 || one.Column != 1 || one.Source != "user-data" {
		t.Errorf("errors.As(*Error) = %+v", one)
	}
}

func TestWarnings(t *testing.T) {
	doc := "#cloud-config\n" +
		"k3s:\n" +
		"  node-lable: [a=b]\n" +
		"  --disable: traefik\n" +
		"  write_kubeconfig_mode: \"0644\"\n" +
		"  token: secret\n" +
		"k3os:\n" +
		"  password: rancher\n" +
		"  data_sources: [aws]\n"
	cfg, warns, err := ParseWithWarnings("user-data", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil {
		t.Fatal("no config")
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	want := []string{
		`user-data:3:3: k3s.node-lable: unknown k3s option "node-lable" (did you mean "node-label"?); k3s ignores it`,
		`user-data:4:3: k3s.--disable: k3s config keys are written without dashes: "disable"; k3s ignores this one`,
		`user-data:5:3: k3s.write_kubeconfig_mode: unknown k3s option "write_kubeconfig_mode" (did you mean "write-kubeconfig-mode"?); k3s ignores it`,
		`user-data:8:13: k3os.password: ballast does not set passwords from k3os.password; add a user with a passwd hash, or use ssh_authorized_keys`,
		`user-data:9:17: k3os.data_sources: ignored: ballast reads its own datasources (boot partition user-data, CIDATA, fw_cfg, ballast.config_url=)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}

	lines, err := Validate("user-data", []byte(doc))
	if err != nil || len(lines) != len(want) || lines[0] != want[0] {
		t.Errorf("Validate = %q, %v", lines, err)
	}
}

func TestParseValid(t *testing.T) {
	key := sshKey("ssh-ed25519", "me@laptop")
	doc := "#cloud-config\n" +
		"hostname: edge-1\n" +
		"ssh_authorized_keys:\n  - " + key + "\n" +
		"  - command=\"uptime\",no-pty " + sshKey("ecdsa-sha2-nistp256", "cert") + "\n" +
		"  - " + sshKey("sk-ssh-ed25519@openssh.com", "yubikey") + "\n" +
		"users:\n  - name: ops\n    groups: [sudo]\n    uid: 1001\n    shell: /bin/bash\n    passwd: \"$y$j9T$abc$def\"\n" +
		"write_files:\n" +
		"  - path: /etc/motd\n    content: hello\n    permissions: 0600\n    owner: ops:ops\n" +
		"  - path: /etc/bin\n    content: !!binary aGk=\n" +
		"bootcmd:\n  - echo boot\n" +
		"runcmd:\n  - [touch, /tmp/x]\n" +
		"ntp: {servers: [time.cloudflare.com, 192.168.1.1]}\n" +
		"network:\n  dhcp: false\n  interfaces:\n    - name: eth0\n      addresses: [10.0.0.2/24, \"fd00::2/64\"]\n      gateway: 10.0.0.1\n      mtu: 1500\n    - mac: 52:54:00:12:34:56\n      dhcp: yes\n" +
		"  nameservers: [10.0.0.1]\n  search: [lan.example.com]\n  wifi: {ssid: home, psk: \"correct horse\", country: DE, interface: wlan0}\n" +
		"proxy: {http_proxy: \"http://proxy:3128\", no_proxy: \"10.0.0.0/8\"}\n" +
		"manifests:\n  - name: web.yaml\n    content: \"apiVersion: v1\\nkind: Namespace\\n\"\n" +
		"k3s:\n  write-kubeconfig-mode: 0644\n  node-label: [example.com/site=lab, node.kubernetes.io/instance-type=pi]\n  node-taint: node-role.kubernetes.io/control-plane:NoSchedule\n  disable: [traefik]\n  cluster-init: true\n  https-listen-port: 6443\n" +
		"ballast:\n  modules: [br_netfilter]\n  sysctls: {net.ipv4.ip_forward: 1}\n  environment: {TZ: UTC}\n  agent: {privileged: true}\n  ssh: {enabled: true, port: 2222, password_authentication: false}\n  runtime: k3s\n  role: server\n"
	cfg, warns, err := ParseWithWarnings("user-data", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) > 0 {
		t.Errorf("warnings: %v", warns)
	}
	if cfg.Hostname != "edge-1" || len(cfg.SSHAuthorizedKeys) != 3 || cfg.SSHAuthorizedKeys[0] != key {
		t.Errorf("hostname/keys: %+v", cfg)
	}
	if u := cfg.Users[0]; u.Name != "ops" || *u.UID != 1001 || u.Groups[0] != "sudo" || u.PasswdHash != "$y$j9T$abc$def" {
		t.Errorf("user: %+v", u)
	}
	if f := cfg.WriteFiles[0]; f.Permissions != "0600" || f.Owner != "ops:ops" {
		t.Errorf("file: %+v", f)
	}
	if b, _ := cfg.WriteFiles[1].Decode(); string(b) != "hi" {
		t.Errorf("!!binary content = %q", b)
	}
	if cfg.BootCmd[0].Shell != "echo boot" || strings.Join(cfg.RunCmd[0].Argv, " ") != "touch /tmp/x" {
		t.Errorf("commands: %+v %+v", cfg.BootCmd, cfg.RunCmd)
	}
	if w := cfg.Network.WiFi; w == nil || w.SSID != "home" || w.PSK != "correct horse" || w.Country != "DE" || w.Interface != "wlan0" {
		t.Errorf("wifi: %+v", cfg.Network.WiFi)
	}
	if cfg.DHCPOrDefault() || cfg.Network.Interfaces[0].DHCPOrDefault() || !cfg.Network.Interfaces[1].DHCPOrDefault() {
		t.Errorf("dhcp: %+v", cfg.Network)
	}
	if cfg.K3s["write-kubeconfig-mode"] != "0644" || cfg.K3s["cluster-init"] != true || cfg.K3s["https-listen-port"] != 6443 {
		t.Errorf("k3s values keep their meaning: %#v", cfg.K3s)
	}
	if !cfg.AgentPrivileged() || cfg.SSHPort() != 2222 || cfg.SSHPasswordAuth() || cfg.Ballast.Sysctls["net.ipv4.ip_forward"] != "1" {
		t.Errorf("ballast: %+v", cfg.Ballast)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() of a parsed config: %v", err)
	}
}

func TestAliasesAndMergeKeys(t *testing.T) {
	doc := "#cloud-config\n" +
		"x-base: &base {path: /etc/a, permissions: \"0600\"}\n"
	// x-base is unknown: anchors need a home, and a strict schema has none.
	got := errorLines(t, doc)
	if len(got) != 1 || !strings.HasPrefix(got[0], "user-data:2:1: x-base: unknown key") {
		t.Errorf("got %q", got)
	}

	doc = "#cloud-config\n" +
		"write_files:\n" +
		"  - &base {path: /etc/a, permissions: \"0600\", content: a}\n" +
		"  - <<: *base\n    path: /etc/b\n" +
		"  - <<: [*base]\n    permissions: \"0x1\"\n"
	got = errorLines(t, doc)
	if len(got) != 1 || got[0] != `user-data:7:18: write_files[2].permissions: "0x1" is not an octal mode (e.g. "0644")` {
		t.Errorf("got %q", got)
	}
	doc = strings.Replace(doc, "0x1", "0700", 1)
	cfg, err := Parse("user-data", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if f := cfg.WriteFiles[1]; f.Path != "/etc/b" || f.Permissions != "0600" || f.Content != "a" {
		t.Errorf("merged entry: %+v", f)
	}
	if f := cfg.WriteFiles[2]; f.Path != "/etc/a" || f.Permissions != "0700" {
		t.Errorf("merged entry with override: %+v", f)
	}

	// Exponential aliases stop with an error instead of eating the init.
	bomb := "#cloud-config\nk3s:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n" +
		"  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n" +
		"  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n" +
		"  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n" +
		"  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n" +
		"  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n" +
		"  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n" +
		"  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
	got = errorLines(t, bomb)
	if !strings.Contains(strings.Join(got, "\n"), "too many values") {
		t.Errorf("alias bomb: %q", got)
	}
}

func TestPaths(t *testing.T) {
	for _, tt := range []struct{ path, parent string }{
		{"hostname", ""},
		{"write_files[2].permissions", "write_files[2]"},
		{"write_files[2]", "write_files"},
		{`ballast.sysctls["net.ipv4.ip_forward"]`, "ballast.sysctls"},
		{`k3os.labels["a[\"b\"].c"]`, "k3os.labels"},
		{`k3s["--disable"]`, "k3s"},
	} {
		if got, ok := parentPath(tt.path); !ok || got != tt.parent {
			t.Errorf("parentPath(%q) = %q, %v; want %q", tt.path, got, ok, tt.parent)
		}
	}
	if got := joinKey("k3os.labels", `a["b"].c`); got != `k3os.labels["a[\"b\"].c"]` {
		t.Errorf("joinKey = %s", got)
	}
}

// The expansion budget is fixed, not a multiple of the document: a few
// repeats of a large scalar are refused at once, a large document without
// aliases is not, and a document past MaxSize is refused unread.
func TestExpansionBudget(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	var b strings.Builder
	b.WriteString("#cloud-config\nk3s:\n  a: &a \"" + big + "\"\n  b: [")
	for i := range 200 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("*a")
	}
	b.WriteString("]\n")
	start := time.Now()
	got := errorLines(t, b.String())
	if !strings.Contains(strings.Join(got, "\n"), "too many values through its aliases") {
		t.Errorf("repeated large scalar: %q", got)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("took %v to refuse", el)
	}

	content := strings.Repeat("line of a large file\n", (2<<20)/21)
	doc := "#cloud-config\nwrite_files:\n  - path: /etc/big\n    content: |\n" + indent(content, "      ")
	if _, err := Parse("user-data", []byte(doc)); err != nil {
		t.Errorf("a 2 MiB document without aliases: %v", err)
	}

	huge := "#cloud-config\nhostname: x\n# " + strings.Repeat("y", MaxSize) + "\n"
	got = errorLines(t, huge)
	if len(got) != 1 || !strings.Contains(got[0], "ballast reads at most 4 MiB") {
		t.Errorf("a document past MaxSize: %q", got)
	}
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}

// A server meant to join another (HA) without ballast.role: server would
// come up as an agent; validate says so at the server option.
func TestJoiningServerNeedsRole(t *testing.T) {
	doc := "#cloud-config\nk3s:\n  server: https://10.0.0.1:6443\n  token: secret\n  tls-san: [k8s.example.com]\n"
	_, warns, err := ParseWithWarnings("user-data", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := `user-data:5:3: k3s.tls-san: tls-san is a server option, but k3s.server makes this node an agent, which ignores it; to join as another server (HA), add ballast.role: server`
	if len(warns) != 1 || warns[0].String() != want {
		t.Errorf("warnings %v, want %s", warns, want)
	}
	_, warns, err = ParseWithWarnings("user-data", []byte(doc+"ballast:\n  role: server\n"))
	if err != nil || len(warns) != 0 {
		t.Errorf("with ballast.role: server: %v %v", warns, err)
	}
}
