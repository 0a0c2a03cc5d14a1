// Package inspect reads back what the builder wrote: a raw disk image
// (imagebuild/disk) or a hybrid ISO (imagebuild/iso). It reports the
// partition table, the boot files, the kernel version, the kernel command
// line, the baked-in user-data and the build manifest, for `ballast inspect`.
//
// File systems are read with go-diskfs; the small formats around them
// (bzImage header, loader entry, grub.cfg) with this package's own parsers.
package inspect

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat16"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/ballast-os/ballast/imagebuild/disk"
	"github.com/ballast-os/ballast/imagebuild/iso"
)

// Report is what Inspect found. Fields are empty when the image lacks
// the thing (e.g. no user-data).
type Report struct {
	Path string `json:"path"`
	// Format is "disk" (raw GPT image) or "iso".
	Format string `json:"format"`
	Size   int64  `json:"size"`
	// Scheme is the partition table: "gpt", or "mbr" for the ISO's
	// hybrid MBR.
	Scheme     string      `json:"scheme"`
	Partitions []Partition `json:"partitions"`
	// BootLabel is the label of the FAT volume listed in BootFiles
	// (BALLAST_BOOT's, or the ISO's efi.img's).
	BootLabel string `json:"boot_label"`
	BootFiles []File `json:"boot_files"`
	// ISOFiles lists the ISO 9660 tree (ISO only).
	ISOFiles []File `json:"iso_files,omitempty"`
	// KernelVersion comes from the bzImage header of /ballast/vmlinuz,
	// else from build.json's "kernel".
	KernelVersion string `json:"kernel_version"`
	// KernelBanner is the whole version string from the bzImage header.
	KernelBanner string `json:"kernel_banner,omitempty"`
	// Cmdline is the kernel command line of the first boot entry:
	// systemd-boot's loader entry, else grub.cfg.
	Cmdline string `json:"cmdline"`
	// GrubCmdline is the command line in grub.cfg (BIOS), when present.
	GrubCmdline string `json:"grub_cmdline,omitempty"`
	// DiskSignature is the MBR disk signature ("b018e464"), MBR only.
	DiskSignature string `json:"disk_signature,omitempty"`
	// DiskGUID is the GPT disk GUID, which the boot entries' ballast.disk=
	// must name (the init looks for the root on that disk only), GPT only.
	DiskGUID string `json:"disk_guid,omitempty"`
	// Firmware lists the Raspberry Pi firmware files on the boot
	// partition (bootcode.bin, start*.elf, fixup*.dat).
	Firmware []string `json:"firmware,omitempty"`
	// DeviceTrees lists the device trees (.dtb) on the boot partition.
	DeviceTrees []string `json:"device_trees,omitempty"`
	// ConfigTxt is the Raspberry Pi firmware's config.txt, when present.
	ConfigTxt string `json:"config_txt,omitempty"`
	UserData  string `json:"user_data,omitempty"`
	// Baked is the cloud-config baked into the initramfs.
	Baked string `json:"baked_config,omitempty"`
	// Build is /ballast/build.json as stored.
	Build json.RawMessage `json:"build,omitempty"`
}

// Partition is one partition table entry.
type Partition struct {
	Number int    `json:"number"`
	Name   string `json:"name,omitempty"`
	// Type is the GPT type GUID, or the MBR type as "0xef".
	Type     string `json:"type"`
	TypeName string `json:"type_name,omitempty"`
	Start    int64  `json:"start"` // bytes
	Size     int64  `json:"size"`  // bytes
}

// File is one file on a file system.
type File struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// fatFS is what Inspect needs from go-diskfs's FAT readers.
type fatFS interface {
	ReadDir(string) ([]iofs.DirEntry, error)
	ReadFile(string) ([]byte, error)
	Label() string
}

// Inspect reads the image at p.
func Inspect(p string) (*Report, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	b, err := file.OpenFromPath(p, true)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	defer b.Close()
	r := &Report{Path: p, Size: st.Size()}
	magic := make([]byte, 5)
	_, merr := b.ReadAt(magic, 16*2048+1)
	if merr == nil && string(magic) == "CD001" {
		err = r.readISO(b)
	} else {
		err = r.readDisk(b)
	}
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", p, err)
	}
	return r, nil
}

