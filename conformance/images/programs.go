package images

import (
	"context"
	"io/fs"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// The images that are one Go program each.
var (
	// sampleAPIServer is k8s.io/sample-apiserver at the version the
	// conformance module's replace pins (the staging module of the
	// suite's Kubernetes), which upstream's Makefile builds from its
	// repository's tag.
	sampleAPIServer = program{name: "sample-apiserver", module: "conformance", pkg: "k8s.io/sample-apiserver", provider: "k8s.io/sample-apiserver"}
	// nnp is test/images/nonewprivs: it prints its effective uid.
	nnp = program{name: "nnp", module: "conformance", pkg: "k8s.io/kubernetes/test/images/nonewprivs", provider: "k8s.io/kubernetes"}
	// etcd is the etcd the runtime embeds, from the runtime module: the
	// suite's etcd image is only the store of the aggregator test's
	// sample API server, and building the suite's own version (3.7.0)
	// would need it in the conformance module's go.mod.
	etcd = program{name: "etcd", module: "runtime", pkg: "go.etcd.io/etcd/server/v3", provider: "go.etcd.io/etcd/server/v3"}
)

// sampleAPIServer is test/images/sample-apiserver: the program at
// /sample-apiserver, its ENTRYPOINT, on Alpine (whose accounts it gets).
func (b *builder) sampleAPIServer(ctx context.Context) (ociimage.Image, string, error) {
	return b.oneProgram(ctx, sampleAPIServer, "sample-apiserver", ociimage.Config{Entrypoint: []string{"/sample-apiserver"}})
}

// etcd is registry.k8s.io/etcd as the aggregator test runs it: the test
// gives the command, /usr/local/bin/etcd; it keeps its data in its working
// directory, /, as root.
func (b *builder) etcd(ctx context.Context) (ociimage.Image, string, error) {
	return b.oneProgram(ctx, etcd, "usr/local/bin/etcd", ociimage.Config{Cmd: []string{"/usr/local/bin/etcd"}, WorkingDir: "/"})
}

// nonewprivs is test/images/nonewprivs: nnp in /usr/local/bin, setuid and
// setgid root (`chmod +s`), CMD ["nnp"]. Run as uid 1000, it must print
// 1000 where no_new_privs is set and 0 where it is not.
func (b *builder) nonewprivs(ctx context.Context) (ociimage.Image, string, error) {
	img, from, err := b.oneProgram(ctx, nnp, "usr/local/bin/nnp", ociimage.Config{Cmd: []string{"nnp"}})
	for i := range img.Entries {
		if img.Entries[i].Path == "usr/local/bin/nnp" {
			img.Entries[i].Mode = 0o755 | fs.ModeSetuid | fs.ModeSetgid
		}
	}
	return img, from, err
}

// oneProgram is an image of one Go program at p, with Alpine's accounts.
func (b *builder) oneProgram(ctx context.Context, prog program, p string, cfg ociimage.Config) (ociimage.Image, string, error) {
	bin, from, err := b.src.program(ctx, prog)
	if err != nil {
		return ociimage.Image{}, "", err
	}
	t := filetree.New(created)
	if err := addBase(t, alpinePasswd, alpineGroup); err != nil {
		return ociimage.Image{}, "", err
	}
	if err := addProgram(t, p, bin); err != nil {
		return ociimage.Image{}, "", err
	}
	img, err := image(t, cfg)
	return img, prog.pkg + " from " + from, err
}

// pause is ballast's own pause (images/pause, built by componentimages)
// under the suite's reference: upstream's build/pause does the same (one
// static program at /pause, ENTRYPOINT ["/pause"], USER 65535:65535).
func (b *builder) pause(ctx context.Context) (ociimage.Image, string, error) {
	img, err := b.src.pause(ctx)
	return img, "ballast's images/pause (componentimages)", err
}

// glibcDNSPackages are debian:bookworm-slim's userland that the DNS tests'
// probe scripts use (sh, seq, test, sleep: dash and coreutils; getent:
// libc-bin), plus what upstream's Dockerfile installs, dnsutils.
var glibcDNSPackages = []string{
	"base-files", "base-passwd", "bash", "bind9-dnsutils", "coreutils", "dash",
	"findutils", "grep", "hostname", "libc-bin", "netbase", "sed",
}

// glibcDNSTesting is test/images/glibc-dns-testing: Debian with dig, so
// that the DNS tests resolve names through glibc as well as through
// agnhost's resolver; CMD ["bash"] as Debian's image has. Upstream's
// /coredns (1.5.0) is left out: no [Conformance] test runs it.
func (b *builder) glibcDNSTesting(ctx context.Context) (ociimage.Image, string, error) {
	in, err := b.src.packages(ctx, glibcDNSPackages, scriptOnly)
	if err != nil {
		return ociimage.Image{}, "", err
	}
	t := in.tree
	// What base-passwd's, passwd's and libc-bin's maintainer scripts
	// write.
	passwd, err := file(t, "usr/share/base-passwd/passwd.master")
	if err != nil {
		return ociimage.Image{}, "", err
	}
	group, err := file(t, "usr/share/base-passwd/group.master")
	if err != nil {
		return ociimage.Image{}, "", err
	}
	if err := addBase(t, shadowed(passwd), shadowed(group)); err != nil {
		return ociimage.Image{}, "", err
	}
	if err := t.AddFile("etc/nsswitch.conf", 0o644, []byte(nsswitch)); err != nil {
		return ociimage.Image{}, "", err
	}
	img, err := image(t, ociimage.Config{Cmd: []string{"bash"}})
	return img, "Debian " + in.versions("bind9-dnsutils", "dash", "coreutils", "libc-bin"), err
}

// shadowed turns base-passwd's master file into the /etc/passwd or
// /etc/group Debian's images have, passwords in the shadow files: "x" in
// the second field of each entry.
func shadowed(master []byte) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(master), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 {
			line = f[0] + ":x:" + f[2]
		}
		b.WriteString(line)
	}
	return b.String()
}
