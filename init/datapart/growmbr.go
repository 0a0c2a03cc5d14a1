package datapart

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrNotMBR is returned by GrowMBR for a disk without a DOS partition
// table (no 0x55AA marker, or a GPT's protective MBR).
var ErrNotMBR = errors.New("no DOS (MBR) partition table")

// GrowMBR grows MBR partition num (1..4) of a disk of diskSize bytes to
// the end of the disk, its end aligned down to 1 MiB and capped at what
// 32-bit sector numbers address (2 TiB). The partition must be the last on
// the disk. Nothing is written when it already fills the disk.
func GrowMBR(f interface {
	io.ReaderAt
	io.WriterAt
}, diskSize int64, sectorSize, num int) (GrowResult, error) {
	res := GrowResult{Index: num, SectorSize: sectorSize}
	if num < 1 || num > 4 {
		return res, fmt.Errorf("MBR partition %d: want 1..4", num)
	}
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		return res, fmt.Errorf("reading MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return res, ErrNotMBR
	}
	type entry struct {
		typ           byte
		start, length uint32
	}
	var ents [4]entry
	for i := range ents {
		e := mbr[446+16*i:]
		ents[i] = entry{e[4], binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])}
		if e[4] == 0xee {
			return res, ErrNotMBR
		}
	}
	p := ents[num-1]
	if p.typ == 0 || p.length == 0 {
		return res, fmt.Errorf("MBR partition %d is empty", num)
	}
	for i, q := range ents {
		if i != num-1 && q.length != 0 && q.start > p.start {
			return res, fmt.Errorf("MBR partition %d is not the last on the disk: %d starts after it", num, i+1)
		}
	}
	ss := uint64(sectorSize)
	res.Start = uint64(p.start)
	res.OldEnd = uint64(p.start) + uint64(p.length) - 1
	res.NewEnd = res.OldEnd
	sectors := uint64(diskSize) / ss
	if sectors > 1<<32 {
		sectors = 1 << 32 // the last sector an MBR entry can end on is 2^32-1
	}
	align := uint64(alignBytes) / ss
	end := sectors/align*align - 1
	if end <= res.OldEnd {
		return res, nil
	}
	if end-res.Start+1 > 1<<32-1 {
		end = res.Start + (1<<32 - 1) - 1
	}
	e := mbr[446+16*(num-1):]
	binary.LittleEndian.PutUint32(e[12:], uint32(end-res.Start+1))
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return res, fmt.Errorf("writing MBR: %w", err)
	}
	res.NewEnd, res.Grew = end, true
	return res, nil
}
