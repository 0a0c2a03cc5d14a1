package disk

import (
	"fmt"
	"os"
	"path/filepath"
)

// imageFile is an image being written: a sparse temporary file beside its
// final path, which only a successful commit makes visible, so a failed or
// interrupted build never leaves a half-written image behind.
type imageFile struct {
	*os.File
	final string
}

// createImageFile makes the temporary file for path, size bytes long.
func createImageFile(path string, size int64) (*imageFile, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("disk: sizing %s: %w", f.Name(), err)
	}
	return &imageFile{File: f, final: path}, nil
}

// finish commits the image when *errp is nil (fsync, mode 0644, rename)
// and otherwise removes it. Use as `defer img.finish(&err)`.
func (img *imageFile) finish(errp *error) {
	if *errp == nil {
		*errp = img.commit()
	}
	if *errp != nil {
		img.Close()
		os.Remove(img.Name())
	}
}

func (img *imageFile) commit() error {
	if err := img.Sync(); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if err := img.Close(); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if err := os.Chmod(img.Name(), 0o644); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if err := os.Rename(img.Name(), img.final); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	return nil
}
