package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// This file is a small FAT16/FAT32 writer. go-diskfs can write FAT32, but it
// stamps directory entries with time.Now (or the process-wide
// SOURCE_DATE_EPOCH variable), which breaks byte-identical builds; writing a
// read-only-by-design volume from a known tree is simple enough to do here,
// and it lets every byte come from the inputs.

const sectorSize = 512

// FAT describes a FAT volume to write.
type FAT struct {
	// Label is the volume label (up to 11 characters, upper-cased).
	Label string
	// Serial is the volume serial number; derive it from the build inputs.
	Serial uint32
	// Size is the volume size in bytes, a multiple of 512.
	Size int64
	// HiddenSectors is the LBA of the partition that holds the volume
	// (0 for a standalone image such as the ISO's efi.img).
	HiddenSectors uint32
	// ModTime stamps every directory entry.
	ModTime time.Time
}

// fatLayout is the computed geometry of a volume.
type fatLayout struct {
	fat32             bool
	sectorsPerCluster uint32
	reserved          uint32
	fatSectors        uint32
	rootDirSectors    uint32 // FAT16 only: the fixed root directory region
	totalSectors      uint32
	clusters          uint32
}

func (l fatLayout) clusterBytes() int64 { return int64(l.sectorsPerCluster) * sectorSize }

func (l fatLayout) dataStart() int64 {
	return int64(l.reserved+2*l.fatSectors+l.rootDirSectors) * sectorSize
}

func (l fatLayout) clusterOffset(c uint32) int64 {
	return l.dataStart() + int64(c-2)*l.clusterBytes()
}

// Cluster-count limits from Microsoft's FAT specification: the count, not
// a flag, decides which FAT a reader assumes.
const (
	fat16MinClusters = 4085
	fat32MinClusters = 65525
)

func layoutFor(size int64) (fatLayout, error) {
	if size%sectorSize != 0 {
		return fatLayout{}, fmt.Errorf("FAT size %d is not a multiple of %d", size, sectorSize)
	}
	total := size / sectorSize
	if total > 0xffffffff {
		return fatLayout{}, fmt.Errorf("FAT size %d too large", size)
	}
	// FAT32 where it fits with one sector per cluster up to 260 MiB (as
	// mkfs.fat does), 4 KiB clusters above; FAT16 for small volumes.
	spc32 := uint32(1)
	if size > 260<<20 {
		spc32 = 8
	}
	if l, ok := tryLayout(uint32(total), spc32, true); ok {
		return l, nil
	}
	for spc := uint32(1); spc <= 64; spc *= 2 {
		if l, ok := tryLayout(uint32(total), spc, false); ok {
			return l, nil
		}
	}
	return fatLayout{}, fmt.Errorf("no FAT16 or FAT32 layout for %d bytes (too small: at least %d clusters needed)", size, fat16MinClusters)
}

func tryLayout(total, spc uint32, fat32 bool) (fatLayout, bool) {
	l := fatLayout{fat32: fat32, sectorsPerCluster: spc, totalSectors: total}
	entry := uint32(2)
	if fat32 {
		l.reserved = 32
		entry = 4
	} else {
		l.reserved = 4
		l.rootDirSectors = 512 * 32 / sectorSize
	}
	if total <= l.reserved+l.rootDirSectors {
		return l, false
	}
	// An upper bound on the clusters gives a FAT at most a sector too big,
	// which the specification allows.
	maxClusters := (total - l.reserved - l.rootDirSectors) / spc
	l.fatSectors = ((maxClusters+2)*entry + sectorSize - 1) / sectorSize
	used := l.reserved + 2*l.fatSectors + l.rootDirSectors
	if used >= total {
		return l, false
	}
	l.clusters = (total - used) / spc
	if fat32 {
		return l, l.clusters >= fat32MinClusters && l.clusters < 0x0ffffff5
	}
	return l, l.clusters >= fat16MinClusters && l.clusters < fat32MinClusters
}

// fatNode is one file or directory placed on the volume.
type fatNode struct {
	entry    *filetree.Entry
	children []*fatNode
	cluster  uint32
	clusters uint32
	dirBytes []byte // directory contents, built once clusters are known
}

// ErrFATFull is returned when the tree does not fit the volume.
var ErrFATFull = errors.New("FAT volume full")

