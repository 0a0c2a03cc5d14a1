package spec

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/componentimages"
)

var (
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// k3sVersionRE is a k3s release tag: v1.34.3+k3s1, v1.33.0-rc1+k3s1.
	k3sVersionRE = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?\+k3s\d+$`)
)

// validateRuntime checks the runtime section; add reports a problem at a
// key's position.
func (s *Spec) validateRuntime(add func(key, format string, args ...any)) {
	r := &s.Runtime
	k3sOnly := func() {
		for key, v := range map[string]string{"version": r.Version, "sha256": r.SHA256, "file": r.File, "url": r.URL} {
			if v != "" {
				add("runtime."+key, "only for runtime kind k3s (this spec's kind is %s)", r.Kind)
			}
		}
	}
	switch r.Kind {
	case RuntimeBallast:
		k3sOnly()
	case RuntimeNone:
		k3sOnly()
		if len(r.Images) > 0 {
			add("runtime.images", "runtime kind none runs no pods: remove the images or choose kind ballast or k3s")
		}
	case RuntimeK3s:
		if r.SHA256 != "" && !sha256RE.MatchString(r.SHA256) {
			add("runtime.sha256", "%q is not a SHA-256 (64 lowercase hex digits)", r.SHA256)
		}
		if r.Version != "" && !k3sVersionRE.MatchString(r.Version) {
			add("runtime.version", "%q is not a k3s release version (e.g. v1.34.3+k3s1)", r.Version)
		}
		switch {
		case r.File != "":
			if r.URL != "" {
				add("runtime.url", "give either file or url, not both")
			}
		case r.Version == "":
			add("runtime.kind", "runtime k3s needs a version and sha256 (a download) or a file (a local binary)")
		case r.SHA256 == "":
			add("runtime.version", "downloading k3s %s needs its sha256 (from the release's sha256sum-<arch>.txt)", r.Version)
		}
		if r.URL != "" && !strings.HasPrefix(r.URL, "https://") && !strings.HasPrefix(r.URL, "http://") {
			add("runtime.url", "%q is not an http(s) URL", r.URL)
		}
	default:
		add("runtime.kind", "unknown runtime %q (known: ballast, k3s, none)", r.Kind)
	}
	seen := map[string]int{}
	for i, img := range r.Images {
		key := fmt.Sprintf("runtime.images[%d]", i)
		name := img
		if IsImageFile(img) {
			if !strings.HasSuffix(img, ".tar") {
				add(key, "%q: an image archive must be a .tar (OCI image layout or docker save)", img)
				continue
			}
			name = strings.TrimSuffix(filepath.Base(img), ".tar")
		} else if !slices.Contains(componentimages.Known, img) {
			add(key, "unknown image %q (known: %s; or the path of a .tar archive)", img, strings.Join(componentimages.Known, ", "))
			continue
		}
		if j, ok := seen[name]; ok {
			add(key, "image %q given twice (also runtime.images[%d])", name, j)
			continue
		}
		seen[name] = i
		if r.Kind == RuntimeBallast && !IsImageFile(img) && slices.Contains(componentimages.Default, img) {
			add(key, "image %q is already in every ballast runtime image", img)
		} else if r.Kind == RuntimeBallast && slices.Contains(componentimages.Default, name) {
			add(key, "%q would replace the default image %s.tar: rename the archive", img, name)
		}
	}
}
