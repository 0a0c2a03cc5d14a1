package bmap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
)

// Ext is the block map's suffix: out/ballast-x86_64.img.bmap, where
// `bmaptool copy out/ballast-x86_64.img /dev/sdX` finds it by itself.
const Ext = ".bmap"

// PathFor returns the block map's path for an image.
func PathFor(image string) string { return image + Ext }

// Range is the mapped blocks First..Last (inclusive) and the SHA-256 of
// their bytes in the image (the last block only up to the image's end).
type Range struct {
	First, Last int64
	SHA256      string
}

// File is a block map.
type File struct {
	ImageSize int64
	BlockSize int64
	Ranges    []Range
}

// Span returns the bytes r covers in the image.
func (b *File) Span(r Range) Span {
	off := r.First * b.BlockSize
	return Span{off, min((r.Last+1)*b.BlockSize, b.ImageSize) - off}
}

// Mapped is the number of bytes the ranges cover.
func (b *File) Mapped() int64 {
	var n int64
	for _, r := range b.Ranges {
		n += b.Span(r).Len
	}
	return n
}

// Create maps the image f (Map) and checksums every range.
func Create(f *os.File) (*File, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	spans, err := Map(f, BlockSize)
	if err != nil {
		return nil, err
	}
	b := &File{ImageSize: st.Size(), BlockSize: BlockSize}
	for _, s := range spans {
		sum, err := Checksum(f, s)
		if err != nil {
			return nil, fmt.Errorf("bmap: reading %s: %w", f.Name(), err)
		}
		b.Ranges = append(b.Ranges, Range{First: s.Off / BlockSize, Last: (s.End() - 1) / BlockSize, SHA256: sum})
	}
	return b, nil
}

