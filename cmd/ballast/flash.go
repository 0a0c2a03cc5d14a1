package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/dustin/go-humanize"

	"github.com/ballast-os/ballast/imagebuild/bmap"
)

// flasher writes an image to a device. The paths into /proc and /sys are
// fields so tests point them at fakes.
type flasher struct {
	env       Env
	mountInfo string // /proc/self/mountinfo
	swaps     string // /proc/swaps
	sysDev    string // /sys/dev/block
	yes       bool
	// bmap is the block map --bmap names; "" looks for IMAGE.bmap.
	bmap string
	// terminal draws a redrawn progress line instead of quiet lines.
	terminal bool
}

func runFlash(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "flash", "[--yes] [--bmap FILE] IMAGE DEVICE")
	yes := fs.Bool("yes", false, "do not ask before overwriting DEVICE")
	bmapPath := fs.String("bmap", "", "the image's block map (default: IMAGE.bmap when it exists, else the image's holes)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return fmt.Errorf("%w: name an image and a device (ballast flash out/ballast-rpi4.img /dev/sdX)", errUsage)
	}
	f := &flasher{env: env, mountInfo: "/proc/self/mountinfo", swaps: "/proc/swaps", sysDev: "/sys/dev/block", yes: *yes, bmap: *bmapPath}
	if fd, ok := env.Stderr.(interface{ Fd() uintptr }); ok {
		f.terminal = term.IsTerminal(int(fd.Fd()))
	}
	return f.flash(ctx, fs.Arg(0), fs.Arg(1))
}

// ErrDeviceInUse is returned for a target that is mounted, used as swap,
// held by device-mapper or RAID, or the disk the host runs from.
var ErrDeviceInUse = errors.New("device in use")

func (f *flasher) flash(ctx context.Context, image, device string) error {
	img, err := os.Open(image)
	if err != nil {
		return fmt.Errorf("flash: %w", err)
	}
	defer img.Close()
	ist, err := img.Stat()
	if err != nil {
		return fmt.Errorf("flash: %w", err)
	}
	if !ist.Mode().IsRegular() {
		return fmt.Errorf("flash: %s is not an image file", image)
	}
	size := ist.Size()
	plan, err := f.plan(img, image, size)
	if err != nil {
		return err
	}

	dst, err := os.Stat(device)
	if err != nil {
		return fmt.Errorf("flash: %w", err)
	}
	block := dst.Mode()&os.ModeDevice != 0 && dst.Mode()&os.ModeCharDevice == 0
	what := device
	if block {
		if err := f.checkUnused(device, dst); err != nil {
			return err
		}
		devSize, err := blockSize(device)
		if err != nil {
			return fmt.Errorf("flash: %w", err)
		}
		if devSize < size {
			return fmt.Errorf("flash: %s holds %d bytes, the image needs %d", device, devSize, size)
		}
		what = fmt.Sprintf("%s (%s%s)", device, humanize.IBytes(uint64(devSize)), f.model(dst))
	} else if !dst.Mode().IsRegular() {
		return fmt.Errorf("flash: %s is neither a block device nor a file", device)
	} else if os.SameFile(ist, dst) {
		return fmt.Errorf("flash: %s and %s are the same file", image, device)
	}

	if !f.yes {
		fmt.Fprintf(f.env.Stderr, "This erases everything on %s and writes %s (%s).\nType yes to continue: ", what, image, humanize.IBytes(uint64(size)))
		answer, _ := bufio.NewReader(f.env.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "yes" && a != "y" {
			return fmt.Errorf("flash: not confirmed; %s left as it was", device)
		}
	}

	// O_EXCL on a block device: the kernel refuses it (EBUSY) while
	// anything mounts or holds it, whatever the checks above missed.
	out, err := os.OpenFile(device, os.O_WRONLY|os.O_EXCL, 0)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("flash: %w: the kernel says %s is busy (mounted, swap, or held): nothing written", ErrDeviceInUse, device)
	} else if err != nil {
		return fmt.Errorf("flash: %w", err)
	}
	fmt.Fprintf(f.env.Stderr, "writing %s of %s (ranges from %s; holes skipped)\n", humanize.IBytes(uint64(plan.total())), humanize.IBytes(uint64(size)), plan.source)
	err = f.write(ctx, out, img, plan)
	if err == nil {
		// The card must hold the bytes before anyone pulls it.
		if err = out.Sync(); err != nil {
			err = fmt.Errorf("flash: syncing %s: %w", device, err)
		}
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("flash: %w", cerr)
	}
	if err != nil {
		return err
	}

	fmt.Fprintf(f.env.Stderr, "verifying %s\n", device)
	if err := readBack(ctx, device, plan); err != nil {
		return fmt.Errorf("flash: %w", err)
	}
	if block {
		rereadPartitions(device)
	}
	fmt.Fprintf(f.env.Stdout, "wrote %s to %s and read it back: %s in %d ranges of a %s image, SHA-256 of each range checked (the holes between them were not written)\n",
		image, device, humanize.IBytes(uint64(plan.total())), len(plan.pieces), humanize.IBytes(uint64(size)))
	return nil
}

