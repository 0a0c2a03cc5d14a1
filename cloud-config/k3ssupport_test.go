package cloudconfig

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// actedOn reports whether some value of k is acted on by the runtime.
func (k k3sKey) actedOn() bool {
	if k.Level == k3sActed {
		return true
	}
	for _, v := range k.Values {
		if v.Level == k3sActed {
			return true
		}
	}
	return false
}

// TestK3sActedKeysFile: testdata/k3s-acted-keys.yaml sets every key the
// runtime acts on, and only those, and validates without a word.
func TestK3sActedKeysFile(t *testing.T) {
	const path = "testdata/k3s-acted-keys.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, warns, err := ParseWithWarnings(path, data)
	if err != nil || len(warns) != 0 {
		t.Fatalf("a file of keys the runtime acts on: errors %v, warnings %v", err, warns)
	}
	for _, k := range k3sKeys {
		_, in := cfg.K3s[k.Name]
		if k.actedOn() && !k.FileOnly && !in {
			t.Errorf("%s: acted on by the runtime but missing from %s", k.Name, path)
		}
	}
	for key := range cfg.K3s {
		if k, ok := k3sKeyIndex[key]; !ok || !k.actedOn() {
			t.Errorf("%s: in %s but not acted on by the runtime", key, path)
		}
	}
}

func TestK3sIgnoredAndRefusedKeys(t *testing.T) {
	doc := "#cloud-config\n" +
		"k3s:\n" +
		"  docker: true\n" + // 3
		"  rootless: false\n" +
		"  snapshotter: fuse-overlayfs\n" + // 5
		"  debug: true\n" + // 6
		"  config: /etc/other.yaml\n" + // 7
		"  etcd-s3-bucket: backups\n" + // 8
		"  airgap-extra-registry: [a.example, b.example]\n" + // 9
		"k3os:\n" +
		"  k3s_args: [server, --prefer-bundled-bin, --flannel-backend, wireguard-native]\n" // 11
	warns, err := Validate("user-data", []byte(doc))
	var errs []string
	if list, ok := err.(*ErrorList); ok {
		for _, e := range list.Errors {
			errs = append(errs, e.Error())
		}
	} else if err != nil {
		t.Fatal(err)
	}
	wantErrs := []string{
		`user-data:3:3: k3s.docker: cri-dockerd is not built into ballast's runtime`,
		`user-data:5:16: k3s.snapshotter: snapshotter "fuse-overlayfs": the fuse-overlayfs snapshotter is not linked`,
		`user-data:11:22: k3os.k3s_args[1]: --prefer-bundled-bin: ballast images carry no bundled iptables`,
		`user-data:11:`, // --flannel-backend wireguard-native, at its value
	}
	wantWarns := []string{
		`user-data:6:3: k3s.debug: ballast's runtime has no debug level of its own`,
		`user-data:7:3: k3s.config: a config file cannot name another`,
		`user-data:8:3: k3s.etcd-s3-bucket: used only by etcd snapshots to S3`,
		`user-data:9:3: k3s.airgap-extra-registry: used by the embedded registry mirror`,
	}
	match := func(what string, got, want []string) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: got %d, want %d:\n%s", what, len(got), len(want), strings.Join(got, "\n"))
		}
		for _, w := range want {
			if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
				t.Errorf("%s: none starts with %q:\n%s", what, w, strings.Join(got, "\n"))
			}
		}
	}
	match("errors", errs, wantErrs)
	match("warnings", warns, wantWarns)
	if !strings.Contains(strings.Join(errs, "\n"), `flannel-backend "wireguard-native": flannel's WireGuard backend is not linked`) {
		t.Errorf("k3s_args --flannel-backend wireguard-native not refused by value:\n%s", strings.Join(errs, "\n"))
	}
}

func TestK3sKeyClassify(t *testing.T) {
	for _, c := range []struct {
		key, value string
		want       k3sLevel
	}{
		{"docker", "false", k3sActed},
		{"docker", "1", k3sRefused},
		{"docker", "maybe", k3sActed}, // not a boolean: reported as such
		{"snapshotter", "native", k3sActed},
		{"snapshotter", "aufs", k3sRefused},
		{"datastore-endpoint", "sqlite:///var/lib/rancher/k3s/server/db/state.db", k3sActed},
		{"datastore-endpoint", "postgres://db/k3s", k3sRefused},
		{"tls-san-security", "true", k3sIgnored},
		{"node-label", "a=b", k3sActed},
	} {
		level, msg, _ := k3sKeyIndex[c.key].classify(c.value)
		if level != c.want {
			t.Errorf("%s %q: level %d (%s), want %d", c.key, c.value, level, msg, c.want)
		}
	}
}
