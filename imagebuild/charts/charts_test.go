package charts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"
)

const testCRDs = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: middlewares.traefik.io\n"

func untar(t *testing.T, data []byte) map[string]string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = string(b)
	}
}

func TestTraefik(t *testing.T) {
	got, err := Traefik("docker.io/rancher/mirrored-library-traefik:3.6.12", []byte(testCRDs))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "traefik-crd" || got[1].Name != "traefik" {
		t.Fatalf("charts %+v", got)
	}
	for _, c := range got {
		if !strings.HasPrefix(c.Version, "3.6.12+ballast.") || c.File() != c.Name+"-"+c.Version+".tgz" {
			t.Errorf("%s: version %q, file %q", c.Name, c.Version, c.File())
		}
		files := untar(t, c.Data)
		chart := files[c.Name+"/Chart.yaml"]
		if !strings.Contains(chart, "\nversion: "+c.Version+"\n") || !strings.Contains(chart, "\nappVersion: \"3.6.12\"\n") {
			t.Errorf("%s: Chart.yaml:\n%s", c.Name, chart)
		}
	}
	files := untar(t, got[1].Data)
	for _, f := range []string{"traefik/templates/_helpers.tpl", "traefik/templates/deployment.yaml", "traefik/templates/service.yaml"} {
		if files[f] == "" {
			t.Errorf("traefik chart lacks %s (has %d files)", f, len(files))
		}
	}
	if _, ok := files["traefik/README.md"]; ok {
		t.Error("the chart carries README.md")
	}
	values := files["traefik/values.yaml"]
	for _, want := range []string{"  registry: docker.io\n", "  repository: rancher/mirrored-library-traefik\n", "  tag: \"3.6.12\"\n"} {
		if !strings.Contains(values, want) {
			t.Errorf("values.yaml lacks %q", want)
		}
	}
	if crd := untar(t, got[0].Data)["traefik-crd/templates/crds.yaml"]; crd != testCRDs {
		t.Errorf("crds.yaml %q", crd)
	}

	// Reproducible, and a changed input is a new version.
	again, _ := Traefik("docker.io/rancher/mirrored-library-traefik:3.6.12", []byte(testCRDs))
	if !bytes.Equal(again[1].Data, got[1].Data) || again[1].Version != got[1].Version {
		t.Error("two packagings differ")
	}
	other, _ := Traefik("registry.example.com/rancher/mirrored-library-traefik:3.6.12", []byte(testCRDs))
	if other[1].Version == got[1].Version || !strings.Contains(untar(t, other[1].Data)["traefik/values.yaml"], "  registry: registry.example.com\n") {
		t.Error("another image gave the same chart version or kept docker.io")
	}
}

func TestTraefikRefusals(t *testing.T) {
	for _, tc := range []struct{ ref, crds, want string }{
		{"rancher/traefik:3.6.12", testCRDs, "registry/repository:tag"},
		{"docker.io/rancher/traefik", testCRDs, "registry/repository:tag"},
		{"docker.io/rancher/traefik:3.6.12", "kind: Service\n", "no CustomResourceDefinition"},
		{"docker.io/rancher/traefik:3.6.12", testCRDs + "description: {{ x }}\n", "{{"},
	} {
		if _, err := Traefik(tc.ref, []byte(tc.crds)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.ref, err, tc.want)
		}
	}
}
