package squashfs

import (
	"encoding/binary"
	"fmt"
)

const (
	metadataSize       = 8192    // uncompressed bytes per metadata block
	metadataStoredFlag = 1 << 15 // in a metadata block header: stored uncompressed
	dataStoredFlag     = 1 << 24 // in a block size entry: stored uncompressed
	invalidTable       = ^uint64(0)
	noFragment         = ^uint32(0)
	noXattr            = ^uint32(0)
)

// metadataWriter builds one metadata table (inodes, directories, fragment
// entries, ids) in memory: a run of blocks of at most 8 KiB each, every one
// compressed on its own and preceded by a 2-byte length.
type metadataWriter struct {
	c   compressor
	out []byte // finished blocks, as they will appear in the image
	cur []byte // the block being filled, uncompressed
	// starts holds the offset in out of every finished block.
	starts []int
	err    error
}

func newMetadataWriter(c compressor) *metadataWriter {
	return &metadataWriter{c: c, cur: make([]byte, 0, metadataSize)}
}

// ref is the reference to the next byte to be written: the offset of its
// block from the start of the table, shifted left 16, plus its offset inside
// the uncompressed block. The block's offset is known because every earlier
// block is already compressed.
func (m *metadataWriter) ref() uint64 {
	return uint64(len(m.out))<<16 | uint64(len(m.cur))
}

func (m *metadataWriter) write(b []byte) {
	for len(b) > 0 {
		n := min(metadataSize-len(m.cur), len(b))
		m.cur = append(m.cur, b[:n]...)
		b = b[n:]
		if len(m.cur) == metadataSize {
			m.flush()
		}
	}
}

func (m *metadataWriter) flush() {
	if len(m.cur) == 0 || m.err != nil {
		return
	}
	m.starts = append(m.starts, len(m.out))
	z, err := m.c.compress(nil, m.cur)
	if err != nil {
		m.err = fmt.Errorf("compressing metadata block: %w", err)
		return
	}
	hdr := uint16(len(z))
	body := z
	if len(z) >= len(m.cur) {
		hdr = uint16(len(m.cur)) | metadataStoredFlag
		body = m.cur
	}
	m.out = binary.LittleEndian.AppendUint16(m.out, hdr)
	m.out = append(m.out, body...)
	m.cur = m.cur[:0]
}

// finish flushes the last partial block and returns the table's bytes.
func (m *metadataWriter) finish() ([]byte, error) {
	m.flush()
	return m.out, m.err
}

// le is a small helper for building little-endian records.
type le []byte

func (b le) u16(v uint16) le { return binary.LittleEndian.AppendUint16(b, v) }
func (b le) u32(v uint32) le { return binary.LittleEndian.AppendUint32(b, v) }
func (b le) u64(v uint64) le { return binary.LittleEndian.AppendUint64(b, v) }
