// Package fsprobe identifies file systems by their superblocks (type and
// label: vfat, iso9660, ext2/3/4, squashfs) and reads GPT partition
// tables: the init has no blkid. Finding devices in sysfs is
// init/blockdev's job; this package looks inside them.
package fsprobe

import (
	"io"
	"os"
)

// ProbeFile opens path (a device node or image file) and probes it.
func ProbeFile(path string) (fstype, label string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	return Probe(f)
}

// readFull reads len(buf) bytes at off, tolerating a device shorter than
// that (the rest stays zero).
func readFull(r io.ReaderAt, buf []byte, off int64) error {
	n, err := r.ReadAt(buf, off)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		clear(buf[n:])
		return nil
	}
	return err
}
