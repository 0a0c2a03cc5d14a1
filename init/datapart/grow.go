// Package datapart prepares the data partition (BALLAST_DATA): it grows the
// partition to the end of its disk, creates or grows the ext4 file system,
// mounts it at /persist and binds the persistent directories.
package datapart

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// alignSectors aligns the grown partition's end down to 1 MiB (in 512-byte
// sectors scaled by the sector size at use), as partitioning tools do.
const alignBytes = 1 << 20

// GrowResult says what GrowGPT did.
type GrowResult struct {
	Grew       bool
	Index      int    // 1-based partition number
	Start      uint64 // first LBA
	OldEnd     uint64 // last LBA before
	NewEnd     uint64 // last LBA after
	SectorSize int
}

// GrowGPT grows the GPT partition named name to the end of the disk of
// diskSize bytes: the backup header and entries move to the real end of
// the disk (a flashed image is smaller than the card), the partition's last
// LBA moves to the last usable LBA (aligned down to 1 MiB), and both
// headers get new CRCs. The partition must be the last one on the disk,
// and every partition must lie within the disk's usable LBAs. Nothing is
// written when it already fills the disk (within alignment) and both
// headers are where they belong.
func GrowGPT(f backend.WritableFile, diskSize int64, sectorSize int, name string) (GrowResult, error) {
	res := GrowResult{SectorSize: sectorSize}
	if sectorSize < 512 || sectorSize > alignBytes || sectorSize&(sectorSize-1) != 0 {
		return res, fmt.Errorf("sector size %d", sectorSize)
	}
	// go-diskfs trusts the header it reads: check first what it would
	// allocate and where it would write.
	hdrs, err := checkGPTHeaders(f, sectorSize)
	if err != nil {
		return res, fmt.Errorf("reading GPT: %w", err)
	}
	t, err := gpt.Read(f, sectorSize, sectorSize)
	if err != nil {
		return res, fmt.Errorf("reading GPT: %w", err)
	}
	used := hdrs.primary
	if t.RecoveredFromBackup {
		used = hdrs.backup
	}
	if used == nil {
		return res, errors.New("reading GPT: go-diskfs read a header that checkGPTHeaders does not take for one")
	}
	var p *gpt.Partition
	for _, q := range t.Partitions {
		if q.Name == name {
			p = q
		}
	}
	if p == nil {
		return res, fmt.Errorf("no GPT partition named %s", name)
	}
	res.Index, res.Start, res.OldEnd, res.NewEnd = p.Index, p.Start, p.End, p.End
	for _, q := range t.Partitions {
		if q != p && q.Start > p.Start {
			return res, fmt.Errorf("partition %s (#%d) is not the last on the disk: #%d starts after it", name, p.Index, q.Index)
		}
	}

	// The backup header and its entries go to the disk's last sectors,
	// after the last usable one.
	sectors := uint64(diskSize) / uint64(sectorSize)
	if sectors < 2*used.arraySectors+3 || sectors-used.arraySectors-2 < used.firstUsable {
		return res, fmt.Errorf("a disk of %d bytes is too small for its GPT", diskSize)
	}
	// Repair recomputes the backup header LBA and the last usable LBA from
	// the real disk size.
	if err := t.Repair(uint64(diskSize)); err != nil {
		return res, fmt.Errorf("relocating backup GPT: %w", err)
	}
	lastUsable := t.LastDataSector()
	for _, q := range t.Partitions {
		// Rewriting a table whose partitions lie past the disk (an image
		// flashed to a smaller disk) would put the backup GPT over them.
		if q.Start > q.End || q.Start < used.firstUsable || q.End > lastUsable {
			return res, fmt.Errorf("partition #%d (LBA %d-%d) is not within the usable LBAs %d-%d of a disk of %d bytes",
				q.Index, q.Start, q.End, used.firstUsable, lastUsable, diskSize)
		}
	}
	align := uint64(alignBytes / sectorSize)
	newEnd := (lastUsable+1)/align*align - 1
	if lastUsable+1 < align {
		newEnd = 0
	}
	if newEnd <= p.End {
		// Already fills the disk; still fix a misplaced backup header, a
		// primary header that names another one or a stale last usable
		// LBA, or a primary GPT that go-diskfs read around (from the
		// backup).
		if err := t.Verify(f, uint64(diskSize)); err == nil && !t.RecoveredFromBackup &&
			used.alt == sectors-1 && used.lastUsable == lastUsable {
			return res, nil
		}
		newEnd = p.End
	}
	p.Expand(newEnd - p.End)
	res.NewEnd = newEnd
	res.Grew = newEnd > res.OldEnd
	if err := t.Write(f, diskSize); err != nil {
		return res, fmt.Errorf("writing GPT: %w", err)
	}
	return res, nil
}

// gptHeader is what checkGPTHeaders read of a GPT header.
type gptHeader struct {
	alt                     uint64 // the other header's LBA
	firstUsable, lastUsable uint64
	arraySectors            uint64 // sectors of the partition entry array
}

