package imagebuild

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/charts"
	"github.com/ballast-os/ballast/imagebuild/componentimages"
	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/runtimebin"
	"github.com/ballast-os/ballast/imagebuild/spec"
)

// Paths of the runtime in the system image (docs/architecture.md, "Runtime").
const (
	// RuntimeBinPath is the ballast runtime's multi-call k3s.
	RuntimeBinPath = "usr/bin/k3s"
	// K3sBinPath is the official k3s binary (runtime kind k3s).
	K3sBinPath = "usr/local/bin/k3s"
	// CNIBinDir holds the CNI plugins; flannel there is k3s itself.
	CNIBinDir = "usr/lib/ballast/cni"
	// ToolsDir holds the tools that /usr/bin has as personalities of the
	// runtime's k3s (crictl): the personality runs the tool from here.
	ToolsDir = "usr/lib/ballast/bin"
	// ImagesDir holds the image archives the init links into
	// /var/lib/rancher/k3s/agent/images.
	ImagesDir = "usr/lib/ballast/images"
)

// runtimeLinks are the personalities of the ballast runtime's k3s binary.
var runtimeLinks = []string{"usr/bin/kubectl", "usr/bin/crictl", "usr/bin/ctr", "usr/bin/etcdctl"}

// toolPath is where the image carries a runtime tool: /usr/bin, or
// ToolsDir for one /usr/bin has as a k3s personality.
func toolPath(name string) string {
	if p := "usr/bin/" + name; !slices.Contains(runtimeLinks, p) {
		return p
	}
	return ToolsDir + "/" + name
}

// RuntimePackages are the Debian packages an image with a runtime needs
// beside the base userland: the OCI runtime and the netfilter tools
// kube-proxy, flannel and the CNI plugins run, and tcpdump, with which
// k3s's documentation reads the packets NetworkPolicies drop
// (`tcpdump -ni nflog:100`).
var RuntimePackages = []string{"runc", "iptables", "ipset", "conntrack", "tcpdump"}

// busyboxPackage gives the busybox of the local-path-provisioner helper
// image; only its binary is used, and not in the system image.
const busyboxPackage = "busybox-static"

// RuntimeModules are the kernel modules a node loads for k3s (containerd's
// overlay snapshotter, the bridge CNI and br_netfilter, flannel's vxlan,
// kube-proxy's iptables rules through iptables-nft, ipset, the network
// policy controller's NFLOG and its reader, the bandwidth plugin's tbf and
// ifb, FUSE for the stargz snapshotter). The build refuses a board whose module_excludes
// drop one of them.
var RuntimeModules = []string{
	"overlay", "br_netfilter", "bridge", "veth", "vxlan", "udp_tunnel",
	"nf_conntrack", "nf_conntrack_netlink", "nf_nat", "nf_reject_ipv4",
	"ip_tables", "iptable_nat", "iptable_filter", "ip6_tables", "ip6table_nat", "ip6table_filter",
	"nf_tables", "nft_compat", "nft_chain_nat", "nft_ct", "nft_masq", "nft_nat", "nft_reject_inet", "nft_fib_inet",
	"xt_conntrack", "xt_comment", "xt_mark", "xt_MASQUERADE", "xt_addrtype", "xt_statistic",
	"xt_nat", "xt_multiport", "xt_tcpudp", "xt_physdev", "xt_limit", "xt_set", "ipt_REJECT",
	"ip_set", "ip_set_hash_ip", "ip_set_hash_net", "nfnetlink_log", "xt_NFLOG", "sch_tbf", "ifb", "fuse",
}

// runtimeFiles is the runtime a build puts into the image.
type runtimeFiles struct {
	kind   string
	rt     *runtimebin.Runtime
	images []runtimeImage
	charts []charts.Chart // for charts.Dir: the packaged HelmCharts' charts
}

// runtimeImage is one archive for /usr/lib/ballast/images.
type runtimeImage struct {
	Name, Ref, Path string // Ref is empty for an archive the spec names
}

func (b *builder) hasRuntime() bool { return b.spec.Runtime.Kind != spec.RuntimeNone }

