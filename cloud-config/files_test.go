package cloudconfig

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func gz(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFileDecode(t *testing.T) {
	plain := []byte("line one\nline two\x00\xff\n")
	b64 := base64.StdEncoding.EncodeToString(plain)
	wrapped := b64[:10] + "\n  " + b64[10:] + "\n"
	gzRaw := string(gz(t, plain))
	gzB64 := base64.StdEncoding.EncodeToString(gz(t, plain))

	for _, tt := range []struct {
		encoding, content string
	}{
		{"", string(plain)},
		{"text", string(plain)},
		{"text/plain", string(plain)},
		{"b64", b64},
		{"base64", wrapped},
		{"BASE64", strings.TrimRight(b64, "=")},
		{"gz", gzRaw},
		{"gzip", gzRaw},
		{"gz+b64", gzB64},
		{"gz+base64", gzB64},
		{"gzip+base64", gzB64},
		{"gzip+b64", gzB64},
	} {
		got, err := File{Path: "/x", Encoding: tt.encoding, Content: tt.content}.Decode()
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("Decode(%q) = %q, %v; want %q", tt.encoding, got, err, plain)
		}
	}

	for _, tt := range []struct{ encoding, content, want string }{
		{"rot13", "x", `"rot13" is not an encoding`},
		{"b64", "!!!", "content is not base64"},
		{"gz", "plain text, not gzip", "content is not gzip"},
		{"gz+b64", base64.StdEncoding.EncodeToString(gz(t, plain)[:20]), "content is not valid gzip"},
	} {
		_, err := File{Encoding: tt.encoding, Content: tt.content}.Decode()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Decode(%q, %q) error = %v, want %q", tt.encoding, tt.content, err, tt.want)
		}
	}

	// A gzip bomb stops at MaxFileSize.
	bomb := base64.StdEncoding.EncodeToString(gz(t, make([]byte, MaxFileSize+1)))
	if _, err := (File{Encoding: "gz+b64", Content: bomb}).Decode(); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("bomb: %v", err)
	}
}

// Through the parser: content written as YAML, decoded by Decode.
func TestFileDecodeFromYAML(t *testing.T) {
	gzB64 := base64.StdEncoding.EncodeToString(gz(t, []byte("compressed\n")))
	doc := "#cloud-config\nwrite_files:\n" +
		"  - path: /a\n    encoding: gz+b64\n    content: " + gzB64 + "\n" +
		"  - path: /b\n    encoding: gzip\n    content: !!binary " + gzB64 + "\n" +
		"  - path: /c\n    content: |\n      literal\n      block\n"
	cfg := mustParse(t, "user-data", doc)
	for i, want := range []string{"compressed\n", "compressed\n", "literal\nblock\n"} {
		got, err := cfg.WriteFiles[i].Decode()
		if err != nil || string(got) != want {
			t.Errorf("write_files[%d] = %q, %v; want %q", i, got, err, want)
		}
	}
}

func TestFileModeAndOwner(t *testing.T) {
	for perm, want := range map[string]fs.FileMode{
		"":      0o644,
		"0600":  0o600,
		"755":   0o755,
		"0o640": 0o640,
		"4755":  0o755 | fs.ModeSetuid,
		"1777":  0o777 | fs.ModeSticky,
		"02750": 0o750 | fs.ModeSetgid,
	} {
		got, err := File{Permissions: perm}.Mode()
		if err != nil || got != want {
			t.Errorf("Mode(%q) = %v, %v; want %v", perm, got, err, want)
		}
	}
	for _, bad := range []string{"0x644", "999", "rw-r--r--", "07777777"} {
		if _, err := (File{Permissions: bad}).Mode(); err == nil {
			t.Errorf("Mode(%q): no error", bad)
		}
	}
	for owner, want := range map[string][2]string{"": {"root", "root"}, "ops": {"ops", "root"}, "ops:": {"ops", "root"}, "1000:100": {"1000", "100"}} {
		u, g := File{Owner: owner}.OwnerOrDefault()
		if [2]string{u, g} != want {
			t.Errorf("OwnerOrDefault(%q) = %s:%s, want %v", owner, u, g, want)
		}
	}
}

func TestDefaults(t *testing.T) {
	for _, cfg := range []*Config{nil, {}, {Ballast: &Ballast{}, Network: &Network{}, NTP: &NTP{}}} {
		if !reflect.DeepEqual(cfg.NTPServersOrDefault(), []string{"0.debian.pool.ntp.org", "1.debian.pool.ntp.org", "2.debian.pool.ntp.org", "3.debian.pool.ntp.org"}) {
			t.Errorf("NTPServersOrDefault = %q", cfg.NTPServersOrDefault())
		}
		if !cfg.NTPEnabled() || !cfg.DHCPOrDefault() || cfg.AgentPrivileged() || !cfg.SSHEnabled() || cfg.SSHPort() != 22 || cfg.SSHPasswordAuth() {
			t.Errorf("defaults of %+v are wrong", cfg)
		}
		if cfg.RuntimeOrDefault() != "k3s" || cfg.RoleOrDefault() != "server" {
			t.Errorf("runtime/role defaults of %+v are wrong", cfg)
		}
	}
	// The default list cannot be changed through the accessor.
	(&Config{}).NTPServersOrDefault()[0] = "changed"
	if DefaultNTPServers[0] != "0.debian.pool.ntp.org" {
		t.Errorf("NTPServersOrDefault returned the package's slice")
	}
	agent := &Config{K3s: map[string]any{"server": "https://a:6443"}}
	if agent.RoleOrDefault() != "agent" {
		t.Errorf("a node with k3s.server is an agent by default")
	}
	f := false
	off := &Config{Network: &Network{DHCP: &f}, Ballast: &Ballast{SSH: &SSHSettings{Enabled: &f}}}
	if off.DHCPOrDefault() || off.SSHEnabled() {
		t.Errorf("explicit false ignored")
	}
}

