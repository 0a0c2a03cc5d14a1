package debian

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ArHeader is one member of an ar archive.
type ArHeader struct {
	Name string
	Size int64
}

// ArReader reads the members of a System V / GNU ar archive, the container
// format of a .deb.
type ArReader struct {
	r       *bufio.Reader
	remain  int64 // bytes of the current member not yet read
	pad     bool  // the current member is followed by a padding byte
	started bool
	off     int64
}

const arMagic = "!<arch>\n"

// NewArReader checks the global header and returns a reader positioned
// before the first member.
func NewArReader(r io.Reader) (*ArReader, error) {
	br := bufio.NewReader(r)
	var magic [8]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil {
		return nil, fmt.Errorf("ar: reading magic: %w", err)
	}
	if string(magic[:]) != arMagic {
		return nil, fmt.Errorf("ar: bad magic %q", magic[:])
	}
	return &ArReader{r: br, off: 8}, nil
}

// Next skips to the next member and returns its header; io.EOF at the end.
func (a *ArReader) Next() (*ArHeader, error) {
	skip := a.remain
	if a.pad {
		skip++
	}
	if skip > 0 {
		n, err := io.CopyN(io.Discard, a.r, skip)
		a.off += n
		if err != nil {
			return nil, fmt.Errorf("ar: offset %d: truncated member: %w", a.off, unexpected(err))
		}
	}
	a.remain, a.pad = 0, false
	var h [60]byte
	n, err := io.ReadFull(a.r, h[:])
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("ar: offset %d: truncated header: %w", a.off, unexpected(err))
	}
	hdrOff := a.off
	a.off += int64(n)
	if h[58] != '`' || h[59] != '\n' {
		return nil, fmt.Errorf("ar: offset %d: bad member header terminator", hdrOff)
	}
	name := strings.TrimRight(string(h[0:16]), " ")
	// GNU ar ends names with '/'.
	name = strings.TrimSuffix(name, "/")
	sizeField := strings.TrimSpace(string(h[48:58]))
	size, err := strconv.ParseInt(sizeField, 10, 64)
	if err != nil || size < 0 {
		return nil, fmt.Errorf("ar: offset %d: member %q: bad size %q", hdrOff, name, sizeField)
	}
	a.remain, a.pad = size, size%2 == 1
	return &ArHeader{Name: name, Size: size}, nil
}

// Read reads from the current member.
func (a *ArReader) Read(p []byte) (int, error) {
	if a.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > a.remain {
		p = p[:a.remain]
	}
	n, err := a.r.Read(p)
	a.remain -= int64(n)
	a.off += int64(n)
	if err == io.EOF && a.remain > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decompressor returns a reader that decompresses r according to the
// member name's suffix ("data.tar.xz"), and a close function.
func decompressor(name string, r io.Reader) (io.Reader, func(), error) {
	switch {
	case strings.HasSuffix(name, ".xz"):
		zr, err := xz.NewReader(r)
		return zr, func() {}, err
	case strings.HasSuffix(name, ".zst"):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	case strings.HasSuffix(name, ".gz"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { zr.Close() }, nil
	case strings.HasSuffix(name, ".bz2"):
		return bzip2.NewReader(r), func() {}, nil
	case strings.HasSuffix(name, ".tar"):
		return r, func() {}, nil
	}
	return nil, nil, fmt.Errorf("unsupported compression for member %q", name)
}

// errNoMember is returned by walkDeb when the .deb lacks a needed member.
var errNoMember = errors.New("member missing")

// walkDeb reads a .deb: it checks debian-binary and calls control and data
// with the decompressed tar streams of control.tar.* and data.tar.*.
func walkDeb(r io.Reader, control, data func(tarStream io.Reader) error) error {
	ar, err := NewArReader(r)
	if err != nil {
		return err
	}
	var sawBinary, sawControl, sawData bool
	for {
		h, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch {
		case h.Name == "debian-binary":
			b, err := io.ReadAll(io.LimitReader(ar, 64))
			if err != nil {
				return fmt.Errorf("debian-binary: %w", err)
			}
			if !bytes.HasPrefix(b, []byte("2.")) {
				return fmt.Errorf("debian-binary: unsupported format %q", truncate(string(b), 20))
			}
			sawBinary = true
		case strings.HasPrefix(h.Name, "control.tar"):
			if !sawBinary {
				return fmt.Errorf("%s before debian-binary", h.Name)
			}
			sawControl = true
			if err := withDecompressed(h.Name, ar, control); err != nil {
				return err
			}
		case strings.HasPrefix(h.Name, "data.tar"):
			if !sawBinary {
				return fmt.Errorf("%s before debian-binary", h.Name)
			}
			sawData = true
			if err := withDecompressed(h.Name, ar, data); err != nil {
				return err
			}
		}
	}
	switch {
	case !sawBinary:
		return fmt.Errorf("debian-binary: %w", errNoMember)
	case !sawControl:
		return fmt.Errorf("control.tar: %w", errNoMember)
	case !sawData:
		return fmt.Errorf("data.tar: %w", errNoMember)
	}
	return nil
}

func withDecompressed(name string, r io.Reader, fn func(io.Reader) error) error {
	if fn == nil {
		return nil
	}
	zr, closeFn, err := decompressor(name, r)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer closeFn()
	if err := fn(zr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