func (r *Report) readDisk(b backend.Storage) error {
	r.Format = "disk"
	mbr := make([]byte, 512)
	if _, err := b.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("reading the first sector: %w", err)
	}
	if isDOSMBR(mbr) {
		return r.readMBRDisk(b, mbr)
	}
	if err := checkGPTEntryArrays(b, r.Size); err != nil {
		return fmt.Errorf("reading GPT: %w", err)
	}
	table, err := guard1("GPT", func() (*gpt.Table, error) { return gpt.Read(b, 512, 512) })
	if err != nil {
		return fmt.Errorf("reading GPT: %w", err)
	}
	r.Scheme = "gpt"
	r.DiskGUID = strings.ToLower(table.GUID)
	var boot *Partition
	for i, pt := range table.Partitions {
		if pt.Type == gpt.Unused {
			continue
		}
		r.Partitions = append(r.Partitions, Partition{
			Number:   i + 1,
			Name:     pt.Name,
			Type:     strings.ToUpper(string(pt.Type)),
			TypeName: gptTypeName(pt.Type),
			Start:    int64(pt.Start) * 512,
			Size:     int64(pt.Size),
		})
	}
	for i := range r.Partitions {
		if r.Partitions[i].Name == disk.BootName {
			boot = &r.Partitions[i]
			break
		}
	}
	if boot == nil {
		for i := range r.Partitions {
			if r.Partitions[i].TypeName == "EFI System" {
				boot = &r.Partitions[i]
				break
			}
		}
	}
	if boot == nil {
		return fmt.Errorf("no %s or EFI System partition", disk.BootName)
	}
	fs, err := openFAT(b, boot.Start, boot.Size)
	if err != nil {
		return fmt.Errorf("partition %d (%s): %w", boot.Number, boot.Name, err)
	}
	return r.readBootFAT(fs, boot.Size)
}

// readBootFAT reads the boot files of the FAT volume fs of size bytes.
func (r *Report) readBootFAT(fs fatFS, size int64) error {
	r.BootLabel = strings.TrimSpace(fs.Label())
	files, err := walkFAT(fs, "")
	if err != nil {
		return err
	}
	r.BootFiles = files
	read := func(p string) []byte {
		// go-diskfs allocates the size a directory entry gives: more than
		// the volume holds is a corrupt entry.
		if n := fileSize(files, p); n < 0 || n > size {
			return nil
		}
		b, err := fs.ReadFile(p)
		if err != nil {
			return nil
		}
		return b
	}
	r.fromBoot(read(disk.KernelPath), read(disk.LoaderEntry), read(disk.GrubCfgPath))
	for _, f := range files {
		if strings.Contains(f.Path, "/") {
			continue
		}
		switch {
		case strings.HasSuffix(f.Path, ".dtb"):
			r.DeviceTrees = append(r.DeviceTrees, f.Path)
		case f.Path == "bootcode.bin" || strings.HasSuffix(f.Path, ".elf") || strings.HasSuffix(f.Path, ".dat"):
			r.Firmware = append(r.Firmware, f.Path)
		}
	}
	if b := read(ConfigTxtPath); b != nil {
		r.ConfigTxt = string(b)
	}
	if b := read(CmdlineTxtPath); b != nil && r.Cmdline == "" {
		r.Cmdline = strings.TrimSpace(string(b))
	}
	if b := read(disk.UserDataPath); b != nil {
		r.UserData = string(b)
	}
	r.setBaked(read(disk.InitrdPath))
	if b := read(disk.BuildJSONPath); b != nil {
		r.setBuild(b)
	}
	return nil
}

func (r *Report) fromBoot(kernel, entry, grubCfg []byte) {
	if banner, err := KernelBanner(kernel); err == nil {
		r.KernelBanner = banner
		r.KernelVersion, _, _ = strings.Cut(banner, " ")
	}
	if entry != nil {
		r.Cmdline = LoaderEntryOptions(entry)
	}
	if grubCfg != nil {
		r.GrubCmdline = GrubLinuxArgs(grubCfg)
		if r.Cmdline == "" {
			r.Cmdline = r.GrubCmdline
		}
	}
}