// WriteFAT writes a FAT volume holding tree (directories and regular files
// only; other kinds are refused) to w at offset off. Files are stored
// contiguously in sorted order. Regions never written stay as they are, so
// w should be zero (a fresh sparse file) across the volume.
func WriteFAT(w io.WriterAt, off int64, v FAT, tree *filetree.Tree) error {
	l, err := layoutFor(v.Size)
	if err != nil {
		return err
	}
	nodes := map[string]*fatNode{}
	var order []*fatNode
	for _, e := range tree.Entries() {
		if e.Kind != filetree.File && e.Kind != filetree.Dir {
			return fmt.Errorf("FAT %s: %s is a %s; FAT holds only files and directories", v.Label, e.Path, e.Kind)
		}
		n := &fatNode{entry: e}
		nodes[e.Path] = n
		order = append(order, n)
		if e.Path != "" {
			parent := path.Dir(e.Path)
			if parent == "." {
				parent = ""
			}
			nodes[parent].children = append(nodes[parent].children, n)
		}
	}
	root := nodes[""]

	// Allocate: directories first (their sizes depend only on names),
	// then file data, so a volume's metadata sits together at the start.
	next := uint32(2)
	alloc := func(bytes int64) (uint32, uint32) {
		n := uint32((bytes + l.clusterBytes() - 1) / l.clusterBytes())
		if n == 0 {
			return 0, 0
		}
		c := next
		next += n
		return c, n
	}
	dirSize := func(n *fatNode) int64 {
		size := int64(0)
		if n != root {
			size += 2 * 32 // "." and ".."
		} else {
			size += 32 // volume label
		}
		names := shortNamer{}
		for _, c := range n.children {
			_, lfn := names.name(c.entry.Name())
			size += int64(32 * (1 + len(lfn)))
		}
		return size
	}
	for _, n := range order {
		if n.entry.Kind != filetree.Dir {
			continue
		}
		size := dirSize(n)
		if n == root && !l.fat32 {
			if size > int64(l.rootDirSectors)*sectorSize {
				return fmt.Errorf("FAT %s: root directory has too many entries", v.Label)
			}
			continue
		}
		n.cluster, n.clusters = alloc(size)
	}
	for _, n := range order {
		if n.entry.Kind == filetree.File {
			n.cluster, n.clusters = alloc(n.entry.Size())
		}
	}
	if next-2 > l.clusters {
		return fmt.Errorf("%w: FAT %s needs %d clusters of %d bytes, has %d", ErrFATFull, v.Label, next-2, l.clusterBytes(), l.clusters)
	}

	// FAT: every allocation is one contiguous chain.
	eoc := uint32(0xffff)
	if l.fat32 {
		eoc = 0x0fffffff
	}
	table := make([]byte, int(l.fatSectors)*sectorSize)
	put := func(i, val uint32) {
		if l.fat32 {
			binary.LittleEndian.PutUint32(table[i*4:], val)
		} else {
			binary.LittleEndian.PutUint16(table[i*2:], uint16(val))
		}
	}
	put(0, eoc&^0xff|0xf8)
	put(1, eoc)
	for _, n := range order {
		for i := uint32(0); i < n.clusters; i++ {
			if i == n.clusters-1 {
				put(n.cluster+i, eoc)
			} else {
				put(n.cluster+i, n.cluster+i+1)
			}
		}
	}

	write := func(b []byte, at int64, what string) error {
		if _, err := w.WriteAt(b, off+at); err != nil {
			return fmt.Errorf("FAT %s: writing %s: %w", v.Label, what, err)
		}
		return nil
	}
	boot := bootSector(l, v)
	if err := write(boot, 0, "boot sector"); err != nil {
		return err
	}
	if l.fat32 {
		info := fsInfo(l.clusters-(next-2), next)
		if err := write(info, sectorSize, "FSInfo"); err != nil {
			return err
		}
		if err := write(boot, 6*sectorSize, "backup boot sector"); err != nil {
			return err
		}
		if err := write(info, 7*sectorSize, "backup FSInfo"); err != nil {
			return err
		}
	}
	for i := int64(0); i < 2; i++ {
		if err := write(table, int64(l.reserved)*sectorSize+i*int64(len(table)), "FAT"); err != nil {
			return err
		}
	}

	stamp := fatTime(v.ModTime)
	for _, n := range order {
		e := n.entry
		switch e.Kind {
		case filetree.Dir:
			parent := uint32(0)
			if n != root {
				p := path.Dir(e.Path)
				if p == "." {
					p = ""
				}
				if nodes[p] != root {
					parent = nodes[p].cluster
				}
			}
			b := dirBytes(n, n == root, parent, v.Label, stamp)
			// The whole directory is written, zeros after the last entry
			// included: a zero entry ends the listing, and a hole there
			// would leave what a flashed device held before (`ballast
			// flash` and bmaptool skip holes).
			at, space := int64(0), int64(0)
			if n == root && !l.fat32 {
				at = int64(l.reserved+2*l.fatSectors) * sectorSize
				space = int64(l.rootDirSectors) * sectorSize
			} else {
				at = l.clusterOffset(n.cluster)
				space = int64(n.clusters) * l.clusterBytes()
			}
			b = append(b, make([]byte, space-int64(len(b)))...)
			if err := write(b, at, "directory /"+e.Path); err != nil {
				return err
			}
		case filetree.File:
			if n.clusters == 0 {
				continue
			}
			if err := copyAt(w, off+l.clusterOffset(n.cluster), e); err != nil {
				return fmt.Errorf("FAT %s: %w", v.Label, err)
			}
		}
	}
	return nil
}

