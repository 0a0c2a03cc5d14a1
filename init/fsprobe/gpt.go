package fsprobe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// GPTPartition is one used entry of a GUID partition table.
type GPTPartition struct {
	Number   int // 1-based entry index, as the kernel numbers partitions
	Name     string
	FirstLBA uint64
	LastLBA  uint64
	TypeGUID [16]byte
}

// ErrNoGPT means the device has no (valid) GPT header.
var ErrNoGPT = errors.New("no GPT")

// ReadGPT reads the primary GPT of a disk with the given logical sector
// size, checking the header's and the entry array's CRC32.
func ReadGPT(r io.ReaderAt, sectorSize int) ([]GPTPartition, error) {
	if sectorSize < 512 || sectorSize > 65536 {
		return nil, fmt.Errorf("gpt: sector size %d", sectorSize)
	}
	hdr := make([]byte, sectorSize)
	if err := readFull(r, hdr, int64(sectorSize)); err != nil {
		return nil, fmt.Errorf("gpt: header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return nil, ErrNoGPT
	}
	hsize := binary.LittleEndian.Uint32(hdr[12:])
	if hsize < 92 || int(hsize) > sectorSize {
		return nil, fmt.Errorf("gpt: header size %d: %w", hsize, ErrNoGPT)
	}
	want := binary.LittleEndian.Uint32(hdr[16:])
	h := bytes.Clone(hdr[:hsize])
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != want {
		return nil, fmt.Errorf("gpt: header CRC mismatch: %w", ErrNoGPT)
	}
	entLBA := binary.LittleEndian.Uint64(hdr[72:])
	count := binary.LittleEndian.Uint32(hdr[80:])
	esize := binary.LittleEndian.Uint32(hdr[84:])
	entCRC := binary.LittleEndian.Uint32(hdr[88:])
	if esize < 128 || esize > 4096 || esize%8 != 0 || count > 1024 || entLBA > 1<<40 {
		return nil, fmt.Errorf("gpt: %d entries of %d bytes at LBA %d: implausible", count, esize, entLBA)
	}
	arr := make([]byte, int(count)*int(esize))
	if err := readFull(r, arr, int64(entLBA)*int64(sectorSize)); err != nil {
		return nil, fmt.Errorf("gpt: entries: %w", err)
	}
	if crc32.ChecksumIEEE(arr) != entCRC {
		return nil, errors.New("gpt: entry array CRC mismatch")
	}
	var parts []GPTPartition
	for i := 0; i < int(count); i++ {
		e := arr[i*int(esize) : (i+1)*int(esize)]
		var p GPTPartition
		copy(p.TypeGUID[:], e[:16])
		if p.TypeGUID == [16]byte{} {
			continue
		}
		p.Number = i + 1
		p.FirstLBA = binary.LittleEndian.Uint64(e[32:])
		p.LastLBA = binary.LittleEndian.Uint64(e[40:])
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		p.Name = strings.TrimRight(string(utf16.Decode(u)), "\x00")
		if k := strings.IndexByte(p.Name, 0); k >= 0 {
			p.Name = p.Name[:k]
		}
		parts = append(parts, p)
	}
	return parts, nil
}
