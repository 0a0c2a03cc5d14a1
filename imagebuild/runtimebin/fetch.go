package runtimebin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/dustin/go-humanize"
)

// FetchOptions select the official k3s binary: a download (URL and
// SHA256, both mandatory) or a local File (SHA256 checked when given).
type FetchOptions struct {
	Version string
	// URL of the binary (see spec.K3sURL for the release default).
	URL string
	// SHA256 the binary must have, lowercase hex.
	SHA256 string
	// File is a local binary instead of a download.
	File string
	// CacheDir keeps downloads, one directory per checksum.
	CacheDir string
	// Offline refuses to download: the binary must be in the cache.
	Offline bool
	// Client does the download; nil: a client with a 30-minute timeout.
	Client *http.Client
	Log    io.Writer
}

// ErrChecksum means a binary's SHA-256 is not the one the spec pins.
var ErrChecksum = errors.New("SHA-256 mismatch")

// Fetch returns the official k3s binary: the local file, the cached
// download with the pinned checksum, or a fresh download checked against it.
func Fetch(ctx context.Context, o FetchOptions) (*Runtime, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.File != "" {
		b, err := describeFile(o.File)
		if err != nil {
			return nil, fmt.Errorf("k3s file: %w", err)
		}
		if o.SHA256 != "" && b.SHA256 != o.SHA256 {
			return nil, fmt.Errorf("k3s file %s: %w: want %s, got %s", o.File, ErrChecksum, o.SHA256, b.SHA256)
		}
		return &Runtime{K3s: b, Version: o.Version, Cached: true}, nil
	}
	if o.SHA256 == "" || !sha256RE(o.SHA256) {
		return nil, fmt.Errorf("downloading k3s %s from %s: a SHA-256 (64 lowercase hex digits) is mandatory, got %q", o.Version, o.URL, o.SHA256)
	}
	dir := filepath.Join(o.CacheDir, o.SHA256)
	final := filepath.Join(dir, "k3s")
	if b, err := describe(final, "k3s"); err == nil && b.SHA256 == o.SHA256 {
		fmt.Fprintf(o.Log, "    k3s %s: cached %s (%s)\n", o.Version, final, humanize.IBytes(uint64(b.Size)))
		return &Runtime{K3s: b, Version: o.Version, Cached: true}, nil
	}
	if o.Offline {
		return nil, fmt.Errorf("--offline: k3s %s (sha256 %s) is not in the cache %s", o.Version, o.SHA256, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	fmt.Fprintf(o.Log, "    downloading k3s %s from %s\n", o.Version, o.URL)
	tmp, n, got, err := download(ctx, o.client(), o.URL, dir)
	if err != nil {
		return nil, fmt.Errorf("downloading k3s %s: %w", o.Version, err)
	}
	defer os.Remove(tmp)
	if got != o.SHA256 {
		return nil, fmt.Errorf("downloading k3s %s from %s: %w: want %s, got %s (%d bytes): check runtime.sha256 against the release's sha256sum file", o.Version, o.URL, ErrChecksum, o.SHA256, got, n)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, err
	}
	b, err := describe(final, "k3s")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "    downloaded k3s %s (%s) in %s\n", o.Version, humanize.IBytes(uint64(n)), time.Since(start).Round(100*time.Millisecond))
	return &Runtime{K3s: b, Version: o.Version}, nil
}

func (o FetchOptions) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	return &http.Client{Timeout: 30 * time.Minute}
}

// download writes url's body to a temporary file in dir, hashing it on
// the way; a short body (fewer bytes than Content-Length) is an error.
func download(ctx context.Context, c *http.Client, url, dir string) (tmp string, n int64, sum string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.CreateTemp(dir, "k3s-*.tmp")
	if err != nil {
		return "", 0, "", err
	}
	h := sha256.New()
	n, err = io.Copy(io.MultiWriter(f, h), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("short body: %d of %d bytes", n, resp.ContentLength)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", 0, "", fmt.Errorf("GET %s: %w", url, err)
	}
	return f.Name(), n, hex.EncodeToString(h.Sum(nil)), nil
}

// describeFile hashes a local binary without writing beside it.
func describeFile(path string) (Binary, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Binary{}, err
	}
	if !st.Mode().IsRegular() {
		return Binary{}, fmt.Errorf("%s is not a regular file", path)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return Binary{}, err
	}
	return Binary{Name: "k3s", Path: path, Size: st.Size(), SHA256: sum}, nil
}