// buildRuntime builds (kind ballast) or fetches (kind k3s) the runtime binary.
func (b *builder) buildRuntime(ctx context.Context) (*runtimeFiles, error) {
	r := b.spec.Runtime
	rf := &runtimeFiles{kind: r.Kind}
	var err error
	switch r.Kind {
	case spec.RuntimeBallast:
		src, serr := b.sourceDir()
		if serr != nil {
			return nil, serr
		}
		rf.rt, err = runtimebin.Build(ctx, runtimebin.BuildOptions{
			SourceDir: src,
			Arch:      b.board.Arch,
			Version:   Version(),
			CacheDir:  filepath.Join(b.cache, "runtime"),
			Offline:   b.opts.Offline,
			Log:       b.log,
		})
	case spec.RuntimeK3s:
		o := runtimebin.FetchOptions{
			Version:  r.Version,
			SHA256:   r.SHA256,
			URL:      r.URL,
			CacheDir: filepath.Join(b.cache, "k3s"),
			Offline:  b.opts.Offline,
			Log:      b.log,
		}
		if r.File != "" {
			o.File = b.spec.Path(r.File)
		} else if o.URL == "" {
			o.URL = spec.K3sURL(r.Version, b.board.Arch)
		}
		rf.rt, err = runtimebin.Fetch(ctx, o)
	default:
		return nil, fmt.Errorf("runtime kind %q has no binary", r.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: runtime: %w", b.specName(), err)
	}
	return rf, nil
}

func (b *builder) specName() string {
	if b.spec.File != "" {
		return b.spec.File
	}
	return "default build spec"
}

// buildRuntimeImages builds the images ballast knows (the runtime's
// defaults for kind ballast, plus those the spec names) and checks the
// archives the spec names.
func (b *builder) buildRuntimeImages(ctx context.Context, pk *packages, rf *runtimeFiles) error {
	var names []string
	if rf.kind == spec.RuntimeBallast {
		names = append(names, componentimages.Default...)
	}
	var files []runtimeImage
	for i, img := range b.spec.Runtime.Images {
		if !spec.IsImageFile(img) {
			names = append(names, img)
			continue
		}
		p := b.spec.Path(img)
		if err := checkImageArchive(p); err != nil {
			return fmt.Errorf("%s: runtime.images[%d]: %w", b.specName(), i, err)
		}
		files = append(files, runtimeImage{Name: strings.TrimSuffix(filepath.Base(p), ".tar"), Path: p})
	}
	if len(names) > 0 {
		bb, err := b.busybox(ctx, pk)
		if err != nil {
			return err
		}
		imgs, err := componentimages.Build(ctx, componentimages.Options{
			Arch:     b.board.Arch,
			CacheDir: b.cache,
			Names:    names,
			Busybox:  bb,
			Log:      b.log,
		})
		if err != nil {
			return err
		}
		for _, img := range imgs {
			rf.images = append(rf.images, runtimeImage{Name: img.Name, Ref: img.Ref, Path: img.Path})
			if img.Name == "traefik" {
				if rf.charts, err = b.traefikCharts(ctx, img.Ref); err != nil {
					return err
				}
			}
		}
	}
	rf.images = append(rf.images, files...)
	for i, img := range rf.images {
		for _, o := range rf.images[:i] {
			if o.Name == img.Name {
				return fmt.Errorf("two runtime images would be %s/%s.tar: %s and %s", ImagesDir, img.Name, o.Path, img.Path)
			}
		}
	}
	return nil
}

// traefikCharts packages the traefik and traefik-crd charts for the
// Traefik image ref, the CRDs from the Traefik module its binary is
// built from.
func (b *builder) traefikCharts(ctx context.Context, ref string) ([]charts.Chart, error) {
	dir, err := componentimages.ModuleDir(ctx, componentimages.Options{Arch: b.board.Arch, CacheDir: b.cache}, "traefik")
	if err != nil {
		return nil, err
	}
	crds, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(charts.CRDFile)))
	if err != nil {
		return nil, fmt.Errorf("traefik-crd chart: %w", err)
	}
	cs, err := charts.Traefik(ref, crds)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		fmt.Fprintf(b.log, "chart %s: %d KiB\n", c.File(), len(c.Data)>>10)
	}
	return cs, nil
}

// busybox reads the static busybox out of Debian's busybox-static.
func (b *builder) busybox(ctx context.Context, pk *packages) ([]byte, error) {
	if pk.busybox == nil {
		return nil, fmt.Errorf("%s was not resolved", busyboxPackage)
	}
	u, err := pk.archive.Unpack(ctx, *pk.busybox)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{"usr/bin/busybox", "bin/busybox"} {
		data, err := os.ReadFile(u.HostPath(p))
		if err == nil {
			return data, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%s %s has no usr/bin/busybox", pk.busybox.Name, pk.busybox.Version)
}

// checkImageArchive refuses a file that is not an image archive: a tar
// with an OCI index.json or a docker-save manifest.json at its top.
func checkImageArchive(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return fmt.Errorf("%s: not an image archive (no index.json or manifest.json at its top)", p)
		}
		if err != nil {
			return fmt.Errorf("%s: not a tar archive: %w", p, err)
		}
		switch path.Clean(h.Name) {
		case "index.json", "manifest.json":
			return nil
		}
	}
}

