package packaged

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/runtime/config"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenValues are the values of a default single-node server, whose
// image carries the traefik charts.
var goldenValues = Values{TraefikChart: "traefik-3.6.12+ballast.0123456789.tgz", TraefikCRDChart: "traefik-crd-3.6.12+ballast.9876543210.tgz"}

// allFiles is what k3s stages, by relative path.
var allFiles = []string{
	"ccm.yaml",
	"coredns.yaml",
	"local-storage.yaml",
	"metrics-server/aggregated-metrics-reader.yaml",
	"metrics-server/auth-delegator.yaml",
	"metrics-server/auth-reader.yaml",
	"metrics-server/metrics-apiservice.yaml",
	"metrics-server/metrics-server-deployment.yaml",
	"metrics-server/metrics-server-service.yaml",
	"metrics-server/resource-reader.yaml",
	"rolebindings.yaml",
	"runtimes.yaml",
	"traefik.yaml",
}

// contractImages are the references of the integration contract; the
// image archives in agent/images carry exactly these names.
var contractImages = []string{
	"docker.io/rancher/local-path-provisioner:v0.0.30",
	"docker.io/rancher/mirrored-coredns-coredns:1.15.0",
	"docker.io/rancher/mirrored-library-busybox:1.37.0",
	"docker.io/rancher/mirrored-metrics-server:v0.9.0",
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestGolden(t *testing.T) {
	files, err := Render(goldenValues, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(files); !slices.Equal(got, allFiles) {
		t.Fatalf("rendered %v, want %v", got, allFiles)
	}
	golden := filepath.Join("testdata", "golden")
	if *update {
		os.RemoveAll(golden)
		for rel, data := range files {
			p := filepath.Join(golden, filepath.FromSlash(rel))
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for rel, data := range files {
		want, err := os.ReadFile(filepath.Join(golden, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatalf("%v (run go test ./packaged -update and review the diff)", err)
		}
		if !bytes.Equal(data, want) {
			t.Errorf("%s differs from its golden file (go test ./packaged -update, then review the diff)", rel)
		}
	}
}

// docs decodes every YAML document of a rendered file.
func docs(t *testing.T, rel string, data []byte) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []map[string]any
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", rel, len(out)+1, err)
		}
		if m != nil {
			out = append(out, m)
		}
	}
}

func str(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, _ := cur.(map[string]any)
		cur = mm[p]
	}
	s, _ := cur.(string)
	return s
}

// containers returns the containers of a pod spec, wherever the object
// has one (Deployment, Pod).
func containers(obj map[string]any) []map[string]any {
	spec, _ := obj["spec"].(map[string]any)
	if tmpl, ok := spec["template"].(map[string]any); ok {
		spec, _ = tmpl["spec"].(map[string]any)
	}
	var out []map[string]any
	for _, key := range []string{"initContainers", "containers"} {
		list, _ := spec[key].([]any)
		for _, c := range list {
			if cm, ok := c.(map[string]any); ok {
				out = append(out, cm)
			}
		}
	}
	return out
}

func TestDocumentsAndImages(t *testing.T) {
	files, err := Render(goldenValues, nil)
	if err != nil {
		t.Fatal(err)
	}
	var images []string
	checkContainers := func(where string, obj map[string]any) {
		for _, c := range containers(obj) {
			img, _ := c["image"].(string)
			images = append(images, img)
			// The node is air-gapped: the images are imported and
			// pinned, so a pull must never be forced.
			if p, _ := c["imagePullPolicy"].(string); p != "IfNotPresent" && p != "Never" {
				t.Errorf("%s: container %v: imagePullPolicy %q", where, c["name"], p)
			}
		}
	}
	for _, rel := range keys(files) {
		ds := docs(t, rel, files[rel])
		if len(ds) == 0 {
			t.Errorf("%s: no documents", rel)
		}
		for i, d := range ds {
			if str(d, "apiVersion") == "" || str(d, "kind") == "" || str(d, "metadata", "name") == "" {
				t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name: %v", rel, i+1, d)
			}
			where := rel + ": " + str(d, "kind") + " " + str(d, "metadata", "name")
			checkContainers(where, d)
			if str(d, "kind") != "ConfigMap" {
				continue
			}
			data, _ := d["data"].(map[string]any)
			if hp, ok := data["helperPod.yaml"].(string); ok {
				var pod map[string]any
				if err := yaml.Unmarshal([]byte(hp), &pod); err != nil {
					t.Fatalf("%s: helperPod.yaml: %v", where, err)
				}
				checkContainers(where+" helperPod.yaml", pod)
			}
			if cj, ok := data["config.json"].(string); ok {
				var cfg struct {
					NodePathMap []struct {
						Node  string
						Paths []string
					}
				}
				if err := json.Unmarshal([]byte(cj), &cfg); err != nil {
					t.Fatalf("%s: config.json: %v", where, err)
				}
				if len(cfg.NodePathMap) != 1 || !slices.Equal(cfg.NodePathMap[0].Paths, []string{DefaultStoragePath}) {
					t.Errorf("%s: config.json %+v", where, cfg)
				}
			}
			if nh, ok := data["NodeHosts"]; ok {
				t.Errorf("%s: NodeHosts %q in the manifest: the node controller owns it", where, nh)
			}
		}
	}
	sort.Strings(images)
	images = slices.Compact(images)
	if !slices.Equal(images, contractImages) {
		t.Errorf("images %v, want the contract's %v", images, contractImages)
	}
}

func TestCoreDNS(t *testing.T) {
	files, err := Render(goldenValues, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cm, svc map[string]any
	for _, d := range docs(t, "coredns.yaml", files["coredns.yaml"]) {
		switch str(d, "kind") {
		case "ConfigMap":
			cm = d
		case "Service":
			svc = d
		}
	}
	if str(svc, "spec", "clusterIP") != "10.43.0.10" || str(svc, "spec", "ipFamilyPolicy") != "SingleStack" {
		t.Errorf("kube-dns Service spec %v", svc["spec"])
	}
	if ips, _ := svc["spec"].(map[string]any)["clusterIPs"].([]any); len(ips) != 1 || ips[0] != "10.43.0.10" {
		t.Errorf("clusterIPs %v", ips)
	}
	corefile := str(cm, "data", "Corefile")
	for _, want := range []string{
		"kubernetes cluster.local in-addr.arpa ip6.arpa {",
		"hosts /etc/coredns/NodeHosts {",
		"forward . /etc/resolv.conf",
		"cache 30", "loop", "reload", "loadbalance", "health", "ready", "prometheus :9153",
		"import /etc/coredns/custom/*.override",
		"import /etc/coredns/custom/*.server",
	} {
		if !strings.Contains(corefile, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, corefile)
		}
	}
}

func TestValues(t *testing.T) {
	v := Values{
		ClusterDNS:            []netip.Addr{netip.MustParseAddr("10.44.0.10"), netip.MustParseAddr("fd00:43::a")},
		ClusterDomain:         "example.internal",
		SystemDefaultRegistry: "registry.example.com:5000",
		StoragePath:           `/data/my "volumes"`,
		FlannelExternalIP:     true,
	}
	files, err := Render(v, nil)
	if err != nil {
		t.Fatal(err)
	}
	all := string(bytes.Join([][]byte{files["coredns.yaml"], files["local-storage.yaml"], files["metrics-server/metrics-server-deployment.yaml"]}, nil))
	for _, want := range []string{
		"clusterIP: 10.44.0.10\n",
		"clusterIPs: [10.44.0.10,fd00:43::a]\n",
		"ipFamilyPolicy: RequireDualStack\n",
		"kubernetes example.internal in-addr.arpa",
		`image: "registry.example.com:5000/rancher/mirrored-coredns-coredns:1.15.0"`,
		`image: "registry.example.com:5000/rancher/mirrored-library-busybox:1.37.0"`,
		`"paths":["/data/my \"volumes\""]`,
		"--kubelet-preferred-address-types=ExternalIP,InternalIP,Hostname",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("rendered manifests lack %q", want)
		}
	}
	for _, d := range docs(t, "coredns.yaml", files["coredns.yaml"]) {
		if str(d, "kind") == "Service" {
			if ips, _ := d["spec"].(map[string]any)["clusterIPs"].([]any); len(ips) != 2 {
				t.Errorf("dual-stack clusterIPs %v", ips)
			}
		}
	}

	for _, tc := range []struct {
		v    Values
		want string
	}{
		{Values{ClusterDomain: "a b"}, "cluster-domain"},
		{Values{StoragePath: "relative/dir"}, "default-local-storage-path"},
		{Values{SystemDefaultRegistry: "reg\nx"}, "system-default-registry"},
		{Values{ClusterDNS: []netip.Addr{{}}}, "cluster-dns"},
	} {
		if _, err := Render(tc.v, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %s", tc.v, err, tc.want)
		}
	}
}

