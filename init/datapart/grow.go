// Package datapart prepares the data partition (BALLAST_DATA): it grows the
// partition to the end of its disk, creates or grows the ext4 file system,
// mounts it at /persist and binds the persistent directories.
package datapart

import (
	"fmt"
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
// headers get new CRCs. The partition must be the last one on the disk.
// Nothing is written when it already fills the disk (within alignment).
func GrowGPT(f backend.WritableFile, diskSize int64, sectorSize int, name string) (GrowResult, error) {
	res := GrowResult{SectorSize: sectorSize}
	t, err := gpt.Read(f, sectorSize, sectorSize)
	if err != nil {
		return res, fmt.Errorf("reading GPT: %w", err)
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

	// Repair recomputes the backup header LBA and the last usable LBA from
	// the real disk size.
	if err := t.Repair(uint64(diskSize)); err != nil {
		return res, fmt.Errorf("relocating backup GPT: %w", err)
	}
	lastUsable := t.LastDataSector()
	align := uint64(alignBytes / sectorSize)
	newEnd := (lastUsable+1)/align*align - 1
	if newEnd <= p.End {
		// Already fills the disk; still fix a misplaced backup header.
		if err := t.Verify(f, uint64(diskSize)); err == nil {
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

// DiskSize returns the size of a disk or image by seeking to its end.
func DiskSize(f io.Seeker) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("finding disk size: %w", err)
	}
	return n, nil
}
