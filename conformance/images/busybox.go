package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// busybox is the Docker library's busybox, which upstream's image is: the
// applets in /bin, sh among them (ash), and CMD ["sh"]. The binary is
// compiled here from busybox's own release (see realSupply.busybox for
// why not Debian's busybox-static).
func (b *builder) busybox(ctx context.Context) (ociimage.Image, string, error) {
	bb, from, err := b.src.busybox(ctx)
	if err != nil {
		return ociimage.Image{}, "", err
	}
	applets, err := busyboxApplets(bb)
	if err != nil {
		return ociimage.Image{}, "", fmt.Errorf("busybox: %w", err)
	}
	t := filetree.New(created)
	if err := addBase(t, busyboxPasswd, busyboxGroup); err != nil {
		return ociimage.Image{}, "", err
	}
	if err := addProgram(t, "bin/busybox", bb); err != nil {
		return ociimage.Image{}, "", err
	}
	if err := addApplets(t, "bin", applets); err != nil {
		return ociimage.Image{}, "", err
	}
	for _, d := range []string{"home", "var/www", "var/spool/mail"} {
		if err := t.AddDir(d, 0o755); err != nil {
			return ociimage.Image{}, "", err
		}
	}
	img, err := image(t, ociimage.Config{Cmd: []string{"sh"}})
	return img, from, err
}

// addShell gives a tree with Debian's merged /usr the busybox userland
// Alpine has: busybox in usr/bin, its ash as sh, and every other applet
// that no installed package provides.
func addShell(t *filetree.Tree, bb []byte) error {
	applets, err := busyboxApplets(bb)
	if err != nil {
		return fmt.Errorf("busybox: %w", err)
	}
	if t.Get("usr/bin/sh") != nil {
		return errors.New("a package installs /usr/bin/sh; the image's sh must be busybox's ash, as Alpine's is")
	}
	if err := addProgram(t, "usr/bin/busybox", bb); err != nil {
		return err
	}
	return addApplets(t, "usr/bin", applets)
}

// addApplets links each applet into dir as a symlink to busybox, the
// ones a file in dir or usr/sbin (or sbin) already provides excepted.
func addApplets(t *filetree.Tree, dir string, applets []string) error {
	for _, a := range applets {
		if a == "busybox" || t.Get(dir+"/"+a) != nil || t.Get("usr/sbin/"+a) != nil || t.Get("sbin/"+a) != nil {
			continue
		}
		if err := t.AddSymlink(dir+"/"+a, "busybox"); err != nil {
			return err
		}
	}
	return nil
}

// busyboxApplets reads the names of the applets compiled into a busybox
// binary, of any architecture: its applet_names table, the names in
// sorted order, each ended by a NUL, the table by an empty name. The table
// starts with "[" in every busybox that has test's [ applet, as Debian's
// do; other strings that start so are told apart by validApplets.
func busyboxApplets(bin []byte) ([]string, error) {
	marker := []byte("[\x00")
	for off := 0; ; {
		i := bytes.Index(bin[off:], marker)
		if i < 0 {
			return nil, errors.New("no applet table in the binary (is it busybox?)")
		}
		start := off + i
		off = start + 1
		var names []string
		for p := start; p < len(bin); {
			n := bytes.IndexByte(bin[p:], 0)
			if n <= 0 {
				break
			}
			names = append(names, string(bin[p:p+n]))
			p += n + 1
		}
		if validApplets(names) {
			return names, nil
		}
	}
}

// validApplets tells an applet table from other strings that happen to
// start with "[": many names, sorted, each a plain file name, sh among them.
func validApplets(names []string) bool {
	if len(names) < 20 || !slices.IsSorted(names) || !slices.Contains(names, "sh") {
		return false
	}
	for _, n := range names {
		if len(n) > 32 {
			return false
		}
		for _, r := range n {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '[' || r == ']') {
				return false
			}
		}
	}
	return true
}