// WriteFor writes the block map of the image at path to PathFor(path),
// through a temporary file renamed when complete.
func WriteFor(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := Create(f)
	if err != nil {
		return err
	}
	out := PathFor(path)
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("bmap: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b.Marshal()); err != nil {
		tmp.Close()
		return fmt.Errorf("bmap: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("bmap: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("bmap: %w", err)
	}
	return os.Rename(tmp.Name(), out)
}

const zeroSum = "0000000000000000000000000000000000000000000000000000000000000000"

// Marshal writes the map as bmaptool's format 2.0 with SHA-256 checksums;
// BmapFileChecksum is the SHA-256 of the file as written with that field
// all zeros.
func (b *File) Marshal() []byte {
	var w bytes.Buffer
	blocks := (b.ImageSize + b.BlockSize - 1) / b.BlockSize
	var mappedBlocks int64
	for _, r := range b.Ranges {
		mappedBlocks += r.Last - r.First + 1
	}
	pct := 0.0
	if blocks > 0 {
		pct = float64(mappedBlocks) * 100 / float64(blocks)
	}
	fmt.Fprintf(&w, `<?xml version="1.0" ?>
<!-- The block map of a ballast disk image, in bmaptool's format: the blocks
     that hold data, and the blocks whose zeros must reach the device (the
     partition tables and the first MiB of every partition). The other
     blocks are holes: neither 'ballast flash' nor 'bmaptool copy' writes
     them, which is what makes a large sparse image flash fast. -->
<bmap version="2.0">
    <!-- Image size in bytes: %s -->
    <ImageSize> %d </ImageSize>
    <!-- Size of a block in bytes -->
    <BlockSize> %d </BlockSize>
    <!-- Count of blocks in the image file -->
    <BlocksCount> %d </BlocksCount>
    <!-- Count of mapped blocks: %s or %.1f%% -->
    <MappedBlocksCount> %d </MappedBlocksCount>
    <!-- Type of checksum used in this file -->
    <ChecksumType> sha256 </ChecksumType>
    <!-- The checksum of this bmap file. When it is calculated, the value of
         the checksum has to be zero (all ASCII "0" symbols). -->
    <BmapFileChecksum> %s </BmapFileChecksum>
    <!-- The mapped ranges of blocks; 'chksum' is the SHA-256 of a range's bytes. -->
    <BlockMap>
`, humanize.IBytes(uint64(b.ImageSize)), b.ImageSize, b.BlockSize, blocks,
		humanize.IBytes(uint64(mappedBlocks*b.BlockSize)), pct, mappedBlocks, zeroSum)
	for _, r := range b.Ranges {
		span := strconv.FormatInt(r.First, 10)
		if r.Last != r.First {
			span += "-" + strconv.FormatInt(r.Last, 10)
		}
		fmt.Fprintf(&w, "        <Range chksum=\"%s\"> %s </Range>\n", r.SHA256, span)
	}
	w.WriteString("    </BlockMap>\n</bmap>\n")
	sum := sha256.Sum256(w.Bytes())
	return bytes.Replace(w.Bytes(), []byte(zeroSum), []byte(hex.EncodeToString(sum[:])), 1)
}

type xmlFile struct {
	XMLName           xml.Name `xml:"bmap"`
	Version           string   `xml:"version,attr"`
	ImageSize         string   `xml:"ImageSize"`
	BlockSize         string   `xml:"BlockSize"`
	BlocksCount       string   `xml:"BlocksCount"`
	MappedBlocksCount string   `xml:"MappedBlocksCount"`
	ChecksumType      string   `xml:"ChecksumType"`
	BmapFileChecksum  string   `xml:"BmapFileChecksum"`
	Ranges            []struct {
		Chksum string `xml:"chksum,attr"`
		Text   string `xml:",chardata"`
	} `xml:"BlockMap>Range"`
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// maxRanges bounds what Parse accepts (a map of a 2 TiB image in 4 KiB
// blocks with every other block a hole would have 2^28; real ones have
// dozens).
const maxRanges = 1 << 20

// Parse reads a block map in bmaptool's format 2.x with SHA-256
// checksums, and checks its own checksum and that its ranges are in
// order, apart, and inside the image.
func Parse(data []byte) (*File, error) {
	var x xmlFile
	if err := xml.Unmarshal(data, &x); err != nil {
		return nil, fmt.Errorf("bmap: %w", err)
	}
	if major, _, _ := strings.Cut(x.Version, "."); major != "2" {
		return nil, fmt.Errorf("bmap: format version %q: want 2.x", x.Version)
	}
	if t := strings.TrimSpace(x.ChecksumType); t != "sha256" {
		return nil, fmt.Errorf("bmap: checksum type %q: want sha256", t)
	}
	sum := strings.TrimSpace(x.BmapFileChecksum)
	if !sha256RE.MatchString(sum) {
		return nil, fmt.Errorf("bmap: BmapFileChecksum %q is not a SHA-256", sum)
	}
	got := sha256.Sum256(bytes.Replace(data, []byte(sum), []byte(zeroSum), 1))
	if hex.EncodeToString(got[:]) != sum {
		return nil, fmt.Errorf("bmap: the file's checksum does not match its content (edited or truncated)")
	}
	num := func(what, s string) (int64, error) {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bmap: %s %q is not a count", what, strings.TrimSpace(s))
		}
		return n, nil
	}
	b := &File{}
	var err error
	if b.ImageSize, err = num("ImageSize", x.ImageSize); err != nil {
		return nil, err
	}
	if b.BlockSize, err = num("BlockSize", x.BlockSize); err != nil {
		return nil, err
	}
	if b.BlockSize == 0 || b.BlockSize%512 != 0 || b.BlockSize > 1<<30 {
		return nil, fmt.Errorf("bmap: block size %d: want a multiple of 512", b.BlockSize)
	}
	blocks, err := num("BlocksCount", x.BlocksCount)
	if err != nil {
		return nil, err
	}
	if want := (b.ImageSize + b.BlockSize - 1) / b.BlockSize; blocks != want {
		return nil, fmt.Errorf("bmap: %d blocks, but a %d-byte image has %d", blocks, b.ImageSize, want)
	}
	mapped, err := num("MappedBlocksCount", x.MappedBlocksCount)
	if err != nil {
		return nil, err
	}
	if len(x.Ranges) > maxRanges {
		return nil, fmt.Errorf("bmap: %d ranges (at most %d)", len(x.Ranges), maxRanges)
	}
	var count int64
	next := int64(0)
	for i, xr := range x.Ranges {
		first, last, ok := strings.Cut(strings.TrimSpace(xr.Text), "-")
		if !ok {
			last = first
		}
		r := Range{SHA256: xr.Chksum}
		if r.First, err = num(fmt.Sprintf("range %d", i+1), first); err != nil {
			return nil, err
		}
		if r.Last, err = num(fmt.Sprintf("range %d", i+1), last); err != nil {
			return nil, err
		}
		if r.First < next || r.Last < r.First || r.Last >= blocks {
			return nil, fmt.Errorf("bmap: range %d (%d-%d) overlaps the one before, is reversed, or ends past block %d", i+1, r.First, r.Last, blocks-1)
		}
		if !sha256RE.MatchString(r.SHA256) {
			return nil, fmt.Errorf("bmap: range %d: chksum %q is not a SHA-256", i+1, r.SHA256)
		}
		next = r.Last + 1
		count += r.Last - r.First + 1
		b.Ranges = append(b.Ranges, r)
	}
	if count != mapped {
		return nil, fmt.Errorf("bmap: the ranges map %d blocks, MappedBlocksCount says %d", count, mapped)
	}
	return b, nil
}
