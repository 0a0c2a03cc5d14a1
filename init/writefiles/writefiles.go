// Package writefiles applies a cloud-config's write_files entries to a
// file-system root.
package writefiles

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
)

// DefaultMode is the mode of a file whose entry gives no permissions.
const DefaultMode fs.FileMode = 0o644

// Apply writes every file under root. Files are written atomically
// (temporary file, fsync, rename) unless Append is set; parent
// directories are created 0755 root:root. Every failure is collected,
// each naming its path; the other files are still written.
func Apply(root string, files []cloudconfig.File, users UserLookup) error {
	var errs []error
	for i, f := range files {
		if err := applyOne(root, f, users); err != nil {
			errs = append(errs, fmt.Errorf("write_files[%d] %s: %w", i, f.Path, err))
		}
	}
	return errors.Join(errs...)
}

func applyOne(root string, f cloudconfig.File, users UserLookup) error {
	if !strings.HasPrefix(f.Path, "/") {
		return errors.New("path must be absolute")
	}
	dst := filepath.Join(root, filepath.Clean(f.Path))
	if dst == filepath.Clean(root) {
		return errors.New("path names the root directory")
	}
	data, err := Decode(f)
	if err != nil {
		return err
	}
	mode, err := ParseMode(f.Permissions)
	if err != nil {
		return err
	}
	uid, gid := 0, 0
	if f.Owner != "" {
		if users == nil {
			return fmt.Errorf("owner %q: no user lookup", f.Owner)
		}
		if uid, gid, err = users.Lookup(f.Owner); err != nil {
			return err
		}
	}
	if err := mkdirAll(root, filepath.Dir(dst)); err != nil {
		return err
	}
	if f.Append {
		return appendFile(dst, data, mode, uid, gid)
	}
	return writeAtomic(dst, data, mode, uid, gid)
}

// mkdirAll creates dir and its missing parents below root with mode 0755,
// owned by root.
func mkdirAll(root, dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir && len(parent) >= len(filepath.Clean(root)) {
		if err := mkdirAll(root, parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	// Mkdir is subject to the umask; the documented mode is 0755.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	return os.Lchown(dir, 0, 0)
}

func writeAtomic(dst string, data []byte, mode fs.FileMode, uid, gid int) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	// Chmod on the descriptor is not subject to the umask.
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Chown(uid, gid); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	ok = true
	return syncDir(filepath.Dir(dst))
}

func appendFile(dst string, data []byte, mode fs.FileMode, uid, gid int) error {
	fh, err := os.OpenFile(dst, os.O_WRONLY|os.O_APPEND|os.O_CREATE, mode)
	if err != nil {
		return err
	}
	defer fh.Close()
	if _, err := fh.Write(data); err != nil {
		return err
	}
	if err := fh.Chmod(mode); err != nil {
		return err
	}
	if err := fh.Chown(uid, gid); err != nil {
		return err
	}
	if err := fh.Sync(); err != nil {
		return err
	}
	return fh.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ParseMode parses an octal permissions string ("0644", "644", "0o600");
// empty means DefaultMode. Setuid, setgid and sticky bits are kept.
func ParseMode(s string) (fs.FileMode, error) {
	if s == "" {
		return DefaultMode, nil
	}
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	n, err := strconv.ParseUint(t, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("permissions %q: want an octal mode such as 0644", s)
	}
	m := fs.FileMode(n & 0o777)
	if n&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

// maxDecoded bounds gzip output so a small entry cannot fill /etc's tmpfs.
const maxDecoded = 64 << 20

// Decode returns a write_files entry's content after its encoding:
// "" or "text", "b64"/"base64", "gz"/"gzip", "gz+b64"/"gzip+base64"
// (gz+b64 content is base64 text of gzip data, as in cloud-init).
func Decode(f cloudconfig.File) ([]byte, error) {
	switch strings.ToLower(f.Encoding) {
	case "", "text", "text/plain":
		return []byte(f.Content), nil
	case "b64", "base64":
		return decodeBase64(f.Content)
	case "gz", "gzip":
		return gunzip([]byte(f.Content))
	case "gz+b64", "gzip+base64", "gz+base64", "gzip+b64":
		b, err := decodeBase64(f.Content)
		if err != nil {
			return nil, err
		}
		return gunzip(b)
	default:
		return nil, fmt.Errorf("encoding %q: want text, b64, gz or gz+b64", f.Encoding)
	}
}

func decodeBase64(s string) ([]byte, error) {
	// YAML block scalars bring newlines and indentation; base64 ignores none
	// of them by itself.
	clean := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\r':
			return -1
		}
		return r
	}, s)
	b, err := base64.StdEncoding.DecodeString(clean)
	if err != nil {
		if b2, err2 := base64.RawStdEncoding.DecodeString(clean); err2 == nil {
			return b2, nil
		}
		return nil, fmt.Errorf("base64 content: %w", err)
	}
	return b, nil
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("gzip content: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, maxDecoded+1))
	if err != nil {
		return nil, fmt.Errorf("gzip content: %w", err)
	}
	if len(out) > maxDecoded {
		return nil, fmt.Errorf("gzip content: larger than %d bytes", maxDecoded)
	}
	return out, nil
}
