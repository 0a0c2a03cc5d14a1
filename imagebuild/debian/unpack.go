package debian

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// manifestVersion changes whenever the unpacked layout or manifest format
// does; an unpacked directory with another version is unpacked again.
const manifestVersion = 1

// ManifestEntry is one entry of a .deb's data.tar, as recorded when it was
// unpacked.
type ManifestEntry struct {
	// Path is the cleaned path inside the package ("usr/bin/bash").
	Path string        `json:"path"`
	Kind filetree.Kind `json:"kind"`
	// Mode holds permission, setuid, setgid and sticky bits.
	Mode fs.FileMode `json:"mode"`
	UID  int         `json:"uid"`
	GID  int         `json:"gid"`
	// Target is a symlink's target as written, or the cleaned path of a
	// hard link's file.
	Target string `json:"target,omitempty"`
	// Size of a regular file (or of a hard link's file).
	Size  int64  `json:"size,omitempty"`
	Major uint32 `json:"major,omitempty"`
	Minor uint32 `json:"minor,omitempty"`
}

type manifest struct {
	Version int             `json:"version"`
	Package string          `json:"package"`
	SHA256  string          `json:"sha256"`
	Entries []ManifestEntry `json:"entries"`
}

// Unpacked is a .deb unpacked in the cache.
type Unpacked struct {
	Package Package
	// Dir is the cache directory: Dir/root holds regular files at their
	// package paths, Dir/control the control.tar members.
	Dir     string
	Entries []ManifestEntry
}

// HostPath is where the regular file at package path p lies on the host.
func (u *Unpacked) HostPath(p string) string {
	return filepath.Join(u.Dir, "root", filepath.FromSlash(p))
}

// Control returns a control.tar member ("control", "postinst", "conffiles").
func (u *Unpacked) Control(name string) ([]byte, error) {
	if name != path.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("debian: bad control member name %q", name)
	}
	return os.ReadFile(filepath.Join(u.Dir, "control", name))
}

func (a *Archive) debPath(p *Package) string {
	return filepath.Join(a.root(), "debs", p.SHA256+".deb")
}

func (a *Archive) unpackedDir(p *Package) string {
	return filepath.Join(a.root(), "unpacked", p.SHA256)
}

// Unpack returns pkg's unpacked files, downloading and unpacking the .deb
// only when the cache does not already hold them.
func (a *Archive) Unpack(ctx context.Context, pkg Package) (*Unpacked, error) {
	if !isHexSHA256(pkg.SHA256) {
		return nil, fmt.Errorf("debian: package %s: bad sha256 %q", pkg.Name, pkg.SHA256)
	}
	dir := a.unpackedDir(&pkg)
	if u, err := readManifest(dir, pkg); err == nil {
		return u, nil
	}
	deb := a.debPath(&pkg)
	if _, err := os.Stat(deb); err != nil {
		if err := a.fetchDeb(ctx, &pkg); err != nil {
			return nil, err
		}
	}
	if err := a.unpackDeb(&pkg, deb, dir); err != nil {
		return nil, err
	}
	return readManifest(dir, pkg)
}

func readManifest(dir string, pkg Package) (*Unpacked, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("debian: %s: %w", dir, err)
	}
	if m.Version != manifestVersion || m.SHA256 != pkg.SHA256 {
		return nil, fmt.Errorf("debian: %s: stale manifest", dir)
	}
	return &Unpacked{Package: pkg, Dir: dir, Entries: m.Entries}, nil
}

// fetchDeb downloads pkg's .deb into the cache, checking size and hash
// before it gets its final name.
func (a *Archive) fetchDeb(ctx context.Context, pkg *Package) error {
	if a.cfg.Offline {
		return fmt.Errorf("debian: package %s %s: %s is not in the cache (offline); run without --offline to fetch it",
			pkg.Name, pkg.Version, path.Base(pkg.Filename))
	}
	u := a.cfg.Mirror + "/" + pkg.Filename
	if err := a.fetchFile(ctx, u, pkg.Name+" "+pkg.Version, a.debPath(pkg), pkg.Size, pkg.SHA256); err != nil {
		return fmt.Errorf("debian: package %s %s: %w", pkg.Name, pkg.Version, err)
	}
	return nil
}

type countWriter struct{ n *int64 }

func (c countWriter) Write(p []byte) (int, error) { *c.n += int64(len(p)); return len(p), nil }

// unpackDeb unpacks deb into dir through a temporary directory and a
// rename. It hashes the .deb as it reads it: a cached file that no longer
// matches is removed and reported.
func (a *Archive) unpackDeb(pkg *Package, deb, dir string) error {
	f, err := os.Open(deb)
	if err != nil {
		return fmt.Errorf("debian: package %s: %w", pkg.Name, err)
	}
	defer f.Close()
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-"+pkg.SHA256+"-")
	if err != nil {
		return fmt.Errorf("debian: package %s: %w", pkg.Name, err)
	}
	defer os.RemoveAll(tmp) // no-op once renamed
	h := sha256.New()
	tee := io.TeeReader(f, h)
	entries, err := unpackTo(tee, tmp)
	// Hash whatever the ar reader did not need, also after an error, so a
	// malformed .deb is told apart from a corrupted download.
	if _, cerr := io.Copy(io.Discard, tee); err == nil {
		err = cerr
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != pkg.SHA256 {
		os.Remove(deb)
		return fmt.Errorf("debian: package %s %s: cached %s: %w: got sha256 %s, want %s (removed; it will be fetched again)",
			pkg.Name, pkg.Version, deb, ErrHashMismatch, got, pkg.SHA256)
	}
	if err != nil {
		return fmt.Errorf("debian: package %s %s: %s: %w", pkg.Name, pkg.Version, deb, err)
	}
	m := manifest{Version: manifestVersion, Package: pkg.Name + " " + pkg.Version, SHA256: pkg.SHA256, Entries: entries}
	b, err := json.Marshal(&m)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), b, 0o644); err != nil {
		return fmt.Errorf("debian: package %s: %w", pkg.Name, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "manifest.json")); serr == nil {
			return nil // another build unpacked it first
		}
		// A stale directory from an older manifest version: replace it.
		if rerr := os.RemoveAll(dir); rerr != nil {
			return fmt.Errorf("debian: package %s: %w", pkg.Name, rerr)
		}
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("debian: package %s: %w", pkg.Name, err)
		}
	}
	return nil
}

