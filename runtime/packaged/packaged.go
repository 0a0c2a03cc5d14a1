// Package packaged writes the components k3s ships as manifests (CoreDNS,
// local-path-provisioner, metrics-server, RuntimeClasses, the k3s role
// bindings, the cloud-controller RBAC, the traefik and traefik-crd
// HelmCharts) into server/manifests at every server start, from templates
// embedded in the binary, as k3s's deploy.Stage does, and copies the
// charts the image carries into server/static/charts (StageCharts).
//
// `disable: [name, ...]` names a manifest by its file name without the
// extension (coredns, local-storage, runtimes, rolebindings, ccm) or by its
// directory (metrics-server), as manifests.Disabled matches them; traefik
// is written only when the image carries its charts. A disabled component is not written; a copy
// an earlier start left behind stays until the deploy controller (given
// the same names with --disable) has deleted the objects it names and
// then the file, which is the order k3s's deploy controller keeps (the
// file is the only record of what to delete: this runtime writes no Addon
// objects). ServiceLB is a controller, not a manifest (package servicelb).
//
// This package imports no k8s.io module.
package packaged

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ballast-os/ballast/runtime/manifests"
)

//go:embed manifests
var templates embed.FS

// Components are the names `disable` acts on here: the manifests this
// package writes, by file name without extension or by directory.
var Components = []string{"ccm", "coredns", "local-storage", "metrics-server", "rolebindings", "runtimes", "traefik"}

// Defaults k3s uses when a value is not set.
const (
	DefaultClusterDNS    = "10.43.0.10"
	DefaultClusterDomain = "cluster.local"
	DefaultStoragePath   = "/var/lib/rancher/k3s/storage"
	// DefaultRegistry prefixes image references when no
	// system-default-registry is set, so that the manifests name the
	// images exactly as the archives in agent/images do
	// (docker.io/rancher/...). k3s writes the short form (rancher/...),
	// which containerd normalises to the same reference.
	DefaultRegistry = "docker.io"
)

// Values fill the templates. Zero values take k3s's defaults.
type Values struct {
	// ClusterDNS: the first address is the kube-dns Service's clusterIP;
	// all of them are its clusterIPs (dual-stack). Empty: 10.43.0.10.
	ClusterDNS []netip.Addr
	// ClusterDomain for CoreDNS's kubernetes plugin. Empty: cluster.local.
	ClusterDomain string
	// SystemDefaultRegistry is the registry host every packaged image is
	// pulled from (k3s's system-default-registry). Empty: docker.io.
	SystemDefaultRegistry string
	// StoragePath is where local-path-provisioner makes volumes (k3s's
	// default-local-storage-path). Empty: /var/lib/rancher/k3s/storage.
	StoragePath string
	// FlannelExternalIP makes metrics-server prefer nodes' ExternalIP
	// (k3s does so with flannel-external-ip).
	FlannelExternalIP bool
	// TraefikChart and TraefikCRDChart are the chart files in
	// server/static/charts the traefik HelmCharts install (StageCharts
	// finds them). Either empty: traefik.yaml is not written.
	TraefikChart, TraefikCRDChart string
}

// Result of Stage. Paths are absolute (dir joined with the file's path).
type Result struct {
	Written   []string // created, or changed since the last start
	Unchanged []string // already on disk with the same content: not rewritten
	// Disabled are the names given to disable (trimmed, without
	// duplicates, in order). The deploy controller needs them all with
	// --disable: they apply to any file in the manifests directory.
	Disabled []string
	// Pending are earlier copies of disabled components still on disk;
	// the deploy controller deletes their objects, then removes them.
	Pending []string
	// Warnings say what is not deployed and why.
	Warnings []string
}

// DeployControllerArgs are the arguments `k3s deploy-controller` needs
// for the disabled names: nil when nothing is disabled.
func (r Result) DeployControllerArgs() []string {
	if len(r.Disabled) == 0 {
		return nil
	}
	return []string{"--disable=" + strings.Join(r.Disabled, ",")}
}

