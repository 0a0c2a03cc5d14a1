// Package charts packages the Helm charts an image with the ballast runtime
// carries for the runtime's packaged HelmCharts, as k3s carries its
// traefik and traefik-crd charts and serves them from
// https://<server>:6443/static/charts/:
//
//   - traefik: ballast's own chart (the traefik/ folder beside this file),
//     with the image the builder made as its default image;
//   - traefik-crd: Traefik's CustomResourceDefinitions (traefik.io), taken
//     from the Traefik module the image's binary is built from
//     (docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml),
//     as templates, so an upgrade updates them.
//
// Each chart's version is the Traefik version plus a hash of what the
// archive holds (3.6.12+ballast.1a2b3c4d5e), and its file is
// <name>-<version>.tgz: a changed chart is a new file name, so the
// HelmChart that names it changes and the Helm controller upgrades the
// release. Archives are byte-for-byte reproducible (sorted entries, fixed
// times, no gzip name or time).
package charts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"
)

//go:embed all:traefik
var sources embed.FS

// Dir is where an image carries the archives (under its root); the
// runtime copies them to server/static/charts.
const Dir = "usr/lib/ballast/charts"

// CRDFile is the file, in the Traefik module, that defines its CRDs.
const CRDFile = "docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml"

// Chart is one packaged chart.
type Chart struct {
	Name, Version string
	Data          []byte // the .tgz
}

// File is the archive's name: <name>-<version>.tgz.
func (c Chart) File() string { return c.Name + "-" + c.Version + ".tgz" }

// mtime of every entry.
var mtime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Traefik returns the traefik and traefik-crd charts for the Traefik
// image ref (registry/repository:tag, the tag being Traefik's version)
// and crds, the module's CRD definitions.
func Traefik(ref string, crds []byte) ([]Chart, error) {
	registry, repo, tag, err := splitRef(ref)
	if err != nil {
		return nil, err
	}
	if err := checkCRDs(crds); err != nil {
		return nil, fmt.Errorf("traefik-crd: %s: %w", CRDFile, err)
	}
	files := map[string][]byte{}
	err = fs.WalkDir(sources, "traefik", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Base(p) == "README.md" {
			return err
		}
		data, err := sources.ReadFile(p)
		files[strings.TrimPrefix(p, "traefik/")] = data
		return err
	})
	if err != nil {
		return nil, err
	}
	values, err := setValue(files["values.yaml"], "  registry: docker.io\n", "  registry: "+registry+"\n")
	if err == nil {
		values, err = setValue(values, "  repository: rancher/mirrored-library-traefik\n", "  repository: "+repo+"\n")
	}
	if err == nil {
		values, err = setValue(values, "  tag: \"\"\n", "  tag: \""+tag+"\"\n")
	}
	if err != nil {
		return nil, fmt.Errorf("traefik: values.yaml: %w", err)
	}
	files["values.yaml"] = values
	traefik, err := pack("traefik", tag, files)
	if err != nil {
		return nil, err
	}
	crd, err := pack("traefik-crd", tag, map[string][]byte{
		"Chart.yaml": []byte("apiVersion: v2\nname: traefik-crd\ndescription: Traefik's CustomResourceDefinitions (traefik.io), for ballast\n" +
			"type: application\nversion: 0.0.0\nappVersion: \"0.0.0\"\n"),
		"templates/crds.yaml": crds,
	})
	if err != nil {
		return nil, err
	}
	return []Chart{crd, traefik}, nil
}

// splitRef splits registry/repository:tag.
func splitRef(ref string) (registry, repo, tag string, err error) {
	name, tag, ok := strings.Cut(ref, ":")
	registry, repo, ok2 := strings.Cut(name, "/")
	if !ok || !ok2 || tag == "" || !strings.Contains(registry, ".") {
		return "", "", "", fmt.Errorf("charts: image %q: want registry/repository:tag", ref)
	}
	return registry, repo, tag, nil
}

// checkCRDs makes sure the file holds CRDs and nothing Helm would read as
// a template.
func checkCRDs(crds []byte) error {
	if !bytes.Contains(crds, []byte("kind: CustomResourceDefinition")) {
		return fmt.Errorf("no CustomResourceDefinition")
	}
	if bytes.Contains(crds, []byte("{{")) {
		return fmt.Errorf("holds {{, which Helm would template")
	}
	return nil
}

func setValue(data []byte, old, new string) ([]byte, error) {
	if bytes.Count(data, []byte(old)) != 1 {
		return nil, fmt.Errorf("want exactly one %q", strings.TrimSpace(old))
	}
	return bytes.Replace(data, []byte(old), []byte(new), 1), nil
}

var versionLines = regexp.MustCompile(`(?m)^(version|appVersion): .*$`)

// pack writes the chart as <name>/... in a reproducible .tgz, with
// version <appVersion>+ballast.<hash of the files> and appVersion set in
// Chart.yaml.
func pack(name, appVersion string, files map[string][]byte) (Chart, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s %d\n", n, len(files[n]))
		h.Write(files[n])
	}
	version := appVersion + "+ballast." + hex.EncodeToString(h.Sum(nil))[:10]
	chart, ok := files["Chart.yaml"]
	if !ok || len(versionLines.FindAll(chart, -1)) != 2 {
		return Chart{}, fmt.Errorf("charts: %s: Chart.yaml needs one version and one appVersion line", name)
	}
	files["Chart.yaml"] = versionLines.ReplaceAllFunc(chart, func(l []byte) []byte {
		if bytes.HasPrefix(l, []byte("version:")) {
			return []byte("version: " + version)
		}
		return []byte("appVersion: \"" + appVersion + "\"")
	})
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	dirs := map[string]bool{}
	for _, n := range names {
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var entries []string
	for d := range dirs {
		entries = append(entries, d+"/")
	}
	entries = append(entries, names...)
	sort.Strings(entries)
	for _, e := range append([]string{""}, entries...) {
		hdr := &tar.Header{Name: name + "/" + e, ModTime: mtime, Format: tar.FormatPAX}
		if e == "" || strings.HasSuffix(e, "/") {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		} else {
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, int64(len(files[e]))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return Chart{}, err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(files[e]); err != nil {
				return Chart{}, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return Chart{}, err
	}
	if err := gz.Close(); err != nil {
		return Chart{}, err
	}
	return Chart{Name: name, Version: version, Data: buf.Bytes()}, nil
}
