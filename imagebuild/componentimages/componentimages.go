// Package componentimages builds, from source, the container images a
// fresh air-gapped ballast node needs (the pod sandbox, CoreDNS,
// local-path-provisioner and its busybox helper, metrics-server, ServiceLB's
// forwarder, the Helm controller's job image, Traefik) and the
// project's own test server, as OCI image-layout archives that k3s imports
// from agent/images.
//
// Upstream programs are compiled with `go install module/cmd@version`,
// CoreDNS from a generated main that links only the plugins a node uses
// (see corednsPlugins), ballast's own from the source embedded in package
// images. Binaries and
// archives are cached under Options.CacheDir, keyed by what they are built
// from (module@version or source hash, architecture, Go version), so a
// second Build only hashes and reuses.
//
// Cache layout, under Options.CacheDir:
//
//	componentimages/bin/<name>-<arch>-<key>       compiled binaries
//	componentimages/<name>-<arch>-<key>.tar       OCI archives
package componentimages

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// Image is one built archive.
type Image struct {
	Name string // "pause", "coredns", "local-path-provisioner", "busybox", "metrics-server", "svclb", "klipper-helm", "testserver"
	Ref  string // full reference, e.g. docker.io/rancher/mirrored-pause:3.6
	Path string // the OCI archive (uncompressed tar) on disk, in the cache; callers copy it
}

// Options says what to build and where to keep it.
type Options struct {
	Arch     string   // Debian/Go arch: "amd64" or "arm64"
	CacheDir string   // where built binaries and archives are kept between builds; "" means $XDG_CACHE_HOME/ballast
	Names    []string // which images; nil means Default
	// Busybox is a static busybox binary for Arch (the caller takes it
	// from Debian's busybox-static); needed only for "busybox".
	Busybox []byte
	Log     io.Writer // one progress line per image built or reused (nil: quiet)
}

// Default are the images every node with the runtime needs.
var Default = []string{"pause", "coredns", "local-path-provisioner", "busybox", "metrics-server", "svclb", "klipper-helm", "traefik"}

// Known are all the images Build can make.
var Known = []string{"pause", "coredns", "local-path-provisioner", "busybox", "metrics-server", "svclb", "klipper-helm", "traefik", "testserver"}

// created is the creation time of every image and the mtime of every file
// in it. It is fixed, not the build's SOURCE_DATE_EPOCH, so archives stay
// cached across builds.
var created = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// defaultPath is the PATH of every image (Docker's default).
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// component says how one image is made. Versions live here and nowhere else.
type component struct {
	name string
	ref  string
	// Upstream Go programs: `go install pkg@version`, or built inside
	// module (at version) when its go.mod has replace directives, which
	// go install refuses.
	pkg, version, module string
	// plugins, for CoreDNS, are the plugin packages linked in (see
	// corednsPlugins); nil means upstream's main with every plugin.
	plugins []string
	// ballast's own programs: the directory in images.Sources.
	source string
	// binary is where the program goes in the image.
	binary string
	// tools are upstream programs the image carries beside its own
	// (pkg, version and binary set), compiled and cached the same way.
	tools []component
	// caps are file capabilities of the binary (setcap ...=+ep).
	caps   []uint
	config ociimage.Config
}

// capNetBindService is CAP_NET_BIND_SERVICE, from linux/capability.h.
const capNetBindService = 10