func cleanNames(disable []string) []string {
	var out []string
	for _, d := range disable {
		for _, n := range strings.Split(d, ",") {
			n = strings.TrimSpace(n)
			if n != "" && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// vars are the template variables, named as k3s names them, plus
// DEFAULT_LOCAL_STORAGE_PATH_JSON (a JSON string, which
// are valid YAML and JSON scalars whatever they contain).
func (v Values) vars() (map[string]string, error) {
	dns := v.ClusterDNS
	if len(dns) == 0 {
		dns = []netip.Addr{netip.MustParseAddr(DefaultClusterDNS)}
	}
	ips := make([]string, len(dns))
	for i, a := range dns {
		if !a.IsValid() {
			return nil, fmt.Errorf("packaged: cluster-dns: address %d is not set", i+1)
		}
		ips[i] = a.Unmap().String()
	}
	policy := "SingleStack"
	if len(dns) > 1 {
		policy = "RequireDualStack"
	}
	domain := v.ClusterDomain
	if domain == "" {
		domain = DefaultClusterDomain
	}
	if strings.ContainsAny(domain, " \t\r\n{}\"'#;/") {
		return nil, fmt.Errorf("packaged: cluster-domain %q: not a DNS domain", domain)
	}
	reg := strings.TrimSuffix(v.SystemDefaultRegistry, "/")
	raw := v.SystemDefaultRegistry
	if reg == "" {
		reg = DefaultRegistry
	}
	if strings.ContainsAny(reg, " \t\r\n\"'#") {
		return nil, fmt.Errorf("packaged: system-default-registry %q: not a registry host", v.SystemDefaultRegistry)
	}
	storage := v.StoragePath
	if storage == "" {
		storage = DefaultStoragePath
	}
	if !filepath.IsAbs(storage) {
		return nil, fmt.Errorf("packaged: default-local-storage-path %q: not an absolute path", storage)
	}
	storageJSON, err := json.Marshal(storage)
	if err != nil {
		return nil, err
	}
	addrTypes := "InternalIP,ExternalIP,Hostname"
	if v.FlannelExternalIP {
		addrTypes = "ExternalIP,InternalIP,Hostname"
	}
	return map[string]string{
		"%{CLUSTER_DNS}%":                     ips[0],
		"%{CLUSTER_DNS_LIST}%":                "[" + strings.Join(ips, ",") + "]",
		"%{CLUSTER_DNS_IPFAMILYPOLICY}%":      policy,
		"%{CLUSTER_DOMAIN}%":                  domain,
		"%{DEFAULT_LOCAL_STORAGE_PATH}%":      storage,
		"%{DEFAULT_LOCAL_STORAGE_PATH_JSON}%": string(storageJSON),
		"%{SYSTEM_DEFAULT_REGISTRY}%":         reg + "/",
		"%{SYSTEM_DEFAULT_REGISTRY_RAW}%":     raw,
		"%{PREFERRED_ADDRESS_TYPES}%":         addrTypes,
		"%{TRAEFIK_CHART}%":                   v.TraefikChart,
		"%{TRAEFIK_CRD_CHART}%":               v.TraefikCRDChart,
	}, nil
}

// kubernetesAPI is left in HelmCharts' chart URLs: the Helm controller's
// job replaces it with the API server's service address.
const kubernetesAPI = "%{KUBERNETES_API}%"

// unknownVar is the offset of the first %{ left in data that is not
// %{KUBERNETES_API}% (which the Helm controller's job fills in chart
// URLs), or -1.
func unknownVar(data []byte) int {
	for off := 0; ; {
		i := bytes.Index(data[off:], []byte("%{"))
		if i < 0 {
			return -1
		}
		if i += off; !bytes.HasPrefix(data[i:], []byte(kubernetesAPI)) {
			return i
		}
		off = i + len(kubernetesAPI)
	}
}

// Render returns the manifests Stage writes, by slash-separated path
// relative to the manifests directory, without the disabled ones.
func Render(v Values, disable []string) (map[string][]byte, error) {
	vars, err := v.vars()
	if err != nil {
		return nil, err
	}
	names := cleanNames(disable)
	out := map[string][]byte{}
	err = fs.WalkDir(templates, "manifests", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, "manifests/")
		if manifests.Disabled(rel, names) || (rel == "traefik.yaml" && (v.TraefikChart == "" || v.TraefikCRDChart == "")) {
			return nil
		}
		data, err := templates.ReadFile(p)
		if err != nil {
			return err
		}
		for k, val := range vars {
			data = bytes.ReplaceAll(data, []byte(k), []byte(val))
		}
		if i := unknownVar(data); i >= 0 {
			line := bytes.Count(data[:i], []byte("\n")) + 1
			end := bytes.Index(data[i:], []byte("}%"))
			if end < 0 {
				end = 2
			} else {
				end += 2
			}
			return fmt.Errorf("packaged: %s:%d: unknown template variable %s", rel, line, data[i:i+end])
		}
		out[rel] = data
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Stage writes the packaged manifests into dir (server/manifests),
// leaving out the disabled ones. A file whose content is already what it
// would write is not rewritten, so its mtime does not change and the
// deploy controller does not re-apply it on its 15 s walk. Files are
// written 0600 in 0700 directories, through a temporary file and a
// rename, so the controller never reads half a manifest.
func Stage(dir string, v Values, disable []string) (Result, error) {
	files, err := Render(v, disable)
	if err != nil {
		return Result{}, err
	}
	res := Result{Disabled: cleanNames(disable)}
	rels := make([]string, 0, len(files))
	for rel := range files {
		rels = append(rels, rel)
	}
	sort.Strings(rels)
	for _, rel := range rels {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		same, err := sameContent(p, files[rel])
		if err != nil {
			return res, err
		}
		if same {
			res.Unchanged = append(res.Unchanged, p)
			continue
		}
		if err := writeAtomic(p, files[rel]); err != nil {
			return res, err
		}
		res.Written = append(res.Written, p)
	}
	// Earlier copies of what is now disabled: left for the deploy
	// controller, which deletes their objects first.
	all, err := Render(v, nil)
	if err != nil {
		return res, err
	}
	for rel := range all {
		if _, kept := files[rel]; kept {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if _, err := os.Lstat(p); err == nil {
			res.Pending = append(res.Pending, p)
		}
	}
	sort.Strings(res.Pending)
	return res, nil
}

func sameContent(p string, want []byte) (bool, error) {
	fi, err := os.Lstat(p)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("packaged: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != int64(len(want)) {
		return false, nil
	}
	have, err := os.ReadFile(p)
	if err != nil {
		return false, fmt.Errorf("packaged: %w", err)
	}
	if !bytes.Equal(have, want) {
		return false, nil
	}
	if fi.Mode().Perm() != 0o600 {
		// Chmod changes ctime only: the controller keys on mtime.
		if err := os.Chmod(p, 0o600); err != nil {
			return false, fmt.Errorf("packaged: %w", err)
		}
	}
	return true, nil
}

func writeAtomic(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("packaged: %w", err)
	}
	// The temporary name starts with a dot and does not end in .yaml: the
	// controller does not pick it up.
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("packaged: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("packaged: writing %s: %w", p, err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("packaged: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("packaged: writing %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("packaged: %w", err)
	}
	return nil
}
