// Package filetree is the in-memory description of a file system that the
// image writers (squashfs, cpio, FAT, ISO) turn into bytes.
//
// A Tree holds metadata only; file contents come from a Source, which is
// either bytes in memory or a path on the build host (typically a file that
// the Debian client unpacked into its cache). Keeping contents out of memory
// is what makes a warm rebuild cheap: nothing is decompressed twice.
//
// Every writer walks the tree in sorted order and uses the entry's own mode,
// owner and the tree's fixed timestamp, never the host's, so the same inputs
// give byte-identical output.
package filetree

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// Kind is the type of a file system entry.
type Kind uint8

const (
	File Kind = iota
	Dir
	Symlink
	// Hardlink entries name another regular file in Target; writers that
	// cannot express hard links store a copy.
	Hardlink
	CharDevice
	BlockDevice
	FIFO
)

func (k Kind) String() string {
	switch k {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	case Hardlink:
		return "hardlink"
	case CharDevice:
		return "chardev"
	case BlockDevice:
		return "blockdev"
	case FIFO:
		return "fifo"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Source supplies the contents of a regular file.
type Source interface {
	Open() (io.ReadCloser, error)
	Size() int64
}

// Bytes is a Source held in memory.
type Bytes []byte

func (b Bytes) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
func (b Bytes) Size() int64                  { return int64(len(b)) }

// HostFile is a Source read from the build host when a writer needs it.
type HostFile struct {
	Path string
	Len  int64
}

func (h HostFile) Open() (io.ReadCloser, error) { return os.Open(h.Path) }
func (h HostFile) Size() int64                  { return h.Len }

// NewHostFile stats p and returns a Source for it.
func NewHostFile(p string) (HostFile, error) {
	st, err := os.Stat(p)
	if err != nil {
		return HostFile{}, err
	}
	if !st.Mode().IsRegular() {
		return HostFile{}, fmt.Errorf("%s: not a regular file", p)
	}
	return HostFile{Path: p, Len: st.Size()}, nil
}

// Entry is one file system object. Path is slash-separated, relative to the
// root, cleaned, without a leading slash ("usr/bin/env"); the root itself is "".
type Entry struct {
	Path string
	Kind Kind
	// Mode holds the permission bits plus setuid, setgid and sticky
	// (fs.ModeSetuid, fs.ModeSetgid, fs.ModeSticky); the type bits are
	// ignored, Kind says the type.
	Mode     fs.FileMode
	UID, GID int
	// Target is the link target for Symlink, the tree path of the linked
	// file for Hardlink.
	Target string
	// Data is the contents of a File.
	Data Source
	// Major and Minor are the device numbers of a device node.
	Major, Minor uint32
}

// Size is the length of a regular file's contents, 0 otherwise.
func (e *Entry) Size() int64 {
	if e.Kind == File && e.Data != nil {
		return e.Data.Size()
	}
	return 0
}

// Name is the last element of Path.
func (e *Entry) Name() string { return path.Base(e.Path) }

// Tree is a set of entries keyed by path. The zero value is not usable; call New.
type Tree struct {
	entries map[string]*Entry
	// ModTime is the timestamp every writer stamps on every entry
	// (SOURCE_DATE_EPOCH).
	ModTime time.Time
}

// New returns a tree holding only the root directory (mode 0755, root:root).
func New(modTime time.Time) *Tree {
	t := &Tree{entries: map[string]*Entry{}, ModTime: modTime.UTC()}
	t.entries[""] = &Entry{Path: "", Kind: Dir, Mode: 0o755}
	return t
}

// ErrInvalidPath is returned for paths that escape the root or are empty.
var ErrInvalidPath = errors.New("invalid path")

// Clean normalises p to the tree's path form: no leading slash, no "." or
// "..", no trailing slash. It refuses paths that climb out of the root.
func Clean(p string) (string, error) {
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: %q contains NUL", ErrInvalidPath, p)
	}
	c := path.Clean("/" + p)
	// path.Clean("/..") == "/", so a climbing path cannot escape; but a
	// path whose cleaned form differs only by leading ".." was suspicious
	// input from an archive, and we refuse it rather than silently rewrite.
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return "", fmt.Errorf("%w: %q climbs out of the root", ErrInvalidPath, p)
		}
	}
	return strings.TrimPrefix(c, "/"), nil
}

// Add inserts or replaces e, creating missing parent directories (0755,
// root:root). Replacing a directory with a directory keeps its children;
// replacing a directory with anything else removes them.
func (t *Tree) Add(e Entry) error {
	p, err := Clean(e.Path)
	if err != nil {
		return err
	}
	if p == "" {
		if e.Kind != Dir {
			return fmt.Errorf("%w: root must be a directory", ErrInvalidPath)
		}
		e.Path = ""
		t.entries[""] = &e
		return nil
	}
	e.Path = p
	e.Mode &= fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if e.Kind == File && e.Data == nil {
		e.Data = Bytes(nil)
	}
	if err := t.mkdirParents(path.Dir(p)); err != nil {
		return fmt.Errorf("adding %s: %w", p, err)
	}
	if old, ok := t.entries[p]; ok && old.Kind == Dir && e.Kind != Dir {
		t.removeChildren(p)
	}
	t.entries[p] = &e
	return nil
}

