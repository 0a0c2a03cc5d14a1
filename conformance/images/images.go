// Package images builds the container images the upstream Kubernetes
// [Conformance] tests run, for nodes that reach no registry: every image is
// made here, from Go source pinned by the conformance and runtime modules
// and from Debian packages, as an OCI archive carrying the exact reference
// the suite asks for (test/utils/image of the pinned k8s.io/kubernetes), so
// that k3s imports it from agent/images and a pod finds it without a pull
// (a pod that asks for imagePullPolicy: Always still goes to the registry).
//
// Upstream builds most of them on Alpine; here the Go programs are the same
// (agnhost, sample-apiserver, nonewprivs), and what the tests run inside
// the images (curl, nc, dig, getent, ip, ss, socat, ipcs, bash, nginx)
// comes from Debian trixie with its shared libraries. busybox, the sh and
// applets of the busybox, agnhost and nginx images, is compiled here from
// busybox's own release, the upstream tarball Debian's source package
// ships: Debian's patched ash behaves differently in a way tests see
// (busyboxbuild.go says how).
//
// Archives are cached under Options.CacheDir, named by a hash of
// everything in them, so a second Build only reassembles and hashes:
//
//	conformanceimages/bin/<program>-<arch>-<key>   compiled Go programs
//	conformanceimages/bin/busybox-<arch>-<key>     busybox, compiled from source
//	conformanceimages/<name>-<arch>-<key>.tar      OCI archives
package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/ballast-os/ballast/imagebuild/componentimages"
	"github.com/ballast-os/ballast/imagebuild/debian"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
	imageutils "k8s.io/kubernetes/test/utils/image"
)

// Image is one built archive.
type Image struct {
	Name string // one of Names: "agnhost", "busybox", ...
	Ref  string // what the suite asks for: registry.k8s.io/e2e-test-images/agnhost:2.66.1
	Path string // the OCI archive (uncompressed tar) in the cache; callers copy it
	Size int64  // of the archive
	From string // what it is built from, in one line
}

// Options say what to build and where to keep it.
type Options struct {
	// Arch is the Debian/Go architecture, "amd64" or "arm64"; "" means
	// amd64. busybox (in the busybox, agnhost and nginx images) is
	// compiled with this machine's gcc, so those images are built only
	// for this machine's architecture.
	Arch string
	// SourceDir is the ballast checkout: Go programs are compiled in its
	// conformance/ module (agnhost, sample-apiserver, nonewprivs) and its
	// runtime/ module (etcd, the one the runtime embeds). Required.
	SourceDir string
	// CacheDir keeps compiled programs, archives and Debian packages
	// between builds; "" means $XDG_CACHE_HOME/ballast.
	CacheDir string
	// Names says which images to build; nil means all of Names.
	Names []string
	// Debian is the archive packages come from; nil opens Debian's
	// default (trixie, deb.debian.org) for Arch under CacheDir.
	Debian *debian.Archive
	// Lock pins Debian packages (nil: the newest in the archive's index).
	Lock *debian.Lock
	// Offline builds from the caches alone: Debian's index and packages,
	// Go's module cache (it applies when Debian is nil and to go builds).
	Offline bool
	// Log gets one line per image built or reused, and Debian's download
	// progress when Debian is nil; nil is quiet.
	Log io.Writer
}

// recipe says how one image is made and which reference it carries.
type recipe struct {
	name string
	id   imageutils.ImageID
	// layout assembles the image's files and config (Ref, Architecture
	// and Created are set by Build) and says what it was built from.
	layout func(b *builder, ctx context.Context) (ociimage.Image, string, error)
}

// recipes are every image a [Conformance] test of the pinned suite runs,
// named after the folder of test/images that upstream builds it from.
var recipes = []recipe{
	{"agnhost", imageutils.Agnhost, (*builder).agnhost},
	// The Deployment, DaemonSet, StatefulSet, pod and kubectl diff tests
	// switch between this tag and the current one: they compare
	// references, not programs, so it is the same agnhost.
	{"agnhost-prev", imageutils.AgnhostPrev, (*builder).agnhost},
	{"busybox", imageutils.BusyBox, (*builder).busybox},
	// The sample API server's deployment in the aggregator test runs it.
	{"etcd", imageutils.Etcd, (*builder).etcd},
	{"glibc-dns-testing", imageutils.GlibcDnsTesting, (*builder).glibcDNSTesting},
	// The image-volume test mounts it; kubectl's update demo runs nautilus.
	{"kitten", imageutils.Kitten, (*builder).kitten},
	{"nautilus", imageutils.Nautilus, (*builder).nautilus},
	{"nginx", imageutils.Nginx, (*builder).nginx},
	// No [Conformance] test of v1.37.2 runs it (the e2e manifests may
	// name it); it costs one more archive of nginx's files.
	{"nginx-new", imageutils.NginxNew, (*builder).nginx},
	{"nonewprivs", imageutils.Nonewprivs, (*builder).nonewprivs},
	{"pause", imageutils.Pause, (*builder).pause},
	{"sample-apiserver", imageutils.APIServer, (*builder).sampleAPIServer},
}