func copyAt(w io.WriterAt, at int64, e *filetree.Entry) error {
	r, err := e.Data.Open()
	if err != nil {
		return fmt.Errorf("opening %s: %w", e.Path, err)
	}
	defer r.Close()
	n, err := io.Copy(io.NewOffsetWriter(w, at), r)
	if err != nil {
		return fmt.Errorf("copying %s: %w", e.Path, err)
	}
	if n != e.Size() {
		return fmt.Errorf("copying %s: read %d bytes, tree says %d", e.Path, n, e.Size())
	}
	return nil
}

func bootSector(l fatLayout, v FAT) []byte {
	b := make([]byte, sectorSize)
	copy(b[3:11], "BALLAST ")
	binary.LittleEndian.PutUint16(b[11:], sectorSize)
	b[13] = byte(l.sectorsPerCluster)
	binary.LittleEndian.PutUint16(b[14:], uint16(l.reserved))
	b[16] = 2
	if !l.fat32 {
		binary.LittleEndian.PutUint16(b[17:], uint16(l.rootDirSectors*sectorSize/32))
	}
	if l.totalSectors < 0x10000 && !l.fat32 {
		binary.LittleEndian.PutUint16(b[19:], uint16(l.totalSectors))
	} else {
		binary.LittleEndian.PutUint32(b[32:], l.totalSectors)
	}
	b[21] = 0xf8
	binary.LittleEndian.PutUint16(b[24:], 63)
	binary.LittleEndian.PutUint16(b[26:], 255)
	binary.LittleEndian.PutUint32(b[28:], v.HiddenSectors)
	label := fatLabel(v.Label)
	ext := 36 // extended BPB
	fsType := "FAT16   "
	if l.fat32 {
		binary.LittleEndian.PutUint32(b[36:], l.fatSectors)
		binary.LittleEndian.PutUint32(b[44:], 2) // root directory cluster
		binary.LittleEndian.PutUint16(b[48:], 1) // FSInfo sector
		binary.LittleEndian.PutUint16(b[50:], 6) // backup boot sector
		ext = 64
		fsType = "FAT32   "
	} else {
		binary.LittleEndian.PutUint16(b[22:], uint16(l.fatSectors))
	}
	b[ext] = 0x80
	b[ext+2] = 0x29
	binary.LittleEndian.PutUint32(b[ext+3:], v.Serial)
	copy(b[ext+7:ext+18], label[:])
	copy(b[ext+18:ext+26], fsType)
	code := ext + 26
	// Jump to the boot code, which asks the BIOS to try the next device
	// (int 0x18) and halts: this volume is not meant to be booted directly.
	b[0], b[1], b[2] = 0xeb, byte(code-2), 0x90
	copy(b[code:], []byte{0xcd, 0x18, 0xeb, 0xfe})
	b[510], b[511] = 0x55, 0xaa
	return b
}

func fsInfo(free, next uint32) []byte {
	b := make([]byte, sectorSize)
	binary.LittleEndian.PutUint32(b[0:], 0x41615252)
	binary.LittleEndian.PutUint32(b[484:], 0x61417272)
	binary.LittleEndian.PutUint32(b[488:], free)
	binary.LittleEndian.PutUint32(b[492:], next)
	binary.LittleEndian.PutUint32(b[508:], 0xaa550000)
	return b
}

func fatLabel(s string) [11]byte {
	var out [11]byte
	for i := range out {
		out[i] = ' '
	}
	if s == "" {
		s = "NO NAME"
	}
	copy(out[:], strings.ToUpper(s))
	return out
}

type dosTime struct{ date, time uint16 }

func fatTime(t time.Time) dosTime {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if t.Year() > 2107 {
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	return dosTime{
		date: uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day()),
		time: uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2),
	}
}

func dirBytes(n *fatNode, isRoot bool, parent uint32, label string, ts dosTime) []byte {
	var out []byte
	if isRoot {
		l := fatLabel(label)
		out = append(out, shortEntry(l, 0x08, 0, 0, ts)...)
	} else {
		out = append(out, shortEntry(dotName("."), 0x10, n.cluster, 0, ts)...)
		out = append(out, shortEntry(dotName(".."), 0x10, parent, 0, ts)...)
	}
	names := shortNamer{}
	for _, c := range n.children {
		short, lfn := names.name(c.entry.Name())
		sum := lfnChecksum(short)
		for i := len(lfn) - 1; i >= 0; i-- {
			ord := byte(i + 1)
			if i == len(lfn)-1 {
				ord |= 0x40
			}
			out = append(out, lfnEntry(ord, sum, lfn[i])...)
		}
		attr := byte(0x20)
		size := uint32(c.entry.Size())
		if c.entry.Kind == filetree.Dir {
			attr, size = 0x10, 0
		}
		out = append(out, shortEntry(short, attr, c.cluster, size, ts)...)
	}
	return out
}