func TestK3sConfigYAML(t *testing.T) {
	cfg := mustParse(t, "user-data", "#cloud-config\nk3s:\n"+
		"  write-kubeconfig-mode: 0644\n  token: \"123\"\n  https-listen-port: 6443\n"+
		"  disable: [traefik, servicelb]\n  cluster-init: true\n  node-name: \"true\"\n")
	out, err := cfg.K3sConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	want := "# Written by ballast's init from the cloud-config k3s: block; changes here are lost at boot.\n\n" +
		"cluster-init: true\n" +
		"disable:\n  - traefik\n  - servicelb\n" +
		"https-listen-port: 6443\n" +
		"node-name: \"true\"\n" +
		"token: \"123\"\n" +
		"write-kubeconfig-mode: \"0644\"\n"
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	// What k3s reads back is what the user wrote.
	var back map[string]any
	if err := yaml.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if back["write-kubeconfig-mode"] != "0644" || back["token"] != "123" || back["node-name"] != "true" || back["cluster-init"] != true {
		t.Errorf("round trip: %#v", back)
	}
	// Deterministic: same config, same bytes, many times over.
	for range 20 {
		again, _ := cfg.K3sConfigYAML()
		if !bytes.Equal(again, out) {
			t.Fatal("K3sConfigYAML is not deterministic")
		}
	}
	empty, err := (&Config{}).K3sConfigYAML()
	if err != nil || !strings.HasSuffix(string(empty), "\n{}\n") {
		t.Errorf("empty: %q, %v", empty, err)
	}
}

func TestHash(t *testing.T) {
	a := mustParse(t, "a", "#cloud-config\nhostname: x\nk3s: {token: t, disable: [a, b]}\nballast: {sysctls: {a.b: \"1\", c.d: \"2\"}}\n")
	b := mustParse(t, "b", "#cloud-config\n# same, other layout\nballast:\n  sysctls:\n    c.d: \"2\"\n    a.b: \"1\"\nk3s:\n  disable:\n    - a\n    - b\n  token: t\nhostname: x\n")
	if a.Hash() != b.Hash() || len(a.Hash()) != 64 {
		t.Errorf("equal configs hash differently: %s %s", a.Hash(), b.Hash())
	}
	c := mustParse(t, "c", "#cloud-config\nhostname: y\nk3s: {token: t, disable: [a, b]}\nballast: {sysctls: {a.b: \"1\", c.d: \"2\"}}\n")
	if a.Hash() == c.Hash() {
		t.Errorf("different configs hash the same")
	}
	d := mustParse(t, "d", "#cloud-config\nhostname: x\nk3s: {token: t, disable: [b, a]}\nballast: {sysctls: {a.b: \"1\", c.d: \"2\"}}\n")
	if a.Hash() == d.Hash() {
		t.Errorf("list order must count")
	}
	// Values json cannot encode still hash, stably.
	odd := &Config{K3s: map[string]any{"x": []string{"a"}, "y": struct{}{}}}
	if odd.Hash() != odd.Hash() || odd.Hash() == (&Config{}).Hash() {
		t.Errorf("odd values")
	}
}

func TestValidateFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	warn := filepath.Join(dir, "warn.yaml")
	for name, data := range map[string]string{
		good: "#cloud-config\nhostname: a\n",
		bad:  "#cloud-config\nhostnme: a\nntp: {enabled: maybe}\n",
		warn: "#cloud-config\nk3s: {tokn: x}\n",
	} {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing.yaml")
	warnings, errs := ValidateFiles([]string{good, bad, warn, missing})
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], warn+":2:7: k3s.tokn: unknown k3s option \"tokn\" (did you mean \"token\"?)") {
		t.Errorf("warnings: %q", warnings)
	}
	if len(errs) != 3 {
		t.Fatalf("errors: %v", errs)
	}
	if !strings.HasPrefix(errs[0].Error(), bad+":2:1: hostnme:") || !strings.HasPrefix(errs[1].Error(), bad+":3:16: ntp.enabled:") {
		t.Errorf("errors: %v", errs)
	}
	if !errors.Is(errs[2], fs.ErrNotExist) {
		t.Errorf("read error: %v", errs[2])
	}
}

func TestCommandYAML(t *testing.T) {
	cmds := []Command{{Shell: "echo hi > /x"}, {Argv: []string{"touch", "/y"}}}
	out, err := yaml.Marshal(cmds)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "- echo hi > /x\n- - touch\n  - /y\n" {
		t.Errorf("marshal: %q", out)
	}
	var back []Command
	if err := yaml.Unmarshal(out, &back); err != nil || !reflect.DeepEqual(back, cmds) {
		t.Errorf("unmarshal: %+v, %v", back, err)
	}
	if err := yaml.Unmarshal([]byte("- {a: b}\n"), &back); err == nil {
		t.Errorf("a map command unmarshalled")
	}
	if cmds[1].String() != `["touch" "/y"]` || cmds[0].String() != "echo hi > /x" {
		t.Errorf("String: %s %s", cmds[0], cmds[1])
	}
}
