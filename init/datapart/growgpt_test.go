package datapart

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/ballast-os/ballast/init/fsprobe"
)

// sparseDisk is an in-memory disk for GrowGPT (a backend.WritableFile):
// base is the image as flashed, shared and never written; written sectors
// go to an overlay; past base the disk reads as zeros up to size. A write
// past the end fails, as on a block device.
type sparseDisk struct {
	base    []byte
	size    int64
	overlay map[int64][]byte // 512-byte sector number -> contents
	off     int64
}

func newSparseDisk(base []byte, size int64) *sparseDisk {
	return &sparseDisk{base: base, size: size, overlay: map[int64][]byte{}}
}

func (d *sparseDisk) sector(n int64) []byte {
	if s, ok := d.overlay[n]; ok {
		return s
	}
	s := make([]byte, 512)
	if off := n * 512; off < int64(len(d.base)) {
		copy(s, d.base[off:])
	}
	return s
}

func (d *sparseDisk) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(b) && off+int64(n) < d.size { // size is whole sectors
		pos := off + int64(n)
		n += copy(b[n:], d.sector(pos / 512)[pos%512:])
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (d *sparseDisk) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > d.size {
		return 0, errors.New("write past the end of the disk")
	}
	for n := 0; n < len(b); {
		pos := off + int64(n)
		s := d.sector(pos / 512)
		n += copy(s[pos%512:], b[n:])
		d.overlay[pos/512] = s
	}
	return len(b), nil
}

func (d *sparseDisk) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += d.off
	case io.SeekEnd:
		off += d.size
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	d.off = off
	return off, nil
}

func (d *sparseDisk) Read(b []byte) (int, error) {
	n, err := d.ReadAt(b, d.off)
	d.off += int64(n)
	return n, err
}

func (d *sparseDisk) Stat() (fs.FileInfo, error) { return diskInfo{d.size}, nil }
func (d *sparseDisk) Close() error               { return nil }

type diskInfo struct{ size int64 }

func (i diskInfo) Name() string       { return "disk" }
func (i diskInfo) Size() int64        { return i.size }
func (i diskInfo) Mode() fs.FileMode  { return 0o600 }
func (i diskInfo) ModTime() time.Time { return time.Time{} }
func (i diskInfo) IsDir() bool        { return false }
func (i diskInfo) Sys() any           { return nil }

// The fuzzed image: 4 MiB with a boot and a data partition, as the image
// builder lays them out.
const (
	fuzzImageSize = 4 * mib
	fuzzSectors   = fuzzImageSize / 512
)

func fuzzImage(t testing.TB) []byte {
	d := newSparseDisk(nil, fuzzImageSize)
	tab := &gpt.Table{
		LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		GUID: "6C1F5A2E-3B1D-4D0F-9E55-2E1C0A6B7D11",
		Partitions: []*gpt.Partition{
			{Start: 2048, End: 4095, Type: gpt.EFISystemPartition, Name: "BALLAST_BOOT", Index: 1,
				GUID: "0B6C2D8E-1A7F-4E5B-8C3D-9F2A1B0C4D51"},
			{Start: 4096, End: 6143, Type: gpt.LinuxFilesystem, Name: "BALLAST_DATA", Index: 2,
				GUID: "5E4D3C2B-1A09-4F8E-9D7C-6B5A4F3E2D1C"},
		},
	}
	if err := tab.Write(d, fuzzImageSize); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, fuzzImageSize)
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// fuzzRegions say where the fuzzed bytes go: sectors 0-2 (protective MBR,
// primary header, the first four primary entries), then the backup's
// first entry sector and the backup header at the image's end.
var fuzzRegions = []int64{0, 1, 2, fuzzSectors - 33, fuzzSectors - 1}

// fixCRCs recomputes the entry array's and the header's CRC32 of the
// header at sector lba, where its fields allow, so that the fuzzer gets
// past the checksums to what they protect.
func fixCRCs(d *sparseDisk, lba int64) {
	h := d.sector(lba)
	entLBA := binary.LittleEndian.Uint64(h[72:])
	count, esize := binary.LittleEndian.Uint32(h[80:]), binary.LittleEndian.Uint32(h[84:])
	if n := uint64(count) * uint64(esize); n <= 1<<20 && entLBA < uint64(d.size)/512 {
		arr := make([]byte, n)
		d.ReadAt(arr, int64(entLBA)*512)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
	}
	hsize := int(binary.LittleEndian.Uint32(h[12:]))
	if hsize < 20 || hsize > 512 {
		hsize = 92
	}
	clear(h[16:20])
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hsize]))
	d.WriteAt(h, lba*512)
}

