package testbed

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry serves the suite's images over the registry API, as the
// private registry of an air-gapped site does: a few conformance tests
// pull with imagePullPolicy Always, which asks a registry even when the
// node has the image. The nodes reach it as a mirror of the registries
// the images name (RegistriesYAML); nothing else is served.
type Registry struct {
	Addr string // host:port it listens on
	srv  *http.Server
}

// Close stops the registry.
func (r *Registry) Close() { r.srv.Close() }

// StartRegistry listens on addr (host:port; port 0 picks one) and serves
// every image of archives (OCI image layouts as tar, each manifest named by
// its io.containerd.image.name annotation) under its repository and tag,
// the registry's host left out: registry.k8s.io/e2e-test-images/agnhost:2.66.1
// is e2e-test-images/agnhost:2.66.1 here.
func StartRegistry(ctx context.Context, addr string, archives []string) (*Registry, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r := &Registry{Addr: ln.Addr().String(), srv: &http.Server{
		Handler:  registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		ErrorLog: log.New(io.Discard, "", 0),
	}}
	go r.srv.Serve(ln)
	for _, a := range archives {
		if err := r.push(ctx, a); err != nil {
			r.Close()
			return nil, fmt.Errorf("registry: %s: %w", a, err)
		}
	}
	return r, nil
}

// push unpacks one archive and writes its images to the registry.
func (r *Registry) push(ctx context.Context, archive string) error {
	dir, err := os.MkdirTemp("", "ballast-registry-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := untar(archive, dir); err != nil {
		return err
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		full := d.Annotations["io.containerd.image.name"]
		if full == "" {
			return fmt.Errorf("manifest %s has no io.containerd.image.name", d.Digest)
		}
		src, err := name.ParseReference(full)
		if err != nil {
			return err
		}
		dst, err := name.ParseReference(r.Addr+"/"+src.Context().RepositoryStr()+":"+src.Identifier(), name.Insecure)
		if err != nil {
			return err
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		if err := remote.Write(dst, img, remote.WithContext(ctx)); err != nil {
			return err
		}
	}
	return nil
}

// RegistriesYAML is k3s's registries.yaml that sends pulls of each
// registry to endpoint (http://host:port).
func RegistriesYAML(endpoint string, registries []string) string {
	var s strings.Builder
	s.WriteString("mirrors:\n")
	for _, reg := range registries {
		fmt.Fprintf(&s, "  %q:\n    endpoint: [%q]\n", reg, endpoint)
	}
	return s.String()
}

// RegistriesOf are the registry hosts refs name (docker.io for a bare
// name), each once, in order.
func RegistriesOf(refs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range refs {
		ref, err := name.ParseReference(r)
		if err != nil {
			continue
		}
		h := ref.Context().RegistryStr()
		if h == name.DefaultRegistry {
			h = "docker.io"
		}
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			w, err := os.Create(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(w, tr)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}
