package containerdcfg

import (
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(path, got, 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs:\n%s", path, got)
	}
}

func base() *Config {
	return &Config{
		Root:         "/var/lib/rancher/k3s/agent/containerd",
		State:        "/run/k3s/containerd",
		Address:      "/run/k3s/containerd/containerd.sock",
		Snapshotter:  "overlayfs",
		SandboxImage: "rancher/mirrored-pause:3.6",
		CNIBinDir:    "/usr/lib/ballast/cni",
		CNIConfDir:   "/var/lib/rancher/k3s/agent/etc/cni/net.d",
		CertsDir:     "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
	}
}

func TestDefaultGolden(t *testing.T) {
	out, used, err := Render(base(), t.TempDir())
	if err != nil || used != "" {
		t.Fatal(err, used)
	}
	golden(t, "default.toml", out)
}

const registries = `
mirrors:
  docker.io:
    endpoint: ["https://mirror.example.com:5000"]
    rewrite:
      "^rancher/(.*)": "mirrors/rancher/$1"
  "*":
    endpoint: ["http://cache.local"]
configs:
  "mirror.example.com:5000":
    auth: {username: u, password: p}
    tls: {ca_file: /etc/ssl/mirror.pem, insecure_skip_verify: true}
`

func TestFullGolden(t *testing.T) {
	c := base()
	c.Snapshotter, c.ImageServiceSocket = "stargz", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"
	c.SELinux = true
	r, err := ParseRegistries("registries.yaml", []byte(registries))
	if err != nil {
		t.Fatal(err)
	}
	c.Registry = r
	c.Runtimes = []Runtime{{Name: "nvidia", BinaryName: "/usr/bin/nvidia-container-runtime"}}
	out, _, err := Render(c, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "full.toml", out)
	hosts := HostsFiles(r)
	if len(hosts) != 3 {
		t.Errorf("hosts files %v", hosts)
	}
	golden(t, "docker.io.hosts.toml", hosts["docker.io/hosts.toml"])
	golden(t, "default.hosts.toml", hosts["_default/hosts.toml"])
}

func TestUserTemplate(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.toml.tmpl"), []byte("old template\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "config-v3.toml.tmpl"), []byte(`{{ template "base" . }}
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.custom]
  runtime_type = "io.containerd.runsc.v1"
# snapshotter was {{ .Snapshotter }}
`), 0o644)
	out, used, err := Render(base(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(used) != "config-v3.toml.tmpl" {
		t.Errorf("used %s, want config-v3.toml.tmpl first", used)
	}
	s := string(out)
	if !strings.HasPrefix(s, "# File generated") || !strings.Contains(s, "runsc") || !strings.Contains(s, "# snapshotter was overlayfs") {
		t.Errorf("rendered:\n%s", s)
	}
	os.Remove(filepath.Join(dir, "config-v3.toml.tmpl"))
	out, _, _ = Render(base(), dir)
	if string(out) != "old template\n" {
		t.Errorf("config.toml.tmpl not used: %q", out)
	}
	os.WriteFile(filepath.Join(dir, "config-v3.toml.tmpl"), []byte("{{ .Nope }}"), 0o644)
	if _, _, err := Render(base(), dir); err == nil {
		t.Error("bad template accepted")
	}
}

type fakeFile struct{ mode fs.FileMode }

func (f fakeFile) Name() string       { return "" }
func (f fakeFile) Size() int64        { return 0 }
func (f fakeFile) Mode() fs.FileMode  { return f.mode }
func (f fakeFile) ModTime() time.Time { return time.Time{} }
func (f fakeFile) IsDir() bool        { return false }
func (f fakeFile) Sys() any           { return nil }

func TestFindNVIDIARuntimes(t *testing.T) {
	files := map[string]fs.FileMode{
		"/usr/bin/nvidia-container-runtime":                      0o755,
		"/usr/local/nvidia/toolkit/nvidia-container-runtime":     0o755, // shadowed by PATH
		"/usr/local/nvidia/toolkit/nvidia-container-runtime.cdi": 0o755,
		"/usr/bin/nvidia-container-runtime-experimental":         0o644, // not executable
	}
	stat := func(p string) (fs.FileInfo, error) {
		if m, ok := files[p]; ok {
			return fakeFile{m}, nil
		}
		return nil, fs.ErrNotExist
	}
	got := FindNVIDIARuntimes("/usr/sbin:/usr/bin", stat)
	want := []Runtime{{"nvidia", "/usr/bin/nvidia-container-runtime"}, {"nvidia-cdi", "/usr/local/nvidia/toolkit/nvidia-container-runtime.cdi"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseRegistriesErrors(t *testing.T) {
	for _, bad := range []string{"mirrors:\n  docker.io:\n    endpoints: [x]\n", "mirrors:\n  docker.io:\n    endpoint: [ftp://x]\n", "mirrors: [\n"} {
		if _, err := ParseRegistries("r.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "r.yaml") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	if r, err := ParseRegistries("r.yaml", nil); err != nil || r == nil {
		t.Errorf("empty file: %v", err)
	}
}

func FuzzParseRegistries(f *testing.F) {
	f.Add([]byte(registries))
	f.Add([]byte("configs: {a: {tls: {ca_file: x}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRegistries("fuzz.yaml", data)
		if err != nil {
			return
		}
		HostsFiles(r)
		c := base()
		c.Registry = r
		if _, _, err := Render(c, t.TempDir()); err != nil {
			t.Fatalf("render of a parsed registries.yaml failed: %v", err)
		}
	})
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{`a"b\c`: `"a\"b\\c"`, "x\ny\x01": `"x\u000Ay\u0001"`, "é": `"é"`} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}