func dotName(s string) [11]byte {
	var b [11]byte
	copy(b[:], s+"          ")
	return b
}

func shortEntry(name [11]byte, attr byte, cluster, size uint32, ts dosTime) []byte {
	b := make([]byte, 32)
	copy(b[0:11], name[:])
	b[11] = attr
	binary.LittleEndian.PutUint16(b[14:], ts.time)
	binary.LittleEndian.PutUint16(b[16:], ts.date)
	binary.LittleEndian.PutUint16(b[18:], ts.date)
	binary.LittleEndian.PutUint16(b[20:], uint16(cluster>>16))
	binary.LittleEndian.PutUint16(b[22:], ts.time)
	binary.LittleEndian.PutUint16(b[24:], ts.date)
	binary.LittleEndian.PutUint16(b[26:], uint16(cluster))
	binary.LittleEndian.PutUint32(b[28:], size)
	return b
}

// lfnEntry holds 13 UTF-16 code units of a long name.
func lfnEntry(ord, sum byte, part []uint16) []byte {
	b := make([]byte, 32)
	b[0] = ord
	b[11] = 0x0f
	b[13] = sum
	offs := []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}
	for i, o := range offs {
		v := uint16(0xffff)
		switch {
		case i < len(part):
			v = part[i]
		case i == len(part):
			v = 0
		}
		binary.LittleEndian.PutUint16(b[o:], v)
	}
	return b
}

func lfnChecksum(name [11]byte) byte {
	var sum byte
	for _, c := range name {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// shortNamer gives each name in one directory its 8.3 alias. Names that are
// already valid upper-case 8.3 names are stored as they are; every other
// name gets a long-name record and a NAME~N alias, numbered in sorted
// order so the result is deterministic.
type shortNamer struct{ used map[[11]byte]bool }

const shortChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~"

func (s *shortNamer) name(long string) ([11]byte, [][]uint16) {
	if s.used == nil {
		s.used = map[[11]byte]bool{}
	}
	var out [11]byte
	for i := range out {
		out[i] = ' '
	}
	base, ext := long, ""
	if i := strings.LastIndexByte(long, '.'); i > 0 {
		base, ext = long[:i], long[i+1:]
	}
	valid := func(s string, max int) bool {
		if len(s) > max {
			return false
		}
		for _, r := range s {
			if !strings.ContainsRune(shortChars, r) {
				return false
			}
		}
		return true
	}
	if base != "" && valid(base, 8) && valid(ext, 3) && strings.Count(long, ".") <= 1 {
		copy(out[0:8], base)
		copy(out[8:11], ext)
		if !s.used[out] {
			s.used[out] = true
			return out, nil
		}
	}
	clean := func(s string, max int) string {
		var b strings.Builder
		for _, r := range strings.ToUpper(s) {
			if b.Len() >= max {
				break
			}
			switch {
			case r == ' ' || r == '.':
			case r < 0x80 && strings.ContainsRune(shortChars, r):
				b.WriteRune(r)
			default:
				b.WriteByte('_')
			}
		}
		return b.String()
	}
	b, e := clean(base, 8), clean(ext, 3)
	if b == "" {
		b = "_"
	}
	for n := 1; ; n++ {
		tail := fmt.Sprintf("~%d", n)
		stem := b
		if len(stem) > 8-len(tail) {
			stem = stem[:8-len(tail)]
		}
		for i := range out {
			out[i] = ' '
		}
		copy(out[0:8], stem+tail)
		copy(out[8:11], e)
		if !s.used[out] {
			break
		}
	}
	s.used[out] = true
	u := utf16.Encode([]rune(long))
	var parts [][]uint16
	for i := 0; i < len(u); i += 13 {
		end := min(i+13, len(u))
		parts = append(parts, u[i:end])
	}
	return out, parts
}

// FATSize returns a volume size (bytes, whole MiB) that holds tree with
// room to spare: the size for the ISO's efi.img.
func FATSize(tree *filetree.Tree) int64 {
	const cluster = 2048 // FAT16 at these sizes uses clusters of 512..2048 bytes
	var need int64
	for _, e := range tree.Entries() {
		need += (e.Size() + cluster - 1) / cluster * cluster
		if e.Kind == filetree.Dir {
			need += cluster * 2
		}
	}
	// FATs, reserved sectors and slack; at least 8 MiB so FAT16's minimum
	// cluster count holds.
	size := need + need/16 + 2<<20
	size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	return max(size, 8<<20)
}