// piece is one range of the image to write; sha256 is what the block map
// says its bytes hash to ("" for a range found from the image itself),
// and got what they hashed to while writing.
type piece struct {
	bmap.Span
	sha256, got string
}

// flashPlan is what flash writes: the image's mapped ranges, in order.
type flashPlan struct {
	pieces []piece
	source string // where the ranges came from, for the user
}

func (p *flashPlan) total() int64 {
	var n int64
	for _, pc := range p.pieces {
		n += pc.Len
	}
	return n
}

// plan finds what to write: the ranges of the image's block map (--bmap,
// else IMAGE.bmap when it exists) or, without one, the image's data found
// through its holes. Either way the regions whose zeros matter (the
// partition tables, the first MiB of every partition: the init formats
// BALLAST_DATA only when its first MiB is zeros) are written too, whatever
// a block map made elsewhere says, so nothing the device held before
// survives where the image means zeros.
func (f *flasher) plan(img *os.File, image string, size int64) (*flashPlan, error) {
	path := f.bmap
	if path == "" {
		if _, err := os.Stat(bmap.PathFor(image)); err == nil {
			path = bmap.PathFor(image)
		}
	}
	if path == "" {
		spans, err := bmap.Map(img, bmap.BlockSize)
		if err != nil {
			return nil, fmt.Errorf("flash: %s: %w", image, err)
		}
		p := &flashPlan{source: "the image's holes, no block map"}
		for _, s := range spans {
			p.pieces = append(p.pieces, piece{Span: s})
		}
		return p, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("flash: %w", err)
	}
	b, err := bmap.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("flash: %s: %w", path, err)
	}
	if b.ImageSize != size {
		return nil, fmt.Errorf("flash: block map %s is for a %d-byte image; %s has %d bytes (rebuilt since? remove the map or give --bmap)", path, b.ImageSize, image, size)
	}
	key, err := bmap.KeySpans(img, size)
	if err != nil {
		return nil, fmt.Errorf("flash: %s: %w", image, err)
	}
	var mapped []bmap.Span
	p := &flashPlan{source: "block map " + path}
	for _, r := range b.Ranges {
		p.pieces = append(p.pieces, piece{Span: b.Span(r), sha256: r.SHA256})
		mapped = append(mapped, b.Span(r))
	}
	for _, k := range bmap.Merge(key, bmap.BlockSize, size) {
		for _, s := range uncovered(k, mapped) {
			p.pieces = append(p.pieces, piece{Span: s})
		}
	}
	slices.SortFunc(p.pieces, func(a, b piece) int { return cmp.Compare(a.Off, b.Off) })
	return p, nil
}

// uncovered returns the parts of s that no span in sorted covers.
func uncovered(s bmap.Span, sorted []bmap.Span) []bmap.Span {
	var out []bmap.Span
	at := s.Off
	for _, c := range sorted {
		if c.End() <= at || c.Off >= s.End() {
			continue
		}
		if c.Off > at {
			out = append(out, bmap.Span{Off: at, Len: c.Off - at})
		}
		at = max(at, c.End())
	}
	if at < s.End() {
		out = append(out, bmap.Span{Off: at, Len: s.End() - at})
	}
	return out
}

