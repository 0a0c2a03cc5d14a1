package iso

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// go-diskfs takes Rock Ridge TF times from the staged files, and one of
// them is the status-change time, which no program can set. stampRecords
// walks every directory record from the root and rewrites each record's
// date and every TF time to t.

// recordDate is ISO 9660's 7-byte directory record date (UTC).
func recordDate(t time.Time) []byte {
	t = t.UTC()
	return []byte{byte(t.Year() - 1900), byte(t.Month()), byte(t.Day()), byte(t.Hour()), byte(t.Minute()), byte(t.Second()), 0}
}

type rwAt interface {
	io.ReaderAt
	io.WriterAt
}

func stampRecords(f rwAt, t time.Time) error {
	pvd := make([]byte, blockSize)
	if _, err := f.ReadAt(pvd, 16*blockSize); err != nil {
		return err
	}
	root := pvd[156:190]
	return stampDir(f, binary.LittleEndian.Uint32(root[2:]), binary.LittleEndian.Uint32(root[10:]), recordDate(t), 0)
}

func stampDir(f rwAt, lba, size uint32, date []byte, depth int) error {
	if depth > 64 {
		return fmt.Errorf("directory at block %d: nested too deep", lba)
	}
	buf := make([]byte, (int(size)+blockSize-1)/blockSize*blockSize)
	if _, err := f.ReadAt(buf, int64(lba)*blockSize); err != nil {
		return fmt.Errorf("reading directory at block %d: %w", lba, err)
	}
	type sub struct{ lba, size uint32 }
	var subs []sub
	for off := 0; off < int(size); {
		n := int(buf[off])
		if n == 0 {
			off = (off/blockSize + 1) * blockSize
			continue
		}
		if n < 34 || off+n > len(buf) {
			return fmt.Errorf("directory at block %d: bad record at offset %d", lba, off)
		}
		rec := buf[off : off+n]
		copy(rec[18:25], date)
		nameLen := int(rec[32])
		su := 33 + nameLen
		if nameLen%2 == 0 {
			su++
		}
		if su < n {
			if err := stampSUSP(f, rec[su:], date, true); err != nil {
				return err
			}
		}
		dot := nameLen == 1 && (rec[33] == 0 || rec[33] == 1)
		if rec[25]&2 != 0 && !dot {
			subs = append(subs, sub{binary.LittleEndian.Uint32(rec[2:]), binary.LittleEndian.Uint32(rec[10:])})
		}
		off += n
	}
	if _, err := f.WriteAt(buf, int64(lba)*blockSize); err != nil {
		return err
	}
	for _, s := range subs {
		if err := stampDir(f, s.lba, s.size, date, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// stampSUSP rewrites the TF entries in one system use area, following a
// continuation (CE) entry once.
func stampSUSP(f rwAt, b []byte, date []byte, follow bool) error {
	for len(b) >= 4 {
		sig, n := string(b[0:2]), int(b[2])
		if n < 4 || n > len(b) {
			break
		}
		e := b[:n]
		switch sig {
		case "TF":
			flags := e[4]
			if flags&0x80 == 0 { // 7-byte dates
				for off := 5; off+7 <= n; off += 7 {
					copy(e[off:off+7], date)
				}
			}
		case "CE":
			if follow && n >= 28 {
				lba := binary.LittleEndian.Uint32(e[4:])
				off := binary.LittleEndian.Uint32(e[12:])
				size := binary.LittleEndian.Uint32(e[20:])
				area := make([]byte, size)
				at := int64(lba)*blockSize + int64(off)
				if _, err := f.ReadAt(area, at); err != nil {
					return err
				}
				if err := stampSUSP(f, area, date, false); err != nil {
					return err
				}
				if _, err := f.WriteAt(area, at); err != nil {
					return err
				}
			}
		}
		b = b[n:]
	}
	return nil
}