func (t *Tree) mkdirParents(dir string) error {
	if dir == "." || dir == "/" {
		dir = ""
	}
	if dir == "" {
		return nil
	}
	if e, ok := t.entries[dir]; ok {
		switch e.Kind {
		case Dir:
			return nil
		case Symlink:
			// Debian's merged /usr: /bin -> usr/bin. A path under a
			// symlinked directory is stored under the link's target.
			return fmt.Errorf("%w: parent %s is a symlink", ErrInvalidPath, dir)
		default:
			return fmt.Errorf("%w: parent %s is a %s", ErrInvalidPath, dir, e.Kind)
		}
	}
	if err := t.mkdirParents(path.Dir(dir)); err != nil {
		return err
	}
	t.entries[dir] = &Entry{Path: dir, Kind: Dir, Mode: 0o755}
	return nil
}

func (t *Tree) removeChildren(dir string) {
	prefix := dir + "/"
	for p := range t.entries {
		if strings.HasPrefix(p, prefix) {
			delete(t.entries, p)
		}
	}
}

// Resolve follows symlinks in the directory part of p (not the last
// element), the way the kernel would when the tree is mounted, so that
// "bin/sh" lands at "usr/bin/sh" under a merged-/usr layout. It returns the
// cleaned, resolved path.
func (t *Tree) Resolve(p string) (string, error) {
	p, err := Clean(p)
	if err != nil {
		return "", err
	}
	if p == "" {
		return "", nil
	}
	parts := strings.Split(p, "/")
	cur := ""
	for i, el := range parts {
		next := path.Join(cur, el)
		if i == len(parts)-1 {
			return next, nil
		}
		for hops := 0; ; hops++ {
			e, ok := t.entries[next]
			if !ok || e.Kind != Symlink {
				break
			}
			if hops > 40 {
				return "", fmt.Errorf("%w: too many symlinks resolving %s", ErrInvalidPath, p)
			}
			tgt := e.Target
			if strings.HasPrefix(tgt, "/") {
				next, err = Clean(tgt)
			} else {
				next, err = Clean(path.Join(path.Dir(next), tgt))
			}
			if err != nil {
				return "", err
			}
		}
		cur = next
	}
	return cur, nil
}

// Get returns the entry at p, or nil.
func (t *Tree) Get(p string) *Entry {
	c, err := Clean(p)
	if err != nil {
		return nil
	}
	return t.entries[c]
}

// Remove deletes p and, for a directory, everything below it.
func (t *Tree) Remove(p string) {
	c, err := Clean(p)
	if err != nil || c == "" {
		return
	}
	t.removeChildren(c)
	delete(t.entries, c)
}

// Len is the number of entries, the root included.
func (t *Tree) Len() int { return len(t.entries) }

// Entries returns every entry sorted by path, parents before children; the
// root ("") comes first. Writers iterate this slice.
func (t *Tree) Entries() []*Entry {
	out := make([]*Entry, 0, len(t.entries))
	for _, e := range t.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Children returns the direct children of dir, sorted by name.
func (t *Tree) Children(dir string) []*Entry {
	c, err := Clean(dir)
	if err != nil {
		return nil
	}
	var out []*Entry
	for p, e := range t.entries {
		if p == "" {
			continue
		}
		if path.Dir(p) == c || (c == "" && !strings.Contains(p, "/")) {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// TotalSize sums the sizes of all regular files.
func (t *Tree) TotalSize() int64 {
	var n int64
	for _, e := range t.entries {
		n += e.Size()
	}
	return n
}

// AddFile adds a root-owned regular file held in memory.
func (t *Tree) AddFile(p string, mode fs.FileMode, data []byte) error {
	return t.Add(Entry{Path: p, Kind: File, Mode: mode, Data: Bytes(data)})
}

// AddDir adds a root-owned directory.
func (t *Tree) AddDir(p string, mode fs.FileMode) error {
	return t.Add(Entry{Path: p, Kind: Dir, Mode: mode})
}

// AddSymlink adds a symlink at p pointing to target.
func (t *Tree) AddSymlink(p, target string) error {
	return t.Add(Entry{Path: p, Kind: Symlink, Mode: 0o777, Target: target})
}

// Merge copies every entry of other into t; other's entries win.
func (t *Tree) Merge(other *Tree) error {
	for _, e := range other.Entries() {
		cp := *e
		if err := t.Add(cp); err != nil {
			return err
		}
	}
	return nil
}

// ErrBadHardlink is returned by LinkTarget for a dangling, looping or
// non-file hard link.
var ErrBadHardlink = errors.New("bad hard link")

// LinkTarget follows a Hardlink entry (and links to links) to the regular
// file it names.
func (t *Tree) LinkTarget(e *Entry) (*Entry, error) {
	cur := e
	for range 40 {
		next := t.Get(cur.Target)
		switch {
		case next == nil:
			return nil, fmt.Errorf("%w: %s: target %q does not exist", ErrBadHardlink, e.Path, cur.Target)
		case next.Kind == File:
			return next, nil
		case next.Kind == Hardlink:
			cur = next
		default:
			return nil, fmt.Errorf("%w: %s: target %q is a %v, not a file", ErrBadHardlink, e.Path, next.Path, next.Kind)
		}
	}
	return nil, fmt.Errorf("%w: %s: chain too long", ErrBadHardlink, e.Path)
}

// UnixPerm is the entry's 12 Unix permission bits (setuid, setgid and
// sticky included), as archive and file-system formats store them.
func (e *Entry) UnixPerm() uint32 {
	p := uint32(e.Mode.Perm())
	if e.Mode&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if e.Mode&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if e.Mode&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}
