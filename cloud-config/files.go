package cloudconfig

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
)

// MaxFileSize bounds what one write_files entry may decode to, so a small
// gzip bomb cannot fill /etc's tmpfs or the init's memory.
const MaxFileSize = 64 << 20

// Canonical write_files encodings, as returned by File.Decode's checks.
const (
	EncodingText     = "text"
	EncodingBase64   = "b64"
	EncodingGzip     = "gz"
	EncodingGzBase64 = "gz+b64"
)

// canonicalEncoding maps cloud-init's spellings to one of the four.
func canonicalEncoding(e string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(e)) {
	case "", "text", "text/plain":
		return EncodingText, nil
	case "b64", "base64":
		return EncodingBase64, nil
	case "gz", "gzip":
		return EncodingGzip, nil
	case "gz+b64", "gz+base64", "gzip+b64", "gzip+base64":
		return EncodingGzBase64, nil
	}
	return "", fmt.Errorf("%q is not an encoding (text, b64, base64, gz, gzip, gz+b64, gz+base64, gzip+base64)", clip(e))
}

// Decode returns the bytes to write: Content undone of its Encoding.
// Base64 may be wrapped over lines. Gzip content written as YAML !!binary
// arrives already base64-decoded, so "gz" means raw gzip bytes.
func (f File) Decode() ([]byte, error) {
	enc, err := canonicalEncoding(f.Encoding)
	if err != nil {
		return nil, err
	}
	data := []byte(f.Content)
	if enc == EncodingBase64 || enc == EncodingGzBase64 {
		if data, err = decodeBase64(f.Content); err != nil {
			return nil, err
		}
	}
	if enc == EncodingGzip || enc == EncodingGzBase64 {
		if data, err = gunzip(data); err != nil {
			return nil, err
		}
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("content is %d bytes, more than the %d allowed", len(data), MaxFileSize)
	}
	return data, nil
}

func decodeBase64(s string) ([]byte, error) {
	s = strings.Join(strings.Fields(s), "")
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		// Some tools leave the padding off.
		if b2, err2 := base64.RawStdEncoding.DecodeString(s); err2 == nil {
			return b2, nil
		}
		return nil, fmt.Errorf("content is not base64: %w", err)
	}
	return b, nil
}

func gunzip(data []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("content is not gzip: %w", err)
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("content is not valid gzip: %w", err)
	}
	if len(out) > MaxFileSize {
		return nil, fmt.Errorf("content decompresses to more than the %d bytes allowed", MaxFileSize)
	}
	return out, nil
}

// Mode is Permissions as a file mode; 0644 when unset.
func (f File) Mode() (fs.FileMode, error) {
	if f.Permissions == "" {
		return 0o644, nil
	}
	if !octalMode.MatchString(f.Permissions) {
		return 0, fmt.Errorf("%q is not an octal mode", f.Permissions)
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(f.Permissions, "0o"), 8, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not an octal mode: %w", f.Permissions, err)
	}
	mode := fs.FileMode(v & 0o777)
	if v&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if v&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if v&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode, nil
}

// OwnerOrDefault splits Owner into user and group names or numbers;
// "root", "root" when unset. A bare user keeps group root, as in
// cloud-init.
func (f File) OwnerOrDefault() (user, group string) {
	if f.Owner == "" {
		return "root", "root"
	}
	u, g, ok := strings.Cut(f.Owner, ":")
	if !ok || g == "" {
		return u, "root"
	}
	return u, g
}