// components mirror the upstream images' Dockerfiles: same paths,
// entrypoints, users and working directories, on an empty base instead of
// distroless or alpine.
var components = []component{
	{
		// kubernetes/build/pause: USER 65535:65535, ENTRYPOINT ["/pause"].
		name:   "pause",
		ref:    "docker.io/rancher/mirrored-pause:3.6",
		source: "pause",
		binary: "/pause",
		config: ociimage.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"},
	},
	{
		// coredns/Dockerfile: distroless nonroot, setcap
		// cap_net_bind_service=+ep /coredns so it binds :53 as non-root.
		name:    "coredns",
		ref:     "docker.io/rancher/mirrored-coredns-coredns:1.15.0",
		pkg:     "github.com/coredns/coredns",
		version: "v1.15.0",
		plugins: corednsPlugins,
		binary:  "/coredns",
		caps:    []uint{capNetBindService},
		config:  ociimage.Config{Entrypoint: []string{"/coredns"}, User: "65532:65532", WorkingDir: "/"},
	},
	{
		// local-path-provisioner/package/Dockerfile: alpine, root,
		// /usr/bin/local-path-provisioner found through PATH.
		name:    "local-path-provisioner",
		ref:     "docker.io/rancher/local-path-provisioner:v0.0.30",
		pkg:     "github.com/rancher/local-path-provisioner",
		version: "v0.0.30",
		binary:  "/usr/bin/local-path-provisioner",
		config:  ociimage.Config{Entrypoint: []string{"local-path-provisioner"}},
	},
	{
		// library/busybox: /bin/busybox plus applet links, CMD ["sh"].
		name:   "busybox",
		ref:    "docker.io/rancher/mirrored-library-busybox:1.37.0",
		binary: "/bin/busybox",
		config: ociimage.Config{Cmd: []string{"sh"}},
	},
	{
		// metrics-server/Dockerfile: distroless static, USER 65534.
		name:    "metrics-server",
		ref:     "docker.io/rancher/mirrored-metrics-server:v0.9.0",
		pkg:     "sigs.k8s.io/metrics-server/cmd/metrics-server",
		version: "v0.9.0",
		binary:  "/metrics-server",
		config:  ociimage.Config{Entrypoint: []string{"/metrics-server"}, User: "65534"},
	},
	{
		// ServiceLB's per-port forwarder, under the name and tag of the
		// klipper-lb image k3s runs (klipper-lb is iptables rules set up
		// by a shell script; this is ballast's own forwarder, see
		// images/svclb). Non-root: the capability binds ports below 1024.
		name:   "svclb",
		ref:    "docker.io/rancher/klipper-lb:v0.4.9",
		source: "svclb",
		binary: "/svclb",
		caps:   []uint{capNetBindService},
		config: ociimage.Config{Entrypoint: []string{"/svclb"}, User: "65532:65532", WorkingDir: "/"},
	},
	{
		// The Helm controller's job image, under the name and tag of the
		// klipper-helm image k3s runs (klipper-helm is a bash script
		// around helm; this is ballast's own entry, see images/klipperhelm,
		// with upstream helm v3 as klipper-helm ships). USER klipper-helm
		// (1000): the jobs run as non-root with a read-only root.
		name:   "klipper-helm",
		ref:    "docker.io/rancher/klipper-helm:v0.9.14-build20260309",
		source: "klipperhelm",
		binary: "/usr/bin/entry",
		tools:  []component{{name: "helm", pkg: "helm.sh/helm/v3/cmd/helm", version: "v3.21.4", binary: "/usr/bin/helm"}},
		config: ociimage.Config{Entrypoint: []string{"entry"}, User: "1000:1000", WorkingDir: "/home/klipper-helm",
			Env: []string{"HOME=/home/klipper-helm"}},
	},
	{
		// library/traefik (mirrored by k3s as rancher/mirrored-library-
		// traefik): /usr/local/bin/traefik on alpine; here on an empty
		// base, the binary as the entrypoint (the chart passes only
		// flags, which the upstream entrypoint.sh hands to traefik). The
		// chart runs it as 65532 with a read-only root.
		name:    "traefik",
		ref:     "docker.io/rancher/mirrored-library-traefik:3.6.12",
		pkg:     "github.com/traefik/traefik/v3/cmd/traefik",
		module:  "github.com/traefik/traefik/v3",
		version: "v3.6.12",
		binary:  "/usr/local/bin/traefik",
		config:  ociimage.Config{Entrypoint: []string{"/usr/local/bin/traefik"}, WorkingDir: "/"},
	},
	{
		name:   "testserver",
		ref:    "docker.io/ballast/testserver:v1",
		source: "testserver",
		binary: "/testserver",
		config: ociimage.Config{Entrypoint: []string{"/testserver"}, User: "65532:65532", WorkingDir: "/"},
	},
}

