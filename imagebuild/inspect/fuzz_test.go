package inspect

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/disk"
	"github.com/ballast-os/ballast/imagebuild/iso"
)

// fuzzBase is an image the builder wrote, for FuzzInspect to patch: the
// pristine bytes of its sectors that are not zero (and of the sector after
// each), and a working copy that is patched and restored for each input.
type fuzzBase struct {
	work    *os.File
	path    string
	size    int64
	sectors []int64 // sector numbers the patches address
	orig    map[int64][]byte
}

// fuzzBases builds the three kinds of image Inspect reads, without GRUB
// (which would need grub-mkimage and adds nothing Inspect parses): a GPT
// disk, a Raspberry Pi MBR card and a hybrid ISO. They are sparse files,
// a few hundred KiB on disk.
func fuzzBases(t testing.TB) []*fuzzBase {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys.squashfs")
	if err := os.WriteFile(sys, []byte("hsqs fake"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gptPath, mbrPath, isoPath := filepath.Join(dir, "gpt.img"), filepath.Join(dir, "mbr.img"), filepath.Join(dir, "x.iso")
	err := disk.Write(ctx, gptPath, disk.Layout{
		Boot: boot(t), SystemA: sys, SlotSize: 4 << 20, DataSize: 1 << 20, Arch: "amd64",
		Cmdline: "console=ttyS0", SystemdBootEFI: []byte("MZ"), ModTime: testTime, Seed: "s",
	})
	if err != nil {
		t.Fatal(err)
	}
	bt := boot(t)
	bt.AddFile("config.txt", 0o644, []byte("arm_64bit=1\n"))
	bt.AddFile("cmdline.txt", 0o644, []byte("console=ttyS1 ballast.disk=0badcafe\n"))
	bt.AddFile("bcm2837-rpi-3-b.dtb", 0o644, []byte("d"))
	err = disk.WriteMBR(ctx, mbrPath, disk.MBRLayout{
		Boot: bt, SystemA: sys, SlotSize: 8 << 20, DataSize: 4 << 20, Signature: 0x0badcafe, ModTime: testTime, Seed: "t",
	})
	if err != nil {
		t.Fatal(err)
	}
	err = iso.Write(ctx, isoPath, iso.Layout{
		Files: boot(t), System: sys, Arch: "amd64", Cmdline: "console=ttyS0",
		SystemdBootEFI: []byte("MZ"), ModTime: testTime, Seed: "s",
	})
	if err != nil {
		t.Fatal(err)
	}
	var bases []*fuzzBase
	for _, p := range []string{gptPath, mbrPath, isoPath} {
		bases = append(bases, newFuzzBase(t, p))
	}
	return bases
}

func newFuzzBase(t testing.TB, p string) *fuzzBase {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := &fuzzBase{work: f, path: p, size: st.Size(), orig: map[int64][]byte{}}
	buf := make([]byte, 1<<20)
	zero := make([]byte, 512)
	for off := int64(0); off < st.Size(); off += int64(len(buf)) {
		n, _ := f.ReadAt(buf, off)
		for i := 0; i+512 <= n; i += 512 {
			if !bytes.Equal(buf[i:i+512], zero) {
				s := (off + int64(i)) / 512
				for _, s := range []int64{s, s + 1} {
					if _, ok := b.orig[s]; !ok && s*512 < st.Size() {
						b.orig[s] = nil
						b.sectors = append(b.sectors, s)
					}
				}
			}
		}
	}
	for s := range b.orig {
		sec := make([]byte, 512)
		f.ReadAt(sec, s*512)
		b.orig[s] = sec
	}
	return b
}

// patch applies the patches in p: records of a sector (an index into
// the base's sectors), an offset in it (in 2-byte steps), a length and
// that many bytes, which may run on into the following sectors. It
// returns the sectors to restore.
func (b *fuzzBase) patch(p []byte) []int64 {
	var touched []int64
	for len(p) >= 3 {
		s := b.sectors[int(p[0])%len(b.sectors)]
		off, n := s*512+int64(p[1])*2, int(p[2])
		p = p[3:]
		n = min(n, len(p))
		b.work.WriteAt(p[:n], off)
		for x := off / 512; x <= (off+int64(n))/512; x++ {
			touched = append(touched, x)
		}
		p = p[n:]
	}
	return touched
}

func (b *fuzzBase) restore(sectors []int64) {
	zero := make([]byte, 512)
	for _, s := range sectors {
		if o, ok := b.orig[s]; ok {
			b.work.WriteAt(o, s*512)
		} else if s*512 < b.size {
			b.work.WriteAt(zero, s*512)
		}
	}
	b.work.Truncate(b.size) // a patch of the last sector may run past it
}

// fixGPTCRCs recomputes the primary GPT header's entry array CRC and its
// own, so that the fuzzer gets past the checksums to the fields they
// protect.
func (b *fuzzBase) fixGPTCRCs() []int64 {
	h := make([]byte, 512)
	b.work.ReadAt(h, 512)
	entLBA := binary.LittleEndian.Uint64(h[72:])
	if n := uint64(binary.LittleEndian.Uint32(h[80:])) * uint64(binary.LittleEndian.Uint32(h[84:])); n <= 1<<20 && entLBA < 1<<20 {
		arr := make([]byte, n)
		b.work.ReadAt(arr, int64(entLBA)*512)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
	}
	clear(h[16:20])
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
	b.work.WriteAt(h, 512)
	return []int64{1}
}

// TestInspectRefusesCorruptImages: fields go-diskfs would trust are
// checked first, with an error that says what is wrong.
func TestInspectRefusesCorruptImages(t *testing.T) {
	bases := fuzzBases(t)
	gptDisk, card := bases[0], bases[1]
	mbr := card.orig[0]
	fatStart := int64(binary.LittleEndian.Uint32(mbr[446+8:])) * 512
	for _, tc := range []struct {
		name string
		b    *fuzzBase
		off  int64
		data []byte
		want string
	}{
		// 2^31 entries: go-diskfs would allocate 256 GiB.
		{"GPT entry count", gptDisk, 512 + 80, []byte{0, 0, 0, 0x80}, "2147483648 partition entries"},
		// A FAT32 of 2^32-1 sectors per FAT.
		{"FAT size", card, fatStart + 36, []byte{0xff, 0xff, 0xff, 0xff}, "do not fit a volume"},
		// Cluster 9 points at itself in both FATs: go-diskfs would follow
		// it until memory runs out.
		{"FAT loop", card, -1, nil, "cluster chain through cluster 9 loops"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.b
			var touched []int64
			if tc.off >= 0 {
				b.work.WriteAt(tc.data, tc.off)
				touched = append(touched, tc.off/512)
			} else {
				bs := b.orig[fatStart/512]
				reserved := int64(binary.LittleEndian.Uint16(bs[14:]))
				fatBytes := int64(binary.LittleEndian.Uint32(bs[36:])) * 512
				for _, fat := range []int64{fatStart + reserved*512, fatStart + reserved*512 + fatBytes} {
					b.work.WriteAt([]byte{9, 0, 0, 0}, fat+4*9)
					touched = append(touched, (fat+4*9)/512)
				}
			}
			if b == gptDisk {
				touched = append(touched, b.fixGPTCRCs()...)
			}
			defer b.restore(touched)
			_, err := Inspect(b.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// FuzzInspect: Inspect reads images whose structures the fuzzer patched
// (the MBR, GPT headers and entries, FAT boot sectors, FATs, directories,
// the ISO's volume descriptors, boot catalog and directory records, the
// files' contents) or any bytes at all as a whole image. No input may
// panic, hang, or make it allocate without bound.
func FuzzInspect(f *testing.F) {
	bases := fuzzBases(f)
	raw := filepath.Join(f.TempDir(), "raw.img")
	for k := range bases {
		f.Add(uint8(k), []byte{})
	}
	// A patch of the GPT header's entry count, of a FAT boot sector's
	// sectors per cluster; a garbage image; an ISO signature alone.
	f.Add(uint8(0x10), []byte{1, 40, 4, 0xff, 0xff, 0xff, 0x7f})
	f.Add(uint8(1), []byte{2, 6, 1, 0})
	f.Add(uint8(3), bytes.Repeat([]byte{0xab}, 1024))
	cd := make([]byte, 16*2048+8)
	copy(cd[16*2048:], "\x01CD001\x01")
	f.Add(uint8(3), cd)
	f.Fuzz(func(t *testing.T, kind uint8, p []byte) {
		path := raw
		if int(kind)%4 < len(bases) {
			b := bases[int(kind)%4]
			touched := b.patch(p)
			if kind&0x10 != 0 && int(kind)%4 == 0 {
				touched = append(touched, b.fixGPTCRCs()...)
			}
			defer b.restore(touched)
			path = b.path
		} else if err := os.WriteFile(raw, p, 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		timer := time.AfterFunc(10*time.Second, func() {
			select {
			case <-done:
			default:
				buf := make([]byte, 1<<20)
				panic("Inspect still running after 10 s:\n" + string(buf[:runtime.Stack(buf, true)]))
			}
		})
		r, err := Inspect(path)
		close(done)
		timer.Stop()
		if err == nil && r == nil {
			t.Fatal("no report and no error")
		}
		if err == nil {
			var out bytes.Buffer
			if err := r.WriteText(&out); err != nil {
				t.Fatal(err)
			}
		}
	})
}
