package fsprobe

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
)

// probeSize covers every superblock Probe looks at: the ISO 9660 primary
// volume descriptor at 32 KiB is the farthest.
const probeSize = 32768 + 2048

// Probe identifies the file system on r and returns its type and label;
// both are empty when the content is not recognised.
func Probe(r io.ReaderAt) (fstype, label string, err error) {
	buf := make([]byte, probeSize)
	if err := readFull(r, buf, 0); err != nil {
		return "", "", err
	}
	fstype, label = probeBytes(buf)
	return fstype, label, nil
}

func probeBytes(b []byte) (fstype, label string) {
	if len(b) < probeSize {
		b = append(b, make([]byte, probeSize-len(b))...)
	}
	switch {
	case string(b[:4]) == "hsqs":
		return "squashfs", ""
	// ISO 9660 first: a hybrid ISO also carries an MBR boot signature.
	case b[32768] == 1 && string(b[32769:32774]) == "CD001":
		return "iso9660", trimLabel(b[32768+40 : 32768+72])
	case binary.LittleEndian.Uint16(b[1024+56:]) == 0xEF53:
		return extKind(b[1024:]), trimLabel(b[1024+120 : 1024+136])
	case b[510] == 0x55 && b[511] == 0xAA:
		// FAT32 keeps its extended boot record at 0x40, FAT12/16 at 0x24.
		if string(b[0x52:0x57]) == "FAT32" && b[0x42] == 0x29 {
			return "vfat", fatLabel(b[0x47 : 0x47+11])
		}
		if string(b[0x36:0x39]) == "FAT" && b[0x26] == 0x29 {
			return "vfat", fatLabel(b[0x2B : 0x2B+11])
		}
	}
	return "", ""
}

func extKind(sb []byte) string {
	compat := binary.LittleEndian.Uint32(sb[0x5C:])
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	const (
		hasJournal = 0x4
		extents    = 0x40
		flexBG     = 0x200
		bit64      = 0x80
	)
	switch {
	case incompat&(extents|flexBG|bit64) != 0:
		return "ext4"
	case compat&hasJournal != 0:
		return "ext3"
	}
	return "ext2"
}

func fatLabel(b []byte) string {
	l := trimLabel(b)
	if l == "NO NAME" {
		return ""
	}
	return l
}

func trimLabel(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimRight(string(b), " ")
}