// Names are the images Build makes, in the order it makes them.
var Names = func() []string {
	var n []string
	for _, r := range recipes {
		n = append(n, r.name)
	}
	return n
}()

// Ref returns the reference of a known image name, as the pinned suite
// spells it.
func Ref(name string) (string, bool) {
	for _, r := range recipes {
		if r.name == name {
			return ref(r.id), true
		}
	}
	return "", false
}

// ref is the reference the suite's manifest gives id, before any registry
// mapping (KUBE_TEST_REPO_LIST) that the e2e binary may be told to apply.
func ref(id imageutils.ImageID) string {
	c := imageutils.GetOriginalImageConfigs()[id]
	return c.GetE2EImage()
}

// created is the creation time of every image and the mtime of every file
// in it: fixed, so archives stay cached from build to build.
var created = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Build makes the archives o.Names asks for, reusing cached ones, and
// returns them in the order asked.
func Build(ctx context.Context, o Options) ([]Image, error) {
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	if o.Arch != "amd64" && o.Arch != "arm64" {
		return nil, fmt.Errorf("conformance images: architecture %q not supported (want amd64 or arm64)", o.Arch)
	}
	if o.SourceDir == "" {
		return nil, errors.New("conformance images: Options.SourceDir (the ballast checkout) is empty")
	}
	names := o.Names
	if names == nil {
		names = Names
	}
	var todo []recipe
	for i, n := range names {
		j := slices.IndexFunc(recipes, func(r recipe) bool { return r.name == n })
		if j < 0 {
			return nil, fmt.Errorf("conformance images: unknown image %q (known: %v)", n, Names)
		}
		if slices.Contains(names[:i], n) {
			return nil, fmt.Errorf("conformance images: %q asked for twice", n)
		}
		todo = append(todo, recipes[j])
	}
	if o.CacheDir == "" {
		uc, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("conformance images: no cache directory: %w", err)
		}
		o.CacheDir = filepath.Join(uc, "ballast")
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	s, err := newSupply(o)
	if err != nil {
		return nil, err
	}
	b := &builder{arch: o.Arch, src: s}
	dir := filepath.Join(o.CacheDir, "conformanceimages")
	out := make([]Image, 0, len(todo))
	for _, r := range todo {
		img, err := b.write(ctx, r, dir, o.Log)
		if err != nil {
			return nil, fmt.Errorf("conformance image %s (%s): %w", r.name, o.Arch, err)
		}
		out = append(out, img)
	}
	return out, nil
}

// builder assembles images from what its supply gives it.
type builder struct {
	arch string
	src  supply
}

// image assembles one recipe's image, complete but not written.
func (b *builder) image(ctx context.Context, r recipe) (ociimage.Image, string, error) {
	img, from, err := r.layout(b, ctx)
	if err != nil {
		return ociimage.Image{}, "", err
	}
	img.Ref = ref(r.id)
	img.Architecture = b.arch
	img.Created = created
	// The archives are copied onto every node: zstd makes them about 15%
	// smaller than gzip, and containerd unpacks it faster.
	img.Compression = ociimage.Zstd
	return img, from, img.Validate()
}

// write assembles r's image and writes its archive under dir unless an
// archive of the same contents is there already.
func (b *builder) write(ctx context.Context, r recipe, dir string, log io.Writer) (Image, error) {
	start := time.Now()
	img, from, err := b.image(ctx, r)
	if err != nil {
		return Image{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Image{}, err
	}
	name := fmt.Sprintf("%s-%s-%s.tar", r.name, b.arch, componentimages.ImageKey(img))
	p := filepath.Join(dir, name)
	what := "reused"
	if _, err := os.Stat(p); err != nil {
		if err := ociimage.WriteFile(p, img); err != nil {
			return Image{}, err
		}
		componentimages.Prune(dir, r.name+"-"+b.arch+"-", ".tar", name)
		what = "built in " + time.Since(start).Round(100*time.Millisecond).String()
	}
	st, err := os.Stat(p)
	if err != nil {
		return Image{}, err
	}
	fmt.Fprintf(log, "image %s (%s): %s, %s\n", img.Ref, b.arch, what, humanize.IBytes(uint64(st.Size())))
	return Image{Name: r.name, Ref: img.Ref, Path: p, Size: st.Size(), From: from}, nil
}
