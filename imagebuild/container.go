package imagebuild

import (
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// The runtime as a container image, as rancher/k3s is one: `docker run
// --privileged --tmpfs /run --tmpfs /var/run IMAGE server` (or agent with
// K3S_URL and K3S_TOKEN). Its root is the image's system tree without what
// only a booted machine uses (kernel, modules, firmware, boot files): the
// same locked Debian userland, the runtime, and the component images.

// ContainerRepo is the repository the image is tagged in.
const ContainerRepo = "ballast/k3s"

// containerSkip are the system tree's parts a container does not use.
var containerSkip = []string{"boot", "usr/lib/modules", "lib/modules", "usr/lib/firmware", "lib/firmware"}

// containerVolumes are rancher/k3s's VOLUMEs: state a container must keep.
var containerVolumes = []string{"/var/lib/kubelet", "/var/lib/rancher/k3s", "/var/lib/cni", "/var/log"}

// ContainerTag is the image's version tag: Docker tags cannot hold '+'
// (k3s spells v1.37.2+k3s1 as v1.37.2-k3s1).
func ContainerTag(version string) string {
	return strings.NewReplacer("+", "-", "/", "-").Replace(version)
}

func skipInContainer(p string) bool {
	for _, s := range containerSkip {
		if p == s || strings.HasPrefix(p, s+"/") {
			return true
		}
	}
	// Device nodes come from the container engine.
	return strings.HasPrefix(p, "dev/")
}

// containerImage turns the system tree into the image: files read into
// memory, hard links as copies, device nodes left out. agent/images holds
// links to the component archives, so that a new container's data volume
// starts with them and the node needs no registry.
func (b *builder) containerImage(t *filetree.Tree, rf *runtimeFiles) (ociimage.Image, error) {
	tag := ContainerTag(Version())
	img := ociimage.Image{
		Ref:          "docker.io/" + ContainerRepo + ":" + tag,
		RepoTags:     []string{ContainerRepo + ":" + tag, ContainerRepo + ":latest"},
		Architecture: b.board.Arch,
		Created:      b.epoch,
		Config: ociimage.Config{
			Entrypoint: []string{"/" + RuntimeBinPath},
			Cmd:        []string{"agent"},
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"CRI_CONFIG_FILE=/var/lib/rancher/k3s/agent/etc/crictl.yaml",
			},
			Volumes: containerVolumes,
			Labels:  map[string]string{"org.opencontainers.image.title": "ballast k3s-compatible runtime", "org.opencontainers.image.version": tag},
		},
	}
	for _, e := range t.Entries() {
		if e.Path == "" || skipInContainer(e.Path) {
			continue
		}
		oe := ociimage.Entry{Path: e.Path, Mode: e.Mode, UID: e.UID, GID: e.GID}
		switch e.Kind {
		case filetree.Dir:
			oe.Type = ociimage.Dir
		case filetree.Symlink:
			oe.Type, oe.Target = ociimage.Symlink, e.Target
		case filetree.File, filetree.Hardlink:
			src := e
			if e.Kind == filetree.Hardlink {
				var err error
				if src, err = t.LinkTarget(e); err != nil {
					return img, err
				}
			}
			data, err := readSource(src)
			if err != nil {
				return img, fmt.Errorf("/%s: %w", e.Path, err)
			}
			oe.Type, oe.Data = ociimage.File, data
		default:
			continue
		}
		img.Entries = append(img.Entries, oe)
	}
	// A booted node's init writes the accounts at every boot; a container
	// has no such init. root only, as in rancher/k3s, and tcpdump's
	// system user, to which it drops its privileges (the init's uid).
	passwd, group := "root:x:0:0:root:/root:/bin/sh\n", "root:x:0:\n"
	if t.Get("usr/bin/tcpdump") != nil {
		passwd += "tcpdump:x:101:101::/nonexistent:/usr/sbin/nologin\n"
		group += "tcpdump:x:101:\n"
	}
	for _, f := range []struct{ path, data string }{
		{"etc/passwd", passwd},
		{"etc/group", group},
	} {
		if t.Get(f.path) == nil {
			img.Entries = append(img.Entries, ociimage.Entry{Path: f.path, Type: ociimage.File, Mode: 0o644, Data: []byte(f.data)})
		}
	}
	if rf != nil && len(rf.images) > 0 {
		dir := "var/lib/rancher/k3s/agent/images"
		img.Entries = append(img.Entries, ociimage.Entry{Path: dir, Type: ociimage.Dir, Mode: 0o755})
		for _, ci := range rf.images {
			img.Entries = append(img.Entries, ociimage.Entry{Path: path.Join(dir, ci.Name+".tar"), Type: ociimage.Symlink, Target: "/" + ImagesDir + "/" + ci.Name + ".tar"})
		}
	}
	return img, nil
}

func readSource(e *filetree.Entry) ([]byte, error) {
	if e.Data == nil {
		return nil, nil
	}
	r, err := e.Data.Open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// writeContainer writes the image archive to out.
func (b *builder) writeContainer(out string, t *filetree.Tree) error {
	if b.runtime == nil {
		return fmt.Errorf("format oci is the runtime as a container image: runtime kind %q has none", b.spec.Runtime.Kind)
	}
	img, err := b.containerImage(t, b.runtime)
	if err != nil {
		return err
	}
	// gzip, not zstd: Debian bookworm's Docker (20.10) loads only gzip layers.
	img.Compression = ociimage.Gzip
	return ociimage.WriteFile(out, img)
}