// gptHeaders are the primary and backup headers that gpt.Read may use; nil
// when one is not a GPT header at all (gpt.Read then refuses it itself).
type gptHeaders struct{ primary, backup *gptHeader }

// maxGPTEntries bounds the partition entry array: every partitioning tool
// writes 128 entries, and go-diskfs allocates whatever the header says.
const maxGPTEntries = 1024

// checkGPTHeaders checks the fields of the primary header (LBA 1) and of
// the backup header (the last LBA, which gpt.Read falls back to) that
// go-diskfs uses without checking: it allocates entries × entry size
// bytes from the header's numbers, and Table.Write writes 128-byte
// entries after the header's own LBA and behind the backup. A header with
// a valid signature and CRC must describe such a table; one without them
// is left to gpt.Read to refuse.
func checkGPTHeaders(f backend.File, sectorSize int) (gptHeaders, error) {
	var hs gptHeaders
	end, err := f.Seek(0, io.SeekEnd) // where gpt.Read looks for the backup
	if err != nil {
		return hs, fmt.Errorf("finding the disk size: %w", err)
	}
	sectors := uint64(end) / uint64(sectorSize)
	if sectors < 3 {
		return hs, fmt.Errorf("a disk of %d bytes holds no GPT", end)
	}
	for _, primary := range []bool{true, false} {
		lba := uint64(1)
		what := "primary"
		if !primary {
			lba, what = sectors-1, "backup"
		}
		b := make([]byte, sectorSize)
		if _, err := f.ReadAt(b, int64(lba)*int64(sectorSize)); err != nil {
			if primary {
				return hs, fmt.Errorf("reading the primary header: %w", err)
			}
			continue // gpt.Read reports it when it needs the backup
		}
		if !isGPTHeader(b) {
			continue
		}
		my, alt := binary.LittleEndian.Uint64(b[24:]), binary.LittleEndian.Uint64(b[32:])
		first, last := binary.LittleEndian.Uint64(b[40:]), binary.LittleEndian.Uint64(b[48:])
		entLBA := binary.LittleEndian.Uint64(b[72:])
		count, esize := binary.LittleEndian.Uint32(b[80:]), binary.LittleEndian.Uint32(b[84:])
		bad := func(format string, args ...any) (gptHeaders, error) {
			return hs, fmt.Errorf("%s GPT header at LBA %d: %s", what, lba, fmt.Sprintf(format, args...))
		}
		if esize != gpt.PartitionEntrySize {
			return bad("entries of %d bytes, not %d", esize, gpt.PartitionEntrySize)
		}
		if count == 0 || count > maxGPTEntries || uint64(count)*uint64(esize)%uint64(sectorSize) != 0 {
			return bad("%d entries (at most %d, filling whole sectors)", count, maxGPTEntries)
		}
		h := &gptHeader{alt: alt, firstUsable: first, lastUsable: last,
			arraySectors: uint64(count) * uint64(esize) / uint64(sectorSize)}
		// The entry array lies right after the primary header and right
		// before the backup; the backup names the primary. (The primary's
		// pointer to the backup is stale on a flashed disk: Repair moves
		// the backup.)
		wantEnt, wantAlt := uint64(2), alt
		if !primary {
			if lba < 2*h.arraySectors+3 {
				return bad("%d sectors of entries on a disk of %d sectors", h.arraySectors, sectors)
			}
			wantEnt, wantAlt = lba-h.arraySectors, 1
		}
		if my != lba || alt != wantAlt || entLBA != wantEnt {
			return bad("header at LBA %d, other header at %d, entries at %d (want %d)", my, alt, entLBA, wantEnt)
		}
		if first < 2+h.arraySectors {
			return bad("the first usable LBA %d lies in the entries at %d-%d", first, entLBA, entLBA+h.arraySectors-1)
		}
		if first > last {
			return bad("the first usable LBA %d is after the last, %d", first, last)
		}
		if primary {
			hs.primary = h
		} else {
			hs.backup = h
		}
	}
	return hs, nil
}

// isGPTHeader reports whether b is a header gpt.Read accepts: signature,
// revision 1.0, 92 bytes, zero reserved field, CRC32.
func isGPTHeader(b []byte) bool {
	if string(b[:8]) != "EFI PART" || binary.LittleEndian.Uint32(b[8:]) != 0x10000 ||
		binary.LittleEndian.Uint32(b[12:]) != 92 || binary.LittleEndian.Uint32(b[20:]) != 0 {
		return false
	}
	h := bytes.Clone(b[:92])
	clear(h[16:20])
	return crc32.ChecksumIEEE(h) == binary.LittleEndian.Uint32(b[16:])
}

// DiskSize returns the size of a disk or image by seeking to its end.
func DiskSize(f io.Seeker) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("finding disk size: %w", err)
	}
	return n, nil
}