// write copies each range of the plan from the image to the same offset
// of the device, hashing it as it goes, and stops at a range whose bytes
// differ from its block map's checksum.
func (f *flasher) write(ctx context.Context, w io.WriterAt, r io.ReaderAt, plan *flashPlan) error {
	size := plan.total()
	buf := make([]byte, 4<<20)
	var done int64
	start := time.Now()
	lastPct := -1
	for i := range plan.pieces {
		pc := &plan.pieces[i]
		h := sha256.New()
		for off := pc.Off; off < pc.End(); {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := int(min(int64(len(buf)), pc.End()-off))
			if _, err := r.ReadAt(buf[:n], off); err != nil {
				return fmt.Errorf("flash: reading the image at byte %d: %w", off, err)
			}
			if _, err := w.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("flash: writing at byte %d: %w", off, err)
			}
			h.Write(buf[:n])
			off += int64(n)
			done += int64(n)
			pct := int(done * 100 / max(size, 1))
			switch {
			case f.terminal:
				rate := float64(done) / max(time.Since(start).Seconds(), 0.001)
				fmt.Fprintf(f.env.Stderr, "\rwriting %s / %s  %3d%%  %s/s ", humanize.IBytes(uint64(done)), humanize.IBytes(uint64(size)), pct, humanize.IBytes(uint64(rate)))
			case pct/10 != lastPct/10:
				fmt.Fprintf(f.env.Stderr, "writing: %d%% (%s of %s)\n", pct, humanize.IBytes(uint64(done)), humanize.IBytes(uint64(size)))
			}
			lastPct = pct
		}
		pc.got = hex.EncodeToString(h.Sum(nil))
		if pc.sha256 != "" && pc.got != pc.sha256 {
			return fmt.Errorf("flash: the image's bytes %d-%d differ from its block map (SHA-256 %s, the map says %s): the image changed since the map was written; the device is partly written, flash again with a matching map", pc.Off, pc.End()-1, pc.got, pc.sha256)
		}
	}
	if f.terminal {
		fmt.Fprintln(f.env.Stderr)
	}
	return nil
}

// readBack reads every range of the plan from device, after asking the
// kernel to drop its cached pages so the bytes come from the medium, and
// compares each range's SHA-256 with what was written.
func readBack(ctx context.Context, device string, plan *flashPlan) error {
	d, err := os.Open(device)
	if err != nil {
		return fmt.Errorf("reading back %s: %w", device, err)
	}
	defer d.Close()
	unix.Fadvise(int(d.Fd()), 0, 0, unix.FADV_DONTNEED)
	if st, err := d.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
		unix.IoctlSetInt(int(d.Fd()), unix.BLKFLSBUF, 0)
	}
	for _, pc := range plan.pieces {
		h := sha256.New()
		if _, err := io.Copy(h, &ctxReader{ctx, io.NewSectionReader(d, pc.Off, pc.Len)}); err != nil {
			return fmt.Errorf("reading back %s at byte %d: %w", device, pc.Off, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != pc.got {
			return fmt.Errorf("%s reads back bytes %d-%d with SHA-256 %s, the image has %s: the device is faulty or was changed while writing", device, pc.Off, pc.End()-1, got, pc.got)
		}
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// checkUnused refuses a device that is, or has a partition that is,
// mounted, used as swap or held by device-mapper/RAID, naming the disk the
// host runs from when it is that one.
func (f *flasher) checkUnused(device string, st os.FileInfo) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("flash: %s: no device number", device)
	}
	major, minor := unix.Major(uint64(sys.Rdev)), unix.Minor(uint64(sys.Rdev))
	devs, holders, err := f.deviceAndPartitions(major, minor)
	if err != nil {
		return fmt.Errorf("flash: %s: %w", device, err)
	}
	if len(holders) > 0 {
		return fmt.Errorf("flash: %w: %s is held by %s (device-mapper, LVM or RAID): stop that first", ErrDeviceInUse, device, strings.Join(holders, ", "))
	}
	mounts, err := parseMountInfo(f.mountInfo)
	if err != nil {
		return fmt.Errorf("flash: %w", err)
	}
	byPath := map[string]string{}
	for _, name := range devs {
		byPath["/dev/"+name] = name
	}
	for _, m := range mounts {
		// By device number, and by source: btrfs and ZFS report an
		// anonymous 0:NN device for what is mounted from /dev/sda2.
		name, ok := devs[m.dev]
		if !ok {
			name, ok = byPath[m.source]
		}
		if !ok {
			continue
		}
		if m.mountPoint == "/" {
			return fmt.Errorf("flash: %w: %s is the disk this computer runs from (%s is mounted on /)", ErrDeviceInUse, device, name)
		}
		return fmt.Errorf("flash: %w: %s is mounted on %s: unmount it first", ErrDeviceInUse, name, m.mountPoint)
	}
	if b, err := os.ReadFile(f.swaps); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) == 0 {
				continue
			}
			for _, name := range devs {
				if fields[0] == "/dev/"+name {
					return fmt.Errorf("flash: %w: %s is in use as swap: swapoff it first", ErrDeviceInUse, fields[0])
				}
			}
		}
	}
	return nil
}

