package inspect

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/ballast-os/ballast/imagebuild/initramfs"
)

// maxBaked bounds what is read of the baked config.
const maxBaked = 16 << 20

// BakedConfig returns the cloud-config baked into an initramfs (zstd or
// plain newc cpio), or nil when it has none.
func BakedConfig(initrd []byte) ([]byte, error) {
	var r io.Reader = bytes.NewReader(initrd)
	if bytes.HasPrefix(initrd, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		d, err := zstd.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
		defer d.Close()
		r = d
	}
	// The cpio reader wants a ReaderAt; an initramfs is a few megabytes.
	data, err := io.ReadAll(io.LimitReader(r, 512<<20))
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	rr := cpio.Newc.Reader(bytes.NewReader(data))
	for {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
		if rec.Name != initramfs.BakedConfigPath {
			continue
		}
		if rec.FileSize > maxBaked {
			return nil, fmt.Errorf("initramfs: %s is %d bytes", rec.Name, rec.FileSize)
		}
		return io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
	}
}
