package squashfs

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// formatVersion changes whenever Write would give different bytes for the
// same tree and options, so cached images keyed by Digest go stale.
const formatVersion = "ballast-squashfs-1"

// Digest returns a hex SHA-256 that changes whenever Write(t, opts) could
// give a different image: the writer's version, the options that shape the
// output, the tree's timestamp, and every entry's metadata and content
// identity. Contents are identified without reading them where that is safe:
// a HostFile by its path, size and the host file's modification time (the
// Debian cache is content-addressed, so a path names one content); bytes in
// memory by their hash; any other Source by hashing what it yields.
func Digest(t *filetree.Tree, opts Options) (string, error) {
	if err := opts.Validate(); err != nil {
		return "", err
	}
	h := sha256.New()
	d := digester{h: h}
	d.str(formatVersion)
	d.u64(uint64(opts.Compression))
	if opts.Compression == Zstd {
		d.u64(uint64(opts.levelOrDefault()))
	}
	d.u64(uint64(opts.blockSizeOrDefault()))
	d.u64(uint64(t.ModTime.Unix()))
	for _, e := range t.Entries() {
		d.str(e.Path)
		d.u64(uint64(e.Kind))
		d.u64(uint64(e.UnixPerm()))
		d.u64(uint64(e.UID))
		d.u64(uint64(e.GID))
		d.str(e.Target)
		d.u64(uint64(e.Major))
		d.u64(uint64(e.Minor))
		if e.Kind == filetree.File {
			if err := d.source(e); err != nil {
				return "", fmt.Errorf("squashfs: digest: %w", err)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type digester struct {
	h   hash.Hash
	buf [8]byte
}

func (d *digester) u64(v uint64) {
	binary.LittleEndian.PutUint64(d.buf[:], v)
	d.h.Write(d.buf[:])
}

// str writes a length-prefixed string, so that field boundaries cannot
// shift between entries.
func (d *digester) str(s string) {
	d.u64(uint64(len(s)))
	io.WriteString(d.h, s)
}

func (d *digester) source(e *filetree.Entry) error {
	switch s := e.Data.(type) {
	case filetree.HostFile:
		return d.hostFile(e, s)
	case *filetree.HostFile:
		return d.hostFile(e, *s)
	case filetree.Bytes:
		sum := sha256.Sum256(s)
		d.str("bytes")
		d.u64(uint64(len(s)))
		d.h.Write(sum[:])
		return nil
	}
	rc, err := e.Data.Open()
	if err != nil {
		return fmt.Errorf("%s: %w", e.Path, err)
	}
	defer rc.Close()
	c := sha256.New()
	n, err := io.Copy(c, rc)
	if err != nil {
		return fmt.Errorf("%s: %w", e.Path, err)
	}
	d.str("content")
	d.u64(uint64(n))
	d.h.Write(c.Sum(nil))
	return nil
}

func (d *digester) hostFile(e *filetree.Entry, s filetree.HostFile) error {
	st, err := os.Stat(s.Path)
	if err != nil {
		return fmt.Errorf("%s: %w", e.Path, err)
	}
	d.str("host")
	d.str(s.Path)
	d.u64(uint64(s.Len))
	d.u64(uint64(st.Size()))
	d.u64(uint64(st.ModTime().UnixNano()))
	return nil
}