func (r *Report) setBuild(b []byte) {
	if !json.Valid(b) {
		return
	}
	r.Build = json.RawMessage(b)
	if r.KernelVersion == "" {
		var m map[string]any
		if json.Unmarshal(b, &m) == nil {
			if k, ok := m["kernel"].(string); ok {
				r.KernelVersion = k
			}
		}
	}
}

// Raspberry Pi firmware files (imagebuild.ConfigTxtPath, CmdlineTxtPath).
const (
	ConfigTxtPath  = "config.txt"
	CmdlineTxtPath = "cmdline.txt"
)

// maxGPTEntries bounds the partition entry array: every partitioning tool
// writes 128 entries of 128 bytes.
const maxGPTEntries = 1024

// checkGPTEntryArrays refuses a primary or backup GPT header (gpt.Read
// falls back to the one at the end of the image) whose entry array is
// implausibly large: go-diskfs allocates and reads count × size bytes as
// the header says, so a few bytes could ask for hundreds of GiB, or
// overflow into a panic. Headers without a valid signature and CRC are
// left to gpt.Read to refuse.
func checkGPTEntryArrays(b io.ReaderAt, size int64) error {
	for _, lba := range []int64{1, size/512 - 1} {
		h := make([]byte, 512)
		if lba < 1 {
			continue
		}
		if _, err := b.ReadAt(h, lba*512); err != nil || !isGPTHeader(h) {
			continue
		}
		count, esize := binary.LittleEndian.Uint32(h[80:]), binary.LittleEndian.Uint32(h[84:])
		if count > maxGPTEntries || esize != gpt.PartitionEntrySize {
			return fmt.Errorf("GPT header at LBA %d: %d partition entries of %d bytes (at most %d of %d)",
				lba, count, esize, maxGPTEntries, gpt.PartitionEntrySize)
		}
	}
	return nil
}

// isGPTHeader reports whether h is a GPT header gpt.Read accepts:
// signature, revision 1.0, 92 bytes, zero reserved field and CRC32.
func isGPTHeader(h []byte) bool {
	if string(h[:8]) != "EFI PART" || binary.LittleEndian.Uint32(h[8:]) != 0x10000 ||
		binary.LittleEndian.Uint32(h[12:]) != 92 || binary.LittleEndian.Uint32(h[20:]) != 0 {
		return false
	}
	c := bytes.Clone(h[:92])
	clear(c[16:20])
	return crc32.ChecksumIEEE(c) == binary.LittleEndian.Uint32(h[16:])
}

// isDOSMBR reports whether sector 0 is a DOS partition table rather than
// a GPT's protective MBR (or an ISO's hybrid one, which readDisk never sees).
func isDOSMBR(mbr []byte) bool {
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return false
	}
	used := false
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i:]
		if e[4] == 0xee {
			return false
		}
		if e[4] != 0 && binary.LittleEndian.Uint32(e[12:]) != 0 {
			used = true
		}
	}
	return used
}

// mbrNames are the roles of the four partitions of ballast's MBR layout
// (docs/architecture.md, "Raspberry Pi SD card").
var mbrNames = [4]string{disk.BootName, disk.SlotAName, disk.SlotBName, disk.DataName}

// readMBRDisk reads a Raspberry Pi SD card image: the MBR, then the first
// FAT partition (the one the Pi firmware boots from).
func (r *Report) readMBRDisk(b backend.Storage, mbr []byte) error {
	r.Scheme = "mbr"
	r.DiskSignature = fmt.Sprintf("%08x", binary.LittleEndian.Uint32(mbr[440:]))
	var boot *Partition
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i:]
		n := binary.LittleEndian.Uint32(e[12:])
		if e[4] == 0 || n == 0 {
			continue
		}
		r.Partitions = append(r.Partitions, Partition{
			Number:   i + 1,
			Type:     fmt.Sprintf("0x%02x", e[4]),
			TypeName: mbrTypeName(e[4]),
			Start:    int64(binary.LittleEndian.Uint32(e[8:])) * 512,
			Size:     int64(n) * 512,
		})
	}
	for i := range r.Partitions {
		switch r.Partitions[i].Type {
		case "0x0c", "0x0b", "0x0e", "0x06":
			if boot == nil {
				boot = &r.Partitions[i]
			}
		}
	}
	if boot == nil {
		return errors.New("MBR has no FAT partition")
	}
	fs, err := openFAT(b, boot.Start, boot.Size)
	if err != nil {
		return fmt.Errorf("partition %d: %w", boot.Number, err)
	}
	if err := r.readBootFAT(fs, boot.Size); err != nil {
		return err
	}
	// The init finds the partitions by number on the disk whose signature
	// cmdline.txt names: when it names this disk, name them by role.
	if strings.Contains(" "+r.Cmdline+" ", " ballast.disk="+r.DiskSignature+" ") && len(r.Partitions) == 4 {
		for i := range r.Partitions {
			r.Partitions[i].Name = mbrNames[r.Partitions[i].Number-1]
		}
	}
	return nil
}

