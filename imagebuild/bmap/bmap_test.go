package bmap

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// sparseGPT writes a 64 MiB sparse image with a GPT of three partitions
// (2..10 MiB, 10..40 MiB, 40..63 MiB) and 64 KiB of data 3 MiB in.
func sparseGPT(t *testing.T) (*os.File, []byte) {
	t.Helper()
	const size = 64 * MiB
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: "11111111-2222-3333-4444-555555555555"}
	for i, p := range [][2]uint64{{2, 10}, {10, 40}, {40, 63}} {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1, Start: p[0] * 2048, End: p[1]*2048 - 1, Size: (p[1] - p[0]) * MiB,
			Type: gpt.LinuxFilesystem, Name: "P", GUID: "11111111-2222-3333-4444-55555555555" + string(rune('0'+i)),
		})
	}
	if err := table.Write(f, size); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("ballast!"), 64<<10/8)
	if _, err := f.WriteAt(data, 3*MiB); err != nil {
		t.Fatal(err)
	}
	return f, data
}

func TestMapSparseGPT(t *testing.T) {
	f, _ := sparseGPT(t)
	spans, err := Map(f, BlockSize)
	if err != nil {
		t.Fatal(err)
	}
	// The first MiB (MBR, GPT), partition 1's first MiB (2..3 MiB) and its
	// data (3 MiB + 64 KiB) join; partitions 2 and 3 get their first MiB;
	// the last MiB holds the backup GPT. Nothing else: the rest are holes.
	want := []Span{
		{0, MiB},
		{2 * MiB, MiB + 64<<10},
		{10 * MiB, MiB},
		{40 * MiB, MiB},
		{63 * MiB, MiB},
	}
	if !slices.Equal(spans, want) {
		t.Errorf("Map:\n got %v\nwant %v", spans, want)
	}
}

func TestKeySpansMBR(t *testing.T) {
	mbr := make([]byte, 512)
	put := func(i int, typ byte, start, n uint32) {
		e := mbr[446+16*i:]
		e[4] = typ
		binary.LittleEndian.PutUint32(e[8:], start)
		binary.LittleEndian.PutUint32(e[12:], n)
	}
	put(0, 0x0c, 2048, 4096) // 1 MiB, 2 MiB long
	put(1, 0x83, 6144, 1024) // 3 MiB, 512 KiB long: only that much
	put(3, 0x83, 8192, 8192) // 4 MiB
	mbr[510], mbr[511] = 0x55, 0xaa
	img := make([]byte, 8*MiB)
	copy(img, mbr)
	got, err := KeySpans(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Span{{0, MiB}, {7 * MiB, MiB}, {MiB, MiB}, {3 * MiB, 512 << 10}, {4 * MiB, MiB}}
	if !slices.Equal(got, want) {
		t.Errorf("KeySpans:\n got %v\nwant %v", got, want)
	}
	// A partition past the image is refused, not skipped.
	binary.LittleEndian.PutUint32(img[446+16*3+12:], 1<<20)
	if _, err := KeySpans(bytes.NewReader(img), int64(len(img))); err == nil {
		t.Error("an MBR partition past the image's end was accepted")
	}
	// No table at all: the first and last MiB.
	if got, err := KeySpans(bytes.NewReader(make([]byte, 3*MiB)), 3*MiB); err != nil || !slices.Equal(got, []Span{{0, MiB}, {2 * MiB, MiB}}) {
		t.Errorf("no table: %v, %v", got, err)
	}
}

func TestFileRoundTrip(t *testing.T) {
	f, data := sparseGPT(t)
	b, err := Create(f)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Mapped(), int64(5*MiB+64<<10); got != want {
		t.Errorf("mapped %d bytes, want %d", got, want)
	}
	text := b.Marshal()
	back, err := Parse(text)
	if err != nil {
		t.Fatalf("Parse(Marshal()): %v\n%s", err, text)
	}
	if back.ImageSize != b.ImageSize || back.BlockSize != b.BlockSize || !slices.Equal(back.Ranges, b.Ranges) {
		t.Errorf("round trip: got %+v, want %+v", back, b)
	}
	// The range holding the data has its checksum.
	r := b.Ranges[1]
	if sum, _ := Checksum(bytes.NewReader(append(make([]byte, MiB), data...)), Span{0, b.Span(r).Len}); sum != r.SHA256 {
		t.Errorf("range %+v: checksum %s, want %s", r, r.SHA256, sum)
	}
	// Any edit breaks the file's own checksum.
	edited := bytes.Replace(text, []byte("<Range chksum"), []byte("<Range  chksum"), 1)
	if _, err := Parse(edited); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("edited map: %v", err)
	}
}

func TestWriteFor(t *testing.T) {
	f, _ := sparseGPT(t)
	if err := WriteFor(f.Name()); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(f.Name() + ".bmap")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(text)
	if err != nil || b.ImageSize != 64*MiB || len(b.Ranges) != 5 {
		t.Fatalf("written map: %+v, %v", b, err)
	}
}

func TestParseRefuses(t *testing.T) {
	f, _ := sparseGPT(t)
	b, _ := Create(f)
	for name, edit := range map[string]func(*File){
		"overlap":       func(b *File) { b.Ranges[1].First = b.Ranges[0].Last },
		"past the end":  func(b *File) { b.Ranges[len(b.Ranges)-1].Last = b.ImageSize / BlockSize },
		"bad checksum":  func(b *File) { b.Ranges[0].SHA256 = "abc" },
		"reversed":      func(b *File) { b.Ranges[2].Last = b.Ranges[2].First - 1 },
		"odd blocksize": func(b *File) { b.BlockSize = 1000 },
	} {
		c := *b
		c.Ranges = slices.Clone(b.Ranges)
		edit(&c)
		if _, err := Parse(c.Marshal()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	v1 := bytes.Replace(b.Marshal(), []byte(`version="2.0"`), []byte(`version="1.4"`), 1)
	if _, err := Parse(v1); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("version 1.4: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	img := &File{ImageSize: 10 * BlockSize, BlockSize: BlockSize, Ranges: []Range{
		{0, 1, strings.Repeat("a", 64)}, {5, 5, strings.Repeat("b", 64)},
	}}
	f.Add(img.Marshal())
	f.Add([]byte(`<bmap version="2.0"><ImageSize>1</ImageSize></bmap>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(data)
		if err != nil {
			return
		}
		next := int64(0)
		for _, r := range b.Ranges {
			s := b.Span(r)
			if r.First < next || s.Len <= 0 || s.End() > b.ImageSize {
				t.Fatalf("accepted range %+v (span %+v) of a %d-byte image", r, s, b.ImageSize)
			}
			next = r.Last + 1
		}
	})
}
