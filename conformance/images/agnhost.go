package images

import (
	"context"
	"fmt"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
	imageutils "k8s.io/kubernetes/test/utils/image"
)

// agnhostProgram is upstream's test/images/agnhost, stamped with the
// version of the image the suite asks for, as upstream's Makefile does.
func agnhostProgram() program {
	return program{
		name:     "agnhost",
		module:   "conformance",
		pkg:      "k8s.io/kubernetes/test/images/agnhost",
		provider: "k8s.io/kubernetes",
		xflags:   "-X main.Version=" + ociimage.Tag(ref(imageutils.Agnhost)),
	}
}

// agnhostPackages are what agnhost's Dockerfile adds to Alpine, by their
// Debian names: dig and nslookup (bind-tools: bind9-dnsutils), curl,
// `nc -v -z` (netcat-openbsd), ip and ss (iproute2), iperf (2, as Alpine's),
// bash, ipcs (util-linux-misc: util-linux), socat. The rest is Alpine's
// base: busybox (compiled here, as the busybox image's) for its sh and
// applets (wget, hostname, ps, sleep, ...), libc-bin for musl's getent
// (the DNS tests' /etc/hosts probe runs `getent hosts` in agnhost),
// netbase for /etc/services and /etc/protocols.
var agnhostPackages = []string{
	"bash", "bind9-dnsutils", "curl", "iperf", "iproute2",
	"libc-bin", "netbase", "netcat-openbsd", "socat", "util-linux",
}

// alternatives are the links Debian's maintainer scripts make with
// update-alternatives, which an image build does not run.
var alternatives = map[string]string{
	"usr/bin/nc":     "nc.openbsd",
	"usr/bin/netcat": "nc.openbsd",
}

// agnhost is test/images/agnhost/Dockerfile on Debian: the program at
// /agnhost (and /agnhost-2 for the entrypoint tests), porter's certificate
// and key, netexec's /uploads, the user-defined-in-image user (uid 1000) in
// group-defined-in-image (gid 50000) for the supplemental-groups tests,
// ENTRYPOINT ["/agnhost"], CMD ["pause"], root.
//
// Left out: /coredns (CoreDNS 1.6.2, only for "should support configurable
// pod resolv.conf", not a [Conformance] test) and fakeregistryserver's
// /var/registry (upstream images copied from a registry at build time, for
// image-pull tests, none of them [Conformance]).
func (b *builder) agnhost(ctx context.Context) (ociimage.Image, string, error) {
	t, from, err := b.agnhostTree(ctx)
	if err != nil {
		return ociimage.Image{}, "", err
	}
	img, err := image(t, ociimage.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}})
	return img, from, err
}

func (b *builder) agnhostTree(ctx context.Context) (*filetree.Tree, string, error) {
	bin, from, err := b.src.program(ctx, agnhostProgram())
	if err != nil {
		return nil, "", err
	}
	in, err := b.src.packages(ctx, agnhostPackages, scriptOnly)
	if err != nil {
		return nil, "", err
	}
	bb, bbFrom, err := b.src.busybox(ctx)
	if err != nil {
		return nil, "", err
	}
	t := in.tree
	passwd := alpinePasswd + "user-defined-in-image:x:1000:1000:Linux User,,,:/home/user-defined-in-image:/bin/sh\n"
	group := alpineGroup + "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"
	if err := addBase(t, passwd, group); err != nil {
		return nil, "", err
	}
	if err := t.Add(filetree.Entry{Path: "home/user-defined-in-image", Kind: filetree.Dir, Mode: 0o755, UID: 1000, GID: 1000}); err != nil {
		return nil, "", err
	}
	if err := t.AddFile("etc/nsswitch.conf", 0o644, []byte(nsswitch)); err != nil {
		return nil, "", err
	}
	for p, target := range alternatives {
		if err := t.AddSymlink(p, target); err != nil {
			return nil, "", err
		}
	}
	// sh is busybox's ash, as on Alpine; bash is there for what runs it
	// by name.
	if err := addShell(t, bb); err != nil {
		return nil, "", err
	}
	// The Dockerfile links iperf into /usr/local/bin.
	if err := t.AddSymlink("usr/local/bin/iperf", "/usr/bin/iperf"); err != nil {
		return nil, "", err
	}
	if err := addProgram(t, "agnhost", bin); err != nil {
		return nil, "", err
	}
	if err := t.AddSymlink("agnhost-2", "agnhost"); err != nil {
		return nil, "", err
	}
	if err := t.AddDir("uploads", 0o755); err != nil {
		return nil, "", err
	}
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		data, err := b.src.upstream(ctx, "test/images/agnhost/porter/"+f)
		if err != nil {
			return nil, "", err
		}
		if err := t.AddFile(f, 0o644, data); err != nil {
			return nil, "", err
		}
	}
	return t, "agnhost from " + from + "; Debian " + in.versions(agnhostPackages...) + "; " + bbFrom, nil
}

// kitten and nautilus are upstream's update-demo images: agnhost's
// test-webserver serving a picture and data.json naming it, from / (the
// Dockerfiles copy them into agnhost's working directory). No test runs
// anything but the web server in them or reads more than those files, so
// they carry agnhost's program without its Debian userland.
func (b *builder) kitten(ctx context.Context) (ociimage.Image, string, error) {
	return b.webserver(ctx, "kitten")
}

func (b *builder) nautilus(ctx context.Context) (ociimage.Image, string, error) {
	return b.webserver(ctx, "nautilus")
}

func (b *builder) webserver(ctx context.Context, name string) (ociimage.Image, string, error) {
	bin, from, err := b.src.program(ctx, agnhostProgram())
	if err != nil {
		return ociimage.Image{}, "", err
	}
	t := filetree.New(created)
	if err := addBase(t, alpinePasswd, alpineGroup); err != nil {
		return ociimage.Image{}, "", err
	}
	if err := addProgram(t, "agnhost", bin); err != nil {
		return ociimage.Image{}, "", err
	}
	for _, f := range []string{name + ".jpg", "data.json"} {
		data, err := b.src.upstream(ctx, "test/images/"+name+"/html/"+f)
		if err != nil {
			return ociimage.Image{}, "", err
		}
		if err := t.AddFile(f, 0o644, data); err != nil {
			return ociimage.Image{}, "", err
		}
	}
	img, err := image(t, ociimage.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"test-webserver"}})
	return img, fmt.Sprintf("agnhost from %s; test/images/%s/html", from, name), err
}