func (r *Report) readISO(b backend.Storage) error {
	r.Format = "iso"
	isofs, err := guard1("ISO 9660", func() (*iso9660.FileSystem, error) { return iso9660.Read(b, 0, 0, 2048) })
	if err != nil {
		return fmt.Errorf("reading ISO 9660: %w", err)
	}
	fs := guardedFS{isofs, "ISO 9660"}
	files, err := walk(fs, "", 0)
	if err != nil {
		return err
	}
	r.ISOFiles = files
	mbr := make([]byte, 512)
	if _, err := b.ReadAt(mbr, 0); err != nil {
		return err
	}
	if mbr[510] == 0x55 && mbr[511] == 0xaa {
		r.Scheme = "mbr"
		for i := 0; i < 4; i++ {
			e := mbr[446+16*i : 446+16*(i+1)]
			n := binary.LittleEndian.Uint32(e[12:])
			if n == 0 {
				continue
			}
			r.Partitions = append(r.Partitions, Partition{
				Number:   i + 1,
				Type:     fmt.Sprintf("0x%02x", e[4]),
				TypeName: mbrTypeName(e[4]),
				Start:    int64(binary.LittleEndian.Uint32(e[8:])) * 512,
				Size:     int64(n) * 512,
			})
		}
	}
	read := func(p string) []byte {
		for _, f := range files {
			if f.Path == p {
				if f.Size == 0 {
					return []byte{}
				}
				if f.Size > r.Size {
					return nil // a corrupt directory record; see readBootFAT
				}
				b, err := fs.ReadFile(p)
				if err == nil {
					return b
				}
			}
		}
		return nil
	}
	if ud := read(disk.UserDataPath); ud != nil {
		r.UserData = string(ud)
	}
	r.setBaked(read(disk.InitrdPath))
	if bj := read(disk.BuildJSONPath); bj != nil {
		r.setBuild(bj)
	}
	grubCfg := read(iso.GrubCfgPath)
	// efi.img holds the UEFI loader entry; find it from the catalog.
	entries, err := iso.ReadCatalog(b)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Platform != 0xef {
			continue
		}
		start := int64(e.LBA) * 2048
		size, err := fatSize(b, start)
		if err != nil {
			return fmt.Errorf("EFI boot image: %w", err)
		}
		efs, err := openFAT(b, start, size)
		if err != nil {
			return fmt.Errorf("EFI boot image: %w", err)
		}
		if err := r.readBootFAT(efs, size); err != nil {
			return fmt.Errorf("EFI boot image: %w", err)
		}
	}
	if grubCfg != nil {
		r.GrubCmdline = GrubLinuxArgs(grubCfg)
		if r.Cmdline == "" {
			r.Cmdline = r.GrubCmdline
		}
	}
	if r.KernelVersion == "" {
		r.fromBoot(read(disk.KernelPath), nil, nil)
	}
	return nil
}

// fatSize reads a FAT volume's size from its boot sector.
func fatSize(b io.ReaderAt, start int64) (int64, error) {
	bs := make([]byte, 512)
	if _, err := b.ReadAt(bs, start); err != nil {
		return 0, err
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return 0, errors.New("no FAT boot sector")
	}
	n := int64(binary.LittleEndian.Uint16(bs[19:]))
	if n == 0 {
		n = int64(binary.LittleEndian.Uint32(bs[32:]))
	}
	return n * int64(binary.LittleEndian.Uint16(bs[11:])), nil
}