// busyboxApplets are linked to /bin/busybox in the busybox image: what
// local-path-provisioner's helper scripts and people debugging a volume use.
var busyboxApplets = []string{
	"[", "ash", "awk", "basename", "cat", "chgrp", "chmod", "chown", "cp", "cut", "date",
	"dd", "df", "dirname", "du", "echo", "env", "false", "find", "grep", "head", "hostname",
	"id", "kill", "ln", "ls", "mkdir", "mktemp", "mv", "nslookup", "printf", "ps", "pwd",
	"readlink", "realpath", "rm", "rmdir", "sed", "sh", "sleep", "sort", "stat", "sync",
	"tail", "tar", "tee", "test", "touch", "tr", "true", "uname", "uniq", "vi", "wc", "wget",
	"which", "xargs",
}

func lookup(name string) (component, bool) {
	for _, c := range components {
		if c.name == name {
			return c, true
		}
	}
	return component{}, false
}

// Ref returns the full image reference of a known image name.
func Ref(name string) (string, bool) {
	c, ok := lookup(name)
	return c.ref, ok
}

// Build makes the archives o.Names asks for, reusing cached ones, and
// returns them in the order asked.
func Build(ctx context.Context, o Options) ([]Image, error) {
	names := o.Names
	if names == nil {
		names = Default
	}
	if _, ok := elfMachines[o.Arch]; !ok {
		return nil, fmt.Errorf("component images: architecture %q not supported (want amd64 or arm64)", o.Arch)
	}
	var comps []component
	for i, n := range names {
		c, ok := lookup(n)
		if !ok {
			return nil, fmt.Errorf("component images: unknown image %q (known: %v)", n, Known)
		}
		if slices.Contains(names[:i], n) {
			return nil, fmt.Errorf("component images: %q asked for twice", n)
		}
		if n == "busybox" && len(o.Busybox) == 0 {
			return nil, fmt.Errorf("component images: busybox: Options.Busybox is empty (pass /bin/busybox from Debian's busybox-static for %s)", o.Arch)
		}
		comps = append(comps, c)
	}
	b, err := newBuilder(o)
	if err != nil {
		return nil, err
	}
	out := make([]Image, 0, len(comps))
	for _, c := range comps {
		img, err := b.image(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("component image %s (%s): %w", c.name, o.Arch, err)
		}
		out = append(out, img)
	}
	return out, nil
}

// Describe returns the image a known name stands for, as Build would write
// it (its program compiled, or taken from the cache), without writing an
// archive: a caller that ships the same program under another reference,
// such as the conformance suite's registry.k8s.io/pause, sets Ref and
// writes it itself. o.Names is ignored.
func Describe(ctx context.Context, o Options, name string) (ociimage.Image, error) {
	c, ok := lookup(name)
	if !ok {
		return ociimage.Image{}, fmt.Errorf("component images: unknown image %q (known: %v)", name, Known)
	}
	if _, ok := elfMachines[o.Arch]; !ok {
		return ociimage.Image{}, fmt.Errorf("component images: architecture %q not supported (want amd64 or arm64)", o.Arch)
	}
	if name == "busybox" && len(o.Busybox) == 0 {
		return ociimage.Image{}, fmt.Errorf("component images: busybox: Options.Busybox is empty")
	}
	b, err := newBuilder(o)
	if err != nil {
		return ociimage.Image{}, err
	}
	bins, _, err := b.binaries(ctx, c)
	if err != nil {
		return ociimage.Image{}, fmt.Errorf("component image %s (%s): %w", name, o.Arch, err)
	}
	return b.layout(c, bins)
}

func newBuilder(o Options) (*builder, error) {
	cache := o.CacheDir
	if cache == "" {
		uc, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("component images: no cache directory: %w", err)
		}
		cache = filepath.Join(uc, "ballast")
	}
	b := &builder{opts: o, dir: filepath.Join(cache, "componentimages"), log: o.Log}
	if b.log == nil {
		b.log = io.Discard
	}
	if err := os.MkdirAll(filepath.Join(b.dir, "bin"), 0o755); err != nil {
		return nil, fmt.Errorf("component images: %w", err)
	}
	return b, nil
}