// TestGrowGPTRefusesImplausibleHeaders: go-diskfs allocates the entry
// array the header describes (count × size, which overflows into a panic,
// or asks for hundreds of GiB) and rewrites tables it cannot describe;
// GrowGPT refuses such headers, and partitions past a smaller disk, with
// an error instead.
func TestGrowGPTRefusesImplausibleHeaders(t *testing.T) {
	base := fuzzImage(t)
	for _, tc := range []struct {
		name        string
		count, size uint32
		diskSize    int64
		want        string
	}{
		{"count × size overflows", 0xffffffff, 0xffffffff, fuzzImageSize, "entries of 4294967295 bytes"},
		{"256 GiB of entries", 1 << 31, 128, fuzzImageSize, "2147483648 entries"},
		{"partition past a smaller disk", 128, 128, 3 * mib, "partition #2 (LBA 4096-6143) is not within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newSparseDisk(base, tc.diskSize)
			h := d.sector(1)
			binary.LittleEndian.PutUint32(h[80:], tc.count)
			binary.LittleEndian.PutUint32(h[84:], tc.size)
			d.WriteAt(h, 512)
			fixCRCs(d, 1)
			_, err := GrowGPT(d, tc.diskSize, 512, "BALLAST_DATA")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
			if len(d.overlay) != 1 {
				t.Errorf("%d sectors written", len(d.overlay)-1)
			}
		})
	}
}

// A primary GPT that is invalid where the backup is fine, on a disk the
// data partition already fills: gpt.Read falls back to the backup, and
// GrowGPT rewrites the primary (the kernel and fsprobe read only that)
// instead of reporting nothing to do.
func TestGrowGPTRewritesInvalidPrimary(t *testing.T) {
	d := newSparseDisk(fuzzImage(t), fuzzImageSize)
	d.WriteAt([]byte("X"), 512)
	res, err := GrowGPT(d, fuzzImageSize, 512, "BALLAST_DATA")
	if err != nil || res.Grew {
		t.Fatalf("res = %+v, %v", res, err)
	}
	if parts, err := fsprobe.ReadGPT(d, 512); err != nil || len(parts) != 2 {
		t.Fatalf("primary GPT after GrowGPT: %v, %v", parts, err)
	}
}

// FuzzGrowGPT: GrowGPT reads a GPT whose first sectors and backup area
// the fuzzer rewrote, on a disk grown by some sectors (none: the backup
// is read from the fuzzed area; more: it lies beyond the image, zeroed).
// No input may panic or allocate without bound; when GrowGPT succeeds, the
// table read back is valid at both ends, and the data partition ends
// within the disk, as init's own GPT reader (fsprobe) also finds it.
func FuzzGrowGPT(f *testing.F) {
	base := fuzzImage(f)
	seed := make([]byte, len(fuzzRegions)*512)
	for i, lba := range fuzzRegions {
		copy(seed[i*512:], base[lba*512:])
	}
	f.Add(seed, uint32(4096), uint8(0)) // flashed to a 6 MiB disk
	f.Add(seed, uint32(0), uint8(0))    // the image's own size: full already
	f.Add(seed[:1024], uint32(1), uint8(0))
	f.Add(seed[:512], uint32(8192), uint8(3))
	f.Add([]byte{}, uint32(0), uint8(3)) // primary and backup as written
	f.Fuzz(func(t *testing.T, b []byte, grow uint32, fix uint8) {
		size := int64(fuzzImageSize) + int64(grow%(1<<16))*512
		d := newSparseDisk(base, size)
		for i, lba := range fuzzRegions {
			if len(b) <= i*512 {
				break
			}
			d.WriteAt(b[i*512:min(len(b), (i+1)*512)], lba*512)
		}
		if fix&1 != 0 {
			fixCRCs(d, 1)
		}
		if fix&2 != 0 {
			fixCRCs(d, fuzzSectors-1)
		}
		res, err := GrowGPT(d, size, 512, "BALLAST_DATA")
		if err != nil {
			return
		}
		sectors := uint64(size / 512)
		tab, err := gpt.Read(d, 512, 512)
		if err != nil {
			t.Fatalf("GrowGPT succeeded (%+v) but the GPT does not read back: %v", res, err)
		}
		if tab.RecoveredFromBackup {
			t.Fatalf("GrowGPT succeeded (%+v) but the primary GPT is invalid", res)
		}
		if err := tab.Verify(d, uint64(size)); err != nil {
			t.Fatalf("GrowGPT succeeded (%+v) but the backup GPT is not at the disk's end: %v", res, err)
		}
		var data *gpt.Partition
		for _, p := range tab.Partitions {
			if p.Name == "BALLAST_DATA" {
				data = p
			}
		}
		if data == nil || data.Index != res.Index || data.Start != res.Start || data.End != res.NewEnd {
			t.Fatalf("data partition read back: %+v; GrowGPT said %+v", data, res)
		}
		if data.Start > data.End || data.End > tab.LastDataSector() || data.End >= sectors {
			t.Fatalf("data partition %d-%d on a disk of %d sectors (last usable %d)", data.Start, data.End, sectors, tab.LastDataSector())
		}
		parts, err := fsprobe.ReadGPT(d, 512)
		if err != nil {
			t.Fatalf("fsprobe cannot read the grown GPT: %v", err)
		}
		for _, p := range parts {
			if p.Name == "BALLAST_DATA" && (p.Number != res.Index || p.LastLBA != res.NewEnd) {
				t.Fatalf("fsprobe finds the data partition as %+v; GrowGPT said %+v", p, res)
			}
		}
	})
}