// openFAT opens the FAT16 or FAT32 volume at start: FAT32 has no 16-bit
// FAT size (bytes 22..23 of the boot sector are zero).
func openFAT(b backend.Storage, start, size int64) (fatFS, error) {
	st, err := b.Stat()
	if err != nil {
		return nil, err
	}
	if start < 0 || size < 512 || start > st.Size()-size {
		return nil, fmt.Errorf("a FAT volume of %d bytes at %d does not lie within the image (%d bytes)", size, start, st.Size())
	}
	bs := make([]byte, 512)
	if _, err := b.ReadAt(bs, start); err != nil {
		return nil, err
	}
	if err := checkFAT(b, start, size, bs); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint16(bs[22:]) == 0 {
		fs, err := guard1("FAT32", func() (*fat32.FileSystem, error) { return fat32.Read(b, size, start, 512) })
		if err != nil {
			return nil, fmt.Errorf("reading FAT32: %w", err)
		}
		return guardedFS{fs, "FAT32"}, nil
	}
	fs, err := guard1("FAT16", func() (*fat16.FileSystem, error) { return fat16.Read(b, size, start, 512) })
	if err != nil {
		return nil, fmt.Errorf("reading FAT16: %w", err)
	}
	return guardedFS{fs, "FAT16"}, nil
}

// checkFAT checks what go-diskfs trusts of the FAT volume of size bytes
// at start whose boot sector is bs: it allocates the FATs the boot sector
// describes, and follows cluster chains without noticing a loop (a
// looping chain took all memory). The FATs must lie within the volume
// and no chain may loop. The entries are read as go-diskfs reads them:
// 32 bits when the 16-bit FAT size is zero, else 16.
func checkFAT(b io.ReaderAt, start, size int64, bs []byte) error {
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	reserved := int64(binary.LittleEndian.Uint16(bs[14:]))
	fats := int64(bs[16])
	rootEntries := int64(binary.LittleEndian.Uint16(bs[17:]))
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 {
		return fmt.Errorf("FAT boot sector: %d bytes per sector", bps)
	}
	fat32, entry := binary.LittleEndian.Uint16(bs[22:]) == 0, int64(2)
	fatBytes := int64(binary.LittleEndian.Uint16(bs[22:])) * bps
	if fat32 {
		fats, entry = 2, 4 // go-diskfs reads both, whatever the count says
		fatBytes = int64(binary.LittleEndian.Uint32(bs[36:])) * bps
		rootEntries = 0
	}
	if end := reserved*bps + fats*fatBytes + rootEntries*32; fatBytes < 2*entry || end > size {
		return fmt.Errorf("FAT boot sector: %d FATs of %d bytes after %d reserved sectors do not fit a volume of %d bytes",
			fats, fatBytes, reserved, size)
	}
	fat := make([]byte, fatBytes)
	if _, err := b.ReadAt(fat, start+reserved*bps); err != nil {
		return fmt.Errorf("reading the FAT: %w", err)
	}
	n := uint32(fatBytes / entry) // go-diskfs's highest cluster number
	next := func(c uint32) (uint32, bool) {
		if c >= n {
			return 0, false // not loaded: go-diskfs reads it as 0
		}
		if fat32 {
			v := binary.LittleEndian.Uint32(fat[4*c:])
			return v, v&0x0ffffff8 != 0x0ffffff8 && v >= 2 && v <= n
		}
		v := uint32(binary.LittleEndian.Uint16(fat[2*c:]))
		return v, v < 0xfff8 && v >= 2 && v <= n
	}
	// Follow every chain once: 1 marks the chain being followed, 2 the
	// clusters of chains known to end.
	state := make([]byte, n+1)
	for c := uint32(2); c < n; c++ {
		x, ended := c, false
		for state[x] == 0 {
			state[x] = 1
			v, ok := next(x)
			if !ok {
				ended = true
				break
			}
			x = v
		}
		if !ended && state[x] == 1 {
			return fmt.Errorf("FAT: the cluster chain through cluster %d loops", x)
		}
		for x = c; state[x] == 1; {
			state[x] = 2
			v, ok := next(x)
			if !ok {
				break
			}
			x = v
		}
	}
	return nil
}

// errMalformed is what a go-diskfs reader's panic becomes: they index the
// image by fields they do not all check (an ISO's Rock Ridge entries, for
// one), and a malformed image must make inspect fail, not crash.
var errMalformed = errors.New("malformed")