// unpackTo reads a .deb from r and writes control members to dir/control
// and regular files to dir/root, returning the data.tar manifest.
func unpackTo(r io.Reader, dir string) ([]ManifestEntry, error) {
	var entries []ManifestEntry
	root := filepath.Join(dir, "root")
	ctl := filepath.Join(dir, "control")
	for _, d := range []string{root, ctl} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	control := func(tr io.Reader) error {
		t := tar.NewReader(tr)
		for {
			h, err := t.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			name, err := filetree.Clean(h.Name)
			if err != nil {
				return err
			}
			if err := notSparse(h); err != nil {
				return err
			}
			if h.Typeflag != tar.TypeReg || name == "" || path.Dir(name) != "." {
				continue
			}
			if err := writeHostFile(filepath.Join(ctl, name), t); err != nil {
				return err
			}
		}
	}
	data := func(tr io.Reader) error {
		var err error
		entries, err = readDataTar(tr, root)
		return err
	}
	if err := walkDeb(r, control, data); err != nil {
		return nil, err
	}
	return entries, nil
}

// readDataTar writes regular files under root and returns every entry.
func readDataTar(r io.Reader, root string) ([]ManifestEntry, error) {
	var entries []ManifestEntry
	files := map[string]int64{} // regular files seen so far, for hard links
	t := tar.NewReader(r)
	for {
		h, err := t.Next()
		if err == io.EOF {
			return entries, nil
		}
		if err != nil {
			return nil, err
		}
		p, err := filetree.Clean(h.Name)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", h.Name, err)
		}
		if p == "" {
			continue // "./": the root's metadata belongs to the image, not a package
		}
		if err := notSparse(h); err != nil {
			return nil, err
		}
		e := ManifestEntry{Path: p, Mode: tarMode(h.Mode), UID: h.Uid, GID: h.Gid}
		switch h.Typeflag {
		case tar.TypeDir:
			e.Kind = filetree.Dir
			if err := os.MkdirAll(filepath.Join(root, filepath.FromSlash(p)), 0o755); err != nil {
				return nil, fmt.Errorf("entry %s: %w", p, err)
			}
		case tar.TypeReg:
			e.Kind, e.Size = filetree.File, h.Size
			hp := filepath.Join(root, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
				return nil, fmt.Errorf("entry %s: %w", p, err)
			}
			if err := writeHostFile(hp, t); err != nil {
				return nil, fmt.Errorf("entry %s: %w", p, err)
			}
			files[p] = h.Size
		case tar.TypeSymlink:
			e.Kind, e.Target = filetree.Symlink, h.Linkname
			if h.Linkname == "" {
				return nil, fmt.Errorf("entry %s: symlink without a target", p)
			}
		case tar.TypeLink:
			tgt, err := filetree.Clean(h.Linkname)
			if err != nil {
				return nil, fmt.Errorf("entry %s: hard link: %w", p, err)
			}
			size, ok := files[tgt]
			if !ok {
				return nil, fmt.Errorf("entry %s: hard link to %q, which is not an earlier regular file", p, h.Linkname)
			}
			e.Kind, e.Target, e.Size = filetree.Hardlink, tgt, size
		case tar.TypeChar, tar.TypeBlock:
			e.Kind = filetree.CharDevice
			if h.Typeflag == tar.TypeBlock {
				e.Kind = filetree.BlockDevice
			}
			e.Major, e.Minor = uint32(h.Devmajor), uint32(h.Devminor)
		case tar.TypeFifo:
			e.Kind = filetree.FIFO
		default:
			return nil, fmt.Errorf("entry %s: unsupported tar type %q", p, h.Typeflag)
		}
		entries = append(entries, e)
	}
}

// notSparse refuses a PAX-format GNU sparse file: archive/tar reports it
// as a regular file of its expanded size and fills the holes with zeros,
// so a few KiB of tar could claim terabytes. dpkg-deb never writes them.
// (Old GNU 'S' entries keep their own type: data.tar refuses them as an
// unsupported type, control.tar skips them unread.)
func notSparse(h *tar.Header) error {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return fmt.Errorf("entry %q: a GNU sparse file, which a .deb does not hold", h.Name)
		}
	}
	return nil
}

func writeHostFile(p string, r io.Reader) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// tarMode converts tar's Unix mode bits to an fs.FileMode.
func tarMode(m int64) fs.FileMode {
	mode := fs.FileMode(m) & fs.ModePerm
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}
