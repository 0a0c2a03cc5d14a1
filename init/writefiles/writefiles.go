// Package writefiles applies a cloud-config's write_files entries to a
// file-system root.
package writefiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
)

// Apply writes every file under root. Content is decoded and modes parsed
// by cloudconfig.File's Decode and Mode (default 0644). Files are written atomically
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
	data, err := f.Decode()
	if err != nil {
		return err
	}
	mode, err := f.Mode()
	if err != nil {
		return fmt.Errorf("permissions: %w", err)
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

// WriteDurable replaces dst with data (mode, owned by root) so that a power
// cut leaves the old file or the new one, complete: a temporary file
// beside it is synced, renamed over it, and the directory synced.
func WriteDurable(dst string, data []byte, mode fs.FileMode) error {
	return writeAtomic(dst, data, mode, 0, 0)
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
