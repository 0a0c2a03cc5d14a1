package imagebuild

import (
	"bytes"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// Maintainer scripts never run in a ballast image. This file produces, as
// data, the few results of theirs the userland needs.

// alternative is one update-alternatives group: the link and, in order of
// preference, the paths that may provide it. Followers are linked to the
// same choice's companions.
type alternative struct {
	link       string
	candidates []string
	followers  map[string][]string // follower link -> its path per candidate
}

// alternatives are the groups the base userland relies on. nft first for
// iptables: Debian's default, and what the runtime's bundled tools expect.
var alternatives = []alternative{
	{link: "usr/bin/awk", candidates: []string{"usr/bin/mawk", "usr/bin/gawk"}},
	{link: "usr/bin/nawk", candidates: []string{"usr/bin/mawk", "usr/bin/gawk"}},
	{link: "usr/sbin/iptables", candidates: []string{"usr/sbin/iptables-nft", "usr/sbin/iptables-legacy"},
		followers: map[string][]string{
			"usr/sbin/iptables-save":    {"usr/sbin/iptables-nft-save", "usr/sbin/iptables-legacy-save"},
			"usr/sbin/iptables-restore": {"usr/sbin/iptables-nft-restore", "usr/sbin/iptables-legacy-restore"},
		}},
	{link: "usr/sbin/ip6tables", candidates: []string{"usr/sbin/ip6tables-nft", "usr/sbin/ip6tables-legacy"},
		followers: map[string][]string{
			"usr/sbin/ip6tables-save":    {"usr/sbin/ip6tables-nft-save", "usr/sbin/ip6tables-legacy-save"},
			"usr/sbin/ip6tables-restore": {"usr/sbin/ip6tables-nft-restore", "usr/sbin/ip6tables-legacy-restore"},
		}},
	{link: "usr/bin/pager", candidates: []string{"usr/bin/less", "usr/bin/more"}},
}

// applyAlternatives links each group to its first candidate present in t.
// A group with no candidate is left out: its package is not installed.
func applyAlternatives(t *filetree.Tree) error {
	for _, a := range alternatives {
		for i, c := range a.candidates {
			if t.Get(c) == nil {
				continue
			}
			if err := t.AddSymlink(a.link, "/"+c); err != nil {
				return err
			}
			for f, paths := range a.followers {
				if t.Get(paths[i]) != nil {
					if err := t.AddSymlink(f, "/"+paths[i]); err != nil {
						return err
					}
				}
			}
			break
		}
	}
	return nil
}

// caBundlePath is where update-ca-certificates writes the bundle that
// OpenSSL, curl and Go (crypto/x509) read.
const caBundlePath = "etc/ssl/certs/ca-certificates.crt"

// buildCABundle concatenates every certificate ca-certificates ships, in
// path order, as update-ca-certificates does with its default config
// (every certificate enabled).
func buildCABundle(t *filetree.Tree) error {
	var buf bytes.Buffer
	n := 0
	for _, e := range t.Entries() {
		if e.Kind != filetree.File || !strings.HasPrefix(e.Path, "usr/share/ca-certificates/") || path.Ext(e.Path) != ".crt" {
			continue
		}
		rc, err := e.Data.Open()
		if err != nil {
			return fmt.Errorf("CA bundle: %s: %w", e.Path, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("CA bundle: %s: %w", e.Path, err)
		}
		buf.Write(bytes.TrimRight(data, "\n"))
		buf.WriteByte('\n')
		n++
	}
	if n == 0 {
		return nil // ca-certificates is not installed
	}
	return t.AddFile(caBundlePath, 0o644, buf.Bytes())
}
