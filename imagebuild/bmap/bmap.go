// Package bmap finds the parts of a sparse disk image that must be
// written to a device, and reads and writes them as a block map in
// bmaptool's format 2.0 (github.com/intel/bmap-tools): an XML file beside
// the image that lists the mapped ranges of 4 KiB blocks, each with the
// SHA-256 of its bytes, and its own SHA-256.
//
// A raw image is mostly holes (the empty slot B, the data partition's
// free space), and a hole reads as zeros. Skipping the holes is what makes
// a large sparse image flash fast; it also leaves whatever the device held
// there. That is harmless in free space, but not where the image's zeros
// mean something: the partition tables, and the start of every partition
// (the init formats BALLAST_DATA only when its first MiB is zeros, and a
// stale file-system superblock in slot B would look like a system). Map
// therefore adds those regions to the data ranges, so a block map written
// by Create makes bmaptool zero them too.
package bmap

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// BlockSize is the block size of the maps this package writes.
const BlockSize = 4096

// MiB is the size of the regions Map always includes.
const MiB = 1 << 20

// Span is a byte range [Off, Off+Len) of an image.
type Span struct {
	Off, Len int64
}

// End is the offset just past the span.
func (s Span) End() int64 { return s.Off + s.Len }

// DataSpans returns the regions of f that hold data, found with
// SEEK_DATA/SEEK_HOLE: on a file system without holes (or a copy that
// lost them) that is the whole file.
func DataSpans(f *os.File) ([]Span, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	fd := int(f.Fd())
	var out []Span
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		} else if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			// No SEEK_DATA here: everything from off is data.
			out = append(out, Span{off, size - off})
			break
		} else if err != nil {
			return nil, fmt.Errorf("bmap: SEEK_DATA in %s: %w", f.Name(), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("bmap: SEEK_HOLE in %s: %w", f.Name(), err)
		}
		hole = min(hole, size)
		if hole > data {
			out = append(out, Span{data, hole - data})
		}
		off = hole
	}
	return out, nil
}

// Map returns what must be written to put the image f on a device: its
// data (DataSpans) and the regions whose zeros matter (KeySpans), rounded
// out to whole blocks of blockSize and merged, in order.
func Map(f *os.File, blockSize int64) ([]Span, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	data, err := DataSpans(f)
	if err != nil {
		return nil, err
	}
	key, err := KeySpans(f, st.Size())
	if err != nil {
		return nil, err
	}
	return Merge(append(data, key...), blockSize, st.Size()), nil
}

// Merge rounds spans out to whole blocks (the last one stops at size),
// sorts them and joins those that touch or overlap.
func Merge(spans []Span, blockSize, size int64) []Span {
	var out []Span
	for _, s := range spans {
		start := s.Off / blockSize * blockSize
		end := min((s.End()+blockSize-1)/blockSize*blockSize, size)
		if end > start {
			out = append(out, Span{start, end - start})
		}
	}
	slices.SortFunc(out, func(a, b Span) int {
		switch {
		case a.Off < b.Off:
			return -1
		case a.Off > b.Off:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && s.Off <= merged[n-1].End() {
			if s.End() > merged[n-1].End() {
				merged[n-1].Len = s.End() - merged[n-1].Off
			}
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// Total is the number of bytes the spans cover.
func Total(spans []Span) int64 {
	var n int64
	for _, s := range spans {
		n += s.Len
	}
	return n
}

// Checksum returns the SHA-256 of r's bytes in s.
func Checksum(r io.ReaderAt, s Span) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, s.Off, s.Len)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
