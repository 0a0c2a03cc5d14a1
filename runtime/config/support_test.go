package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryKeyClassified walks the whole flag table: a key added there
// without saying what the runtime does with it fails here, so it cannot
// be ignored silently.
func TestEveryKeyClassified(t *testing.T) {
	flags := map[string]Flag{}
	for _, f := range flagTable() {
		flags[f.Name] = f
	}
	seen := map[string]bool{}
	for _, s := range supportTable() {
		if seen[s.Key] {
			t.Errorf("%s: classified twice", s.Key)
		}
		seen[s.Key] = true
		f, ok := flags[s.Key]
		if !ok {
			t.Errorf("%s: classified but not in the flag table", s.Key)
			continue
		}
		if (s.Level == Acted) != (s.Msg == "") {
			t.Errorf("%s: %s with message %q: a key acted on has none, any other says what to do instead", s.Key, s.Level, s.Msg)
		}
		if s.FileOnly && f.Kind != String {
			t.Errorf("%s: FileOnly is for keys naming files", s.Key)
		}
		for _, v := range s.Values {
			if (v.Level == Acted) != (v.Msg == "") {
				t.Errorf("%s %q: %s with message %q", s.Key, v.Value, v.Level, v.Msg)
			}
			if got, _ := s.Classify(f.Kind, strings.TrimSuffix(v.Value, "*")+"x"); strings.HasSuffix(v.Value, "*") && got != v.Level {
				t.Errorf("%s: prefix %q does not match", s.Key, v.Value)
			}
		}
	}
	for name := range flags {
		if !seen[name] {
			t.Errorf("%s: in the flag table but not classified in supportTable: say whether the runtime acts on it, or warn or refuse with what to do instead", name)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		key, value string
		want       Level
	}{
		{"docker", "true", Refused},
		{"docker", "false", Acted},
		{"docker", "TRUE", Refused},
		{"snapshotter", "overlayfs", Acted},
		{"snapshotter", "native", Acted},
		{"snapshotter", "stargz", Acted},
		{"snapshotter", "fuse-overlayfs", Refused},
		{"snapshotter", "aufs", Refused},
		{"flannel-backend", "host-gw", Acted},
		{"flannel-backend", "wireguard-native", Refused},
		{"datastore-endpoint", "sqlite:///var/lib/x.db", Acted},
		{"datastore-endpoint", "https://10.0.0.1:2379", Acted},
		{"datastore-endpoint", "mysql://u:p@tcp(db:3306)/k3s", Refused},
		{"debug", "true", Ignored},
		{"secrets-encryption", "true", Acted},
		{"secrets-encryption-provider", "secretbox", Acted},
		{"etcd-s3-bucket", "b", Ignored},
		{"etcd-s3-bucket", "", Acted},
		{"node-label", "a=b", Acted},
	} {
		s, ok := SupportOf(c.key)
		if !ok {
			t.Fatalf("%s: not classified", c.key)
		}
		got, msg := s.Classify(flagIndex()[c.key].Kind, c.value)
		if got != c.want {
			t.Errorf("%s: %q: %s (%s), want %s", c.key, c.value, got, msg, c.want)
		}
	}
}

func TestLoadWarnsAndRefuses(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, `docker: true
debug: true
snapshotter: overlayfs
config: /elsewhere.yaml
node-label: [a=b]
rootless: false
`)
	writeFile(t, filepath.Join(dir, "config.yaml.d", "10-x.yaml"), "snapshotter: fuse-overlayfs\netcd-s3-bucket: b\n")
	l, err := Load(Options{Command: "server", Args: []string{"--config", cfg, "--prefer-bundled-bin"}, LookupEnv: env(map[string]string{
		"K3S_SELINUX":       "true",
		"AWS_ACCESS_KEY_ID": "AKIA", // other programs' variable: not warned about
	})})
	if err != nil {
		t.Fatal(err)
	}
	var warns, refused []string
	for _, w := range l.Warnings {
		warns = append(warns, w.String())
	}
	for _, w := range l.Refused {
		refused = append(refused, w.String())
	}
	wantWarn := []string{
		cfg + `:2: key "debug": ballast's runtime has no debug level`,
		cfg + `:4: key "config": a config file cannot name another`,
		filepath.Join(dir, "config.yaml.d", "10-x.yaml") + `:2: key "etcd-s3-bucket": used only by etcd snapshots to S3`,
	}
	wantRefused := []string{
		cfg + `:1: key "docker": cri-dockerd is not built into ballast's runtime`,
		filepath.Join(dir, "config.yaml.d", "10-x.yaml") + `:1: key "snapshotter": the fuse-overlayfs snapshotter`,
		`environment variable K3S_SELINUX: key "selinux": ballast images carry no SELinux policy`,
		`command line: key "prefer-bundled-bin": ballast images carry no bundled iptables`,
	}
	check := func(what string, got, want []string) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: got %d, want %d:\n%s", what, len(got), len(want), strings.Join(got, "\n"))
		}
	next:
		for _, w := range want {
			for _, g := range got {
				if strings.HasPrefix(g, w) {
					continue next
				}
			}
			t.Errorf("%s: no line starting %q in:\n%s", what, w, strings.Join(got, "\n"))
		}
	}
	check("warnings", warns, wantWarn)
	check("refused", refused, wantRefused)

	err = l.Unsupported()
	var ue *UnsupportedError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnsupported) || len(ue.Keys) != 4 || !strings.Contains(err.Error(), "remove the key") {
		t.Fatalf("Unsupported() = %v", err)
	}
}

// TestConfigFlagActedOn: --config on the command line and K3S_CONFIG_FILE
// choose the file; only a config key inside a file is warned about.
func TestConfigFlagActedOn(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	writeFile(t, cfg, "token: x\n")
	l, err := Load(Options{Command: "agent", Args: []string{"--config", cfg}, LookupEnv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Warnings) != 0 || l.Unsupported() != nil {
		t.Fatalf("warnings %v, refused %v", l.Warnings, l.Refused)
	}
}