// deviceAndPartitions maps "major:minor" to the kernel name of the device
// and each of its partitions, and lists what holds any of them.
func (f *flasher) deviceAndPartitions(major, minor uint32) (map[string]string, []string, error) {
	id := fmt.Sprintf("%d:%d", major, minor)
	dir, err := filepath.EvalSymlinks(filepath.Join(f.sysDev, id))
	if err != nil {
		return nil, nil, fmt.Errorf("no %s/%s: %w", f.sysDev, id, err)
	}
	devs := map[string]string{id: filepath.Base(dir)}
	var holders []string
	addHolders := func(d string) {
		ents, _ := os.ReadDir(filepath.Join(d, "holders"))
		for _, e := range ents {
			holders = append(holders, e.Name())
		}
	}
	addHolders(dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range ents {
		sub := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(sub, "partition")); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sub, "dev"))
		if err != nil {
			continue
		}
		devs[strings.TrimSpace(string(b))] = e.Name()
		addHolders(sub)
	}
	return devs, holders, nil
}

type mountEntry struct {
	dev        string // "major:minor" of the mounted file system
	mountPoint string
	source     string
}

// parseMountInfo reads /proc/self/mountinfo (proc(5)): field 3 is the
// file system's device, field 5 the mount point, and after " - " come the
// type and the source.
func parseMountInfo(path string) ([]mountEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 {
			return nil, fmt.Errorf("%s:%d: not a mountinfo line: %q", path, i+1, line)
		}
		e := mountEntry{dev: f[2], mountPoint: unescapeMount(f[4])}
		if pf := strings.Fields(post); len(pf) >= 2 {
			e.source = unescapeMount(pf[1])
		}
		out = append(out, e)
	}
	return out, nil
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (f *flasher) model(st os.FileInfo) string {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	id := fmt.Sprintf("%d:%d", unix.Major(uint64(sys.Rdev)), unix.Minor(uint64(sys.Rdev)))
	b, err := os.ReadFile(filepath.Join(f.sysDev, id, "device/model"))
	if err != nil {
		return ""
	}
	return ", " + strings.TrimSpace(string(b))
}

func blockSize(device string) (int64, error) {
	d, err := os.Open(device)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	return d.Seek(0, io.SeekEnd)
}

// rereadPartitions asks the kernel to read the new partition table, so
// the card's partitions appear without replugging. Best effort.
func rereadPartitions(device string) {
	d, err := os.Open(device)
	if err != nil {
		return
	}
	defer d.Close()
	unix.IoctlSetInt(int(d.Fd()), unix.BLKRRPART, 0)
}
