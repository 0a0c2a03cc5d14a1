package bmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

const sectorSize = 512

// KeySpans returns the regions of an image of size bytes whose content
// must reach the device even where the image has a hole: the first and
// last MiB (MBR, the primary GPT and GRUB's core image; the backup GPT),
// and the first MiB of every partition in its MBR or GPT, so that no
// stale partition table, superblock or placeholder survives from what the
// device held before. A disk without a partition table gets the first and
// last MiB only; a table that reads badly is an error, since flashing
// past it could leave an old file system where the init expects zeros.
func KeySpans(r io.ReaderAt, size int64) ([]Span, error) {
	spans := []Span{{0, min(MiB, size)}}
	if size > MiB {
		spans = append(spans, Span{size - MiB, MiB})
	}
	parts, err := Partitions(r, size)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		spans = append(spans, Span{p.Off, min(p.Len, MiB)})
	}
	return spans, nil
}

// Partitions lists the partitions of an image's MBR, or of its GPT when
// the MBR is protective, as byte spans (512-byte sectors, as the images
// ballast writes). No table: none and no error.
func Partitions(r io.ReaderAt, size int64) ([]Span, error) {
	mbr := make([]byte, sectorSize)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, nil
		}
		return nil, fmt.Errorf("bmap: reading the MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return nil, nil
	}
	var parts []Span
	gpt := false
	for i := range 4 {
		e := mbr[446+16*i : 446+16*(i+1)]
		typ := e[4]
		start := int64(binary.LittleEndian.Uint32(e[8:]))
		n := int64(binary.LittleEndian.Uint32(e[12:]))
		switch {
		case typ == 0xee:
			gpt = true
		case typ != 0 && n > 0:
			parts = append(parts, Span{start * sectorSize, n * sectorSize})
		}
	}
	if gpt {
		return gptPartitions(r, size)
	}
	for _, p := range parts {
		if p.End() > size {
			return nil, fmt.Errorf("bmap: MBR partition at byte %d ends past the image's %d bytes", p.Off, size)
		}
	}
	return parts, nil
}

// gptPartitions reads the primary GPT's entries (UEFI 2.10, 5.3).
func gptPartitions(r io.ReaderAt, size int64) ([]Span, error) {
	hdr := make([]byte, 92)
	if _, err := r.ReadAt(hdr, sectorSize); err != nil {
		return nil, fmt.Errorf("bmap: reading the GPT header: %w", err)
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return nil, fmt.Errorf("bmap: protective MBR but no GPT header at LBA 1")
	}
	entriesLBA := int64(binary.LittleEndian.Uint64(hdr[72:]))
	count := int64(binary.LittleEndian.Uint32(hdr[80:]))
	esize := int64(binary.LittleEndian.Uint32(hdr[84:]))
	if esize < 128 || esize > 4096 || count > 1024 || entriesLBA < 2 || (entriesLBA+1)*sectorSize+count*esize > size {
		return nil, fmt.Errorf("bmap: GPT header: %d entries of %d bytes at LBA %d do not fit the image", count, esize, entriesLBA)
	}
	table := make([]byte, count*esize)
	if _, err := r.ReadAt(table, entriesLBA*sectorSize); err != nil {
		return nil, fmt.Errorf("bmap: reading the GPT entries: %w", err)
	}
	var parts []Span
	for i := range count {
		e := table[i*esize : (i+1)*esize]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue // unused entry
		}
		first := binary.LittleEndian.Uint64(e[32:])
		last := binary.LittleEndian.Uint64(e[40:])
		if last < first || last >= uint64(size/sectorSize) {
			return nil, fmt.Errorf("bmap: GPT entry %d: LBAs %d-%d outside the image", i+1, first, last)
		}
		parts = append(parts, Span{int64(first) * sectorSize, int64(last-first+1) * sectorSize})
	}
	return parts, nil
}