// addRuntimeFiles puts the runtime into the system tree.
func (b *builder) addRuntimeFiles(t *filetree.Tree, rf *runtimeFiles) error {
	addBin := func(p string, bin runtimebin.Binary) error {
		src, err := filetree.NewHostFile(bin.Path)
		if err != nil {
			return err
		}
		return t.Add(filetree.Entry{Path: p, Kind: filetree.File, Mode: 0o755, Data: src})
	}
	switch rf.kind {
	case spec.RuntimeBallast:
		if err := addBin(RuntimeBinPath, rf.rt.K3s); err != nil {
			return err
		}
		for _, l := range runtimeLinks {
			if e := t.Get(l); e != nil {
				return fmt.Errorf("/%s (from a Debian package) would hide the runtime's %s", l, path.Base(l))
			}
			if err := t.AddSymlink(l, "/"+RuntimeBinPath); err != nil {
				return err
			}
		}
		for _, c := range rf.rt.CNI {
			if err := addBin(CNIBinDir+"/"+c.Name, c); err != nil {
				return err
			}
		}
		for _, b := range rf.rt.Tools {
			if err := addBin(toolPath(b.Name), b); err != nil {
				return err
			}
		}
	case spec.RuntimeK3s:
		if err := addBin(K3sBinPath, rf.rt.K3s); err != nil {
			return err
		}
	}
	if len(rf.images) > 0 {
		if err := t.AddDir(ImagesDir, 0o755); err != nil {
			return err
		}
	}
	if len(rf.charts) > 0 {
		if err := t.AddDir(charts.Dir, 0o755); err != nil {
			return err
		}
	}
	for _, c := range rf.charts {
		if err := t.AddFile(charts.Dir+"/"+c.File(), 0o644, c.Data); err != nil {
			return err
		}
	}
	for _, img := range rf.images {
		src, err := filetree.NewHostFile(img.Path)
		if err != nil {
			return err
		}
		if err := t.Add(filetree.Entry{Path: ImagesDir + "/" + img.Name + ".tar", Kind: filetree.File, Mode: 0o644, Data: src}); err != nil {
			return err
		}
	}
	return nil
}

// checkRuntimeModules refuses a system tree that lacks a module the
// runtime loads: a board's module_excludes must not drop them.
func checkRuntimeModules(t *filetree.Tree, k *kernelFiles, board string) error {
	root := "usr/lib/modules/" + k.version
	have := map[string]bool{}
	for _, e := range t.Entries() {
		if e.Kind == filetree.File && strings.HasPrefix(e.Path, root+"/kernel/") {
			have[moduleName(e.Path)] = true
		}
	}
	if e := k.tree.Get(root + "/modules.builtin"); e != nil && e.Kind == filetree.File {
		rc, err := e.Data.Open()
		if err != nil {
			return err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(data), "\n") {
			if l != "" {
				have[moduleName(l)] = true
			}
		}
	}
	var missing []string
	for _, m := range RuntimeModules {
		if !have[strings.ReplaceAll(m, "-", "_")] {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the runtime needs kernel modules that board %s leaves out of the system image: %s (check the board's module_excludes, or kernel.keep_modules in the spec)", board, strings.Join(missing, ", "))
	}
	return nil
}

// moduleName is a module's name from its path: a/b/nf_nat.ko.xz -> nf_nat
// (dashes and underscores are the same to modprobe).
func moduleName(p string) string {
	n := path.Base(p)
	if i := strings.Index(n, ".ko"); i >= 0 {
		n = n[:i]
	}
	return strings.ReplaceAll(n, "-", "_")
}

// ManifestRuntime is build.json's record of the runtime.
type ManifestRuntime struct {
	// Kind: ballast or k3s.
	Kind string `json:"kind"`
	// Version: the ballast version the runtime was built at, or the k3s release.
	Version string `json:"version,omitempty"`
	// Binary is the k3s binary's path in the system image (absolute).
	Binary string          `json:"binary"`
	SHA256 string          `json:"sha256"`
	Size   int64           `json:"size"`
	Images []ManifestImage `json:"images,omitempty"`
}

// ManifestImage is one archive in /usr/lib/ballast/images.
type ManifestImage struct {
	Name string `json:"name"`
	// Ref is the image's full reference; empty for an archive the spec named.
	Ref    string `json:"ref,omitempty"`
	File   string `json:"file"` // absolute path in the system image
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

func (rf *runtimeFiles) manifest() (*ManifestRuntime, error) {
	m := &ManifestRuntime{Kind: rf.kind, Version: rf.rt.Version, Binary: "/" + RuntimeBinPath,
		SHA256: rf.rt.K3s.SHA256, Size: rf.rt.K3s.Size}
	if rf.kind == spec.RuntimeK3s {
		m.Binary = "/" + K3sBinPath
	}
	for _, img := range rf.images {
		sum, n, err := hashFile(img.Path)
		if err != nil {
			return nil, err
		}
		m.Images = append(m.Images, ManifestImage{Name: img.Name, Ref: img.Ref,
			File: "/" + ImagesDir + "/" + img.Name + ".tar", SHA256: sum, Size: n})
	}
	slices.SortFunc(m.Images, func(a, b ManifestImage) int { return strings.Compare(a.Name, b.Name) })
	return m, nil
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hashing %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// runtimePackageNames are the packages the runtime adds to the system.
func (b *builder) runtimePackageNames() []string {
	if !b.hasRuntime() {
		return nil
	}
	return RuntimePackages
}

// needsBusybox: images ballast builds include the local-path helper,
// which is busybox.
func (b *builder) needsBusybox() bool {
	if b.spec.Runtime.Kind == spec.RuntimeBallast {
		return true
	}
	for _, img := range b.spec.Runtime.Images {
		if !spec.IsImageFile(img) {
			return true
		}
	}
	return false
}