func guard(what string, err *error) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("%s: %w (go-diskfs: %v)", what, errMalformed, v)
	}
}

// guard1 calls fn, turning a panic into errMalformed.
func guard1[T any](what string, fn func() (T, error)) (v T, err error) {
	defer guard(what, &err)
	return fn()
}

// guardedFS is a go-diskfs file system whose panics are errMalformed.
type guardedFS struct {
	fs   fatFS
	what string
}

func (g guardedFS) ReadDir(p string) (ents []iofs.DirEntry, err error) {
	defer guard(g.what+" /"+p, &err)
	return g.fs.ReadDir(p)
}

func (g guardedFS) ReadFile(p string) (b []byte, err error) {
	defer guard(g.what+" /"+p, &err)
	return g.fs.ReadFile(p)
}

func (g guardedFS) Label() (l string) {
	defer func() {
		if recover() != nil {
			l = ""
		}
	}()
	return g.fs.Label()
}

// fileSize is the size of the file at p, or -1 when files lack it.
func fileSize(files []File, p string) int64 {
	for _, f := range files {
		if f.Path == p {
			return f.Size
		}
	}
	return -1
}

type dirReader interface {
	ReadDir(string) ([]iofs.DirEntry, error)
}

func walk(fs dirReader, dir string, depth int) ([]File, error) {
	if depth > 32 {
		return nil, fmt.Errorf("/%s: directories nested too deep", dir)
	}
	name := dir
	if name == "" {
		name = "." // go-diskfs's readers take io/fs-style paths
	}
	ents, err := fs.ReadDir(name)
	if err != nil {
		return nil, fmt.Errorf("reading directory /%s: %w", dir, err)
	}
	var out []File
	for _, e := range ents {
		name := e.Name()
		if name == "." || name == ".." || name == "" {
			continue
		}
		p := path.Join(dir, name)
		if e.IsDir() {
			sub, err := walk(fs, p, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		out = append(out, File{Path: p, Size: info.Size()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func walkFAT(fs fatFS, dir string) ([]File, error) { return walk(fs, dir, 0) }

func gptTypeName(t gpt.Type) string {
	switch strings.ToUpper(string(t)) {
	case string(gpt.EFISystemPartition):
		return "EFI System"
	case string(gpt.LinuxFilesystem):
		return "Linux filesystem"
	}
	return ""
}

func mbrTypeName(t byte) string {
	switch t {
	case 0x00:
		return "empty (whole ISO)"
	case 0xef:
		return "EFI System"
	case 0xee:
		return "GPT protective"
	case 0x83:
		return "Linux"
	case 0x0c:
		return "FAT32 (LBA)"
	case 0x0b:
		return "FAT32"
	case 0x0e, 0x06:
		return "FAT16"
	}
	return ""
}

// KernelBanner returns the version string of an x86 bzImage (the header's
// kernel_version field: "6.12.48+deb13-amd64 (debian-kernel@...) #1 SMP ...").
// Other images (arm64 Image) have no such field and give an error.
func KernelBanner(b []byte) (string, error) {
	if len(b) < 0x210 || string(b[0x202:0x206]) != "HdrS" {
		return "", errors.New("not a bzImage (no HdrS header)")
	}
	if binary.LittleEndian.Uint16(b[0x206:]) < 0x0200 {
		return "", errors.New("bzImage boot protocol too old for a version string")
	}
	ptr := int(binary.LittleEndian.Uint16(b[0x20e:]))
	if ptr == 0 {
		return "", errors.New("bzImage has no version string")
	}
	off := ptr + 0x200
	if off >= len(b) {
		return "", fmt.Errorf("bzImage version string offset %d beyond the file", off)
	}
	end := bytes.IndexByte(b[off:min(len(b), off+256)], 0)
	if end <= 0 {
		return "", errors.New("bzImage version string not terminated")
	}
	s := string(b[off : off+end])
	for _, c := range s {
		if c < 0x20 || c > 0x7e {
			return "", errors.New("bzImage version string is not printable")
		}
	}
	return s, nil
}

// LoaderEntryOptions returns the "options" of a systemd-boot loader entry
// (several options lines are joined, as systemd-boot does).
func LoaderEntryOptions(b []byte) string {
	var opts []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		key, val, ok := strings.Cut(line, " ")
		if ok && key == "options" {
			opts = append(opts, strings.TrimSpace(val))
		}
	}
	return strings.Join(opts, " ")
}

// GrubLinuxArgs returns the arguments after the kernel path on the first
// "linux" line of a grub.cfg.
func GrubLinuxArgs(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && (f[0] == "linux" || f[0] == "linux16" || f[0] == "linuxefi") {
			return strings.Join(f[2:], " ")
		}
	}
	return ""
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "image:    %s (%s, %s)\n", r.Path, r.Format, humanSize(r.Size))
	fmt.Fprintf(bw, "kernel:   %s\n", orNone(r.KernelVersion))
	fmt.Fprintf(bw, "cmdline:  %s\n", orNone(r.Cmdline))
	if r.GrubCmdline != "" && r.GrubCmdline != r.Cmdline {
		fmt.Fprintf(bw, "grub:     %s\n", r.GrubCmdline)
	}
	if r.DiskSignature != "" {
		fmt.Fprintf(bw, "disk id:  %s (MBR signature)\n", r.DiskSignature)
	}
	if r.DiskGUID != "" {
		fmt.Fprintf(bw, "disk id:  %s (GPT disk GUID)\n", r.DiskGUID)
	}
	if len(r.Firmware) > 0 {
		fmt.Fprintf(bw, "firmware: %s\n", strings.Join(r.Firmware, " "))
	}
	if len(r.DeviceTrees) > 0 {
		fmt.Fprintf(bw, "dtbs:     %s\n", strings.Join(r.DeviceTrees, " "))
	}
	fmt.Fprintf(bw, "\npartitions (%s):\n", orNone(r.Scheme))
	fmt.Fprintf(bw, "  %-3s %-14s %-12s %12s %10s  %s\n", "#", "name", "start", "", "size", "type")
	for _, p := range r.Partitions {
		tn := p.Type
		if p.TypeName != "" {
			tn = p.TypeName
		}
		fmt.Fprintf(bw, "  %-3d %-14s %-12d %12s %10s  %s\n", p.Number, orDash(p.Name), p.Start, "", humanSize(p.Size), tn)
	}
	fmt.Fprintf(bw, "\nboot files (FAT %s):\n", orNone(r.BootLabel))
	for _, f := range r.BootFiles {
		fmt.Fprintf(bw, "  %10s  /%s\n", humanSize(f.Size), f.Path)
	}
	if len(r.ISOFiles) > 0 {
		fmt.Fprintf(bw, "\nISO files:\n")
		for _, f := range r.ISOFiles {
			fmt.Fprintf(bw, "  %10s  /%s\n", humanSize(f.Size), f.Path)
		}
	}
	if r.ConfigTxt != "" {
		fmt.Fprintf(bw, "\nconfig.txt:\n")
		for _, line := range strings.Split(strings.TrimRight(r.ConfigTxt, "\n"), "\n") {
			fmt.Fprintf(bw, "  %s\n", line)
		}
	}
	fmt.Fprintf(bw, "\nbuild.json:\n")
	if len(r.Build) > 0 {
		var out bytes.Buffer
		if json.Indent(&out, r.Build, "  ", "  ") == nil {
			fmt.Fprintf(bw, "  %s\n", out.String())
		}
	} else {
		fmt.Fprintf(bw, "  (none)\n")
	}
	writeBlock(bw, "baked cloud-config (initramfs)", r.Baked)
	writeBlock(bw, "user-data (boot partition, editable)", r.UserData)
	return bw.Flush()
}

func writeBlock(w io.Writer, title, text string) {
	fmt.Fprintf(w, "\n%s:\n", title)
	if text == "" {
		fmt.Fprintf(w, "  (none)\n")
	}
	for _, line := range strings.SplitAfter(text, "\n") {
		if line != "" {
			fmt.Fprintf(w, "  %s", strings.TrimSuffix(line, "\n")+"\n")
		}
	}
}

// setBaked records the initramfs's baked cloud-config; an unreadable
// initramfs says so in its place.
func (r *Report) setBaked(initrd []byte) {
	if initrd == nil {
		return
	}
	b, err := BakedConfig(initrd)
	if err != nil {
		r.Baked = "(unreadable: " + err.Error() + ")"
		return
	}
	r.Baked = string(b)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