func TestStageDisable(t *testing.T) {
	dir := t.TempDir()
	res, err := Stage(dir, goldenValues, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Written) != len(allFiles) || len(res.Unchanged) != 0 || len(res.Pending) != 0 || res.DeployControllerArgs() != nil {
		t.Fatalf("first stage %+v", res)
	}
	for _, rel := range allFiles {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", rel, fi, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 7 {
		t.Errorf("%d entries in %s (temporary files left?)", len(ents), dir)
	}

	// A later start with components disabled: nothing of theirs is
	// written; the earlier copies are pending for the deploy controller.
	res, err = Stage(dir, goldenValues, []string{"coredns, metrics-server", "traefik", "servicelb", "coredns"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"coredns", "metrics-server", "traefik", "servicelb"}; !slices.Equal(res.Disabled, want) {
		t.Errorf("disabled %v, want %v", res.Disabled, want)
	}
	if got := res.DeployControllerArgs(); !slices.Equal(got, []string{"--disable=coredns,metrics-server,traefik,servicelb"}) {
		t.Errorf("deploy-controller args %v", got)
	}
	var pending []string
	for _, p := range res.Pending {
		rel, _ := filepath.Rel(dir, p)
		pending = append(pending, filepath.ToSlash(rel))
	}
	if want := append(append([]string{"coredns.yaml"}, allFiles[3:10]...), "traefik.yaml"); !slices.Equal(pending, want) {
		t.Errorf("pending %v, want %v", pending, want)
	}
	if len(res.Written) != 0 || len(res.Unchanged) != 4 {
		t.Errorf("written %v unchanged %v", res.Written, res.Unchanged)
	}

	// Once the controller removed them, a fresh data dir or the next
	// start writes nothing of theirs.
	for _, p := range res.Pending {
		os.Remove(p)
	}
	res, err = Stage(dir, goldenValues, []string{"coredns", "metrics-server", "traefik"})
	if err != nil || len(res.Pending) != 0 || len(res.Written) != 0 {
		t.Errorf("third stage %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "coredns.yaml")); !os.IsNotExist(err) {
		t.Errorf("coredns.yaml written while disabled: %v", err)
	}
	// Enabled again: written again.
	res, err = Stage(dir, goldenValues, nil)
	if err != nil || len(res.Written) != 9 {
		t.Errorf("re-enabled: written %v (%v)", res.Written, err)
	}
}

func TestStageIdempotent(t *testing.T) {
	dir := t.TempDir()
	if _, err := Stage(dir, goldenValues, nil); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, rel := range allFiles {
		os.Chtimes(filepath.Join(dir, rel), old, old)
	}
	os.Chmod(filepath.Join(dir, "runtimes.yaml"), 0o644)
	res, err := Stage(dir, goldenValues, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Written) != 0 || len(res.Unchanged) != len(allFiles) {
		t.Errorf("re-stage wrote %v", res.Written)
	}
	for _, rel := range allFiles {
		fi, _ := os.Stat(filepath.Join(dir, rel))
		if !fi.ModTime().Equal(old) || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mtime %v mode %v after an unchanged stage", rel, fi.ModTime(), fi.Mode())
		}
	}
	// An edited file, or changed values, are rewritten.
	os.WriteFile(filepath.Join(dir, "runtimes.yaml"), []byte("edited\n"), 0o600)
	v := goldenValues
	v.ClusterDomain = "other.local"
	res, err = Stage(dir, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	var written []string
	for _, p := range res.Written {
		written = append(written, filepath.Base(p))
	}
	if !slices.Equal(written, []string{"coredns.yaml", "runtimes.yaml"}) {
		t.Errorf("rewritten %v", written)
	}
}

func TestValuesFor(t *testing.T) {
	s := &config.ServerConfig{
		AgentConfig:   config.AgentConfig{DataDir: "/var/lib/rancher/k3s", SystemDefaultRegistry: "reg.local"},
		ClusterDNS:    []netip.Addr{netip.MustParseAddr("10.43.0.10")},
		ClusterDomain: "cluster.local",
		Disable:       []string{"traefik", "servicelb"},
	}
	v, disable := ValuesFor(s)
	if v.StoragePath != "/var/lib/rancher/k3s/storage" || v.SystemDefaultRegistry != "reg.local" || !slices.Equal(disable, []string{"traefik", "servicelb"}) {
		t.Errorf("values %+v disable %v", v, disable)
	}
	s.DisableCloudController = true
	s.DisableAgent = true
	s.DefaultLocalStoragePath = "/srv/volumes"
	v, disable = ValuesFor(s)
	if v.StoragePath != "/srv/volumes" || !slices.Equal(disable, []string{"traefik", "servicelb", "ccm"}) {
		t.Errorf("values %+v disable %v", v, disable)
	}

	s.DataDir = t.TempDir()
	ChartsDir = filepath.Join(t.TempDir(), "none")
	res, err := StageServer(s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "server", "manifests", "coredns.yaml")); err != nil || len(res.Written) != len(allFiles)-2 {
		t.Errorf("StageServer wrote %v (%v)", res.Written, err)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings with traefik disabled: %q", res.Warnings)
	}
}

func TestStageCharts(t *testing.T) {
	src, data := t.TempDir(), t.TempDir()
	ChartsDir = src
	charts := map[string]string{
		"traefik-3.6.12+ballast.0123456789.tgz":     "chart",
		"traefik-crd-3.6.12+ballast.9876543210.tgz": "crds",
		"other-1.0.0.tgz":                           "other",
	}
	for n, c := range charts {
		os.WriteFile(filepath.Join(src, n), []byte(c), 0o644)
	}
	os.WriteFile(filepath.Join(src, "README"), []byte("not a chart"), 0o644)
	s := &config.ServerConfig{AgentConfig: config.AgentConfig{DataDir: data}}
	res, err := StageServer(s)
	if err != nil || len(res.Warnings) != 0 {
		t.Fatalf("StageServer: %v %q", err, res.Warnings)
	}
	static := filepath.Join(data, "server", "static", "charts")
	for n, c := range charts {
		if got, err := os.ReadFile(filepath.Join(static, n)); err != nil || string(got) != c {
			t.Errorf("static/charts/%s: %q %v", n, got, err)
		}
	}
	if _, err := os.Stat(filepath.Join(static, "README")); !os.IsNotExist(err) {
		t.Errorf("README staged: %v", err)
	}
	manifest, err := os.ReadFile(filepath.Join(data, "server", "manifests", "traefik.yaml"))
	if err != nil || !strings.Contains(string(manifest), "chart: https://%{KUBERNETES_API}%/static/charts/traefik-3.6.12+ballast.0123456789.tgz\n") ||
		!strings.Contains(string(manifest), "chart: https://%{KUBERNETES_API}%/static/charts/traefik-crd-3.6.12+ballast.9876543210.tgz\n") {
		t.Errorf("traefik.yaml: %v\n%s", err, manifest)
	}

	// An image without the charts: no traefik.yaml, and a warning.
	ChartsDir = filepath.Join(t.TempDir(), "none")
	data2 := t.TempDir()
	res, err = StageServer(&config.ServerConfig{AgentConfig: config.AgentConfig{DataDir: data2}})
	if err != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "Traefik is not deployed") {
		t.Errorf("no charts: %v %q", err, res.Warnings)
	}
	if _, err := os.Stat(filepath.Join(data2, "server", "manifests", "traefik.yaml")); !os.IsNotExist(err) {
		t.Errorf("traefik.yaml written without charts: %v", err)
	}
}

func TestUnknownVar(t *testing.T) {
	for data, want := range map[string]int{
		"plain": -1,
		"chart: https://%{KUBERNETES_API}%/x.tgz":     -1,
		"%{KUBERNETES_API}% %{KUBERNETES_API}% %{X}%": 38,
		"a: %{NOPE}%": 3,
	} {
		if got := unknownVar([]byte(data)); got != want {
			t.Errorf("unknownVar(%q) = %d, want %d", data, got, want)
		}
	}
}
