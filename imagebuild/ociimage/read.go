package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	digest "github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/klauspost/compress/zstd"
)

// Archive is a single-image OCI archive as Read found it, every blob
// checked against its descriptor.
type Archive struct {
	Layout   v1.ImageLayout
	Index    v1.Index
	Manifest v1.Manifest
	Config   v1.Image
	// Ref and Tag are the index annotations io.containerd.image.name and
	// org.opencontainers.image.ref.name of the manifest.
	Ref, Tag string
	// Blobs are the raw blobs by digest.
	Blobs map[digest.Digest][]byte
	// Files are the layers' entries, in order; Data is set for regular files.
	Files []Entry
}

// Limits on what Read accepts, so a hostile archive cannot exhaust memory.
const (
	maxBlob      = 1 << 30
	maxJSON      = 4 << 20
	maxLayerFile = 1 << 30
	maxEntries   = 1 << 20
)

// Read parses an OCI image-layout tar archive holding one image, checks
// every descriptor's digest and size, and unpacks the layers' entries.
func Read(r io.Reader) (*Archive, error) {
	a := &Archive{Blobs: map[digest.Digest][]byte{}}
	var indexJSON, layoutJSON []byte
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: tar: %w", ErrInvalid, err)
		}
		if n > maxEntries {
			return nil, fmt.Errorf("%w: more than %d entries", ErrInvalid, maxEntries)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		switch {
		case name == v1.ImageIndexFile:
			indexJSON, err = readAll(tr, maxJSON, name)
		case name == v1.ImageLayoutFile:
			layoutJSON, err = readAll(tr, maxJSON, name)
		case strings.HasPrefix(name, "blobs/"):
			alg, enc, ok := strings.Cut(strings.TrimPrefix(name, "blobs/"), "/")
			d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
			if !ok || d.Validate() != nil {
				return nil, fmt.Errorf("%w: %s: not a blob name", ErrInvalid, name)
			}
			var data []byte
			data, err = readAll(tr, maxBlob, name)
			if err == nil {
				if got := d.Algorithm().FromBytes(data); got != d {
					return nil, fmt.Errorf("%w: %s: content has digest %s", ErrInvalid, name, got)
				}
				a.Blobs[d] = data
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if layoutJSON == nil {
		return nil, fmt.Errorf("%w: no %s", ErrInvalid, v1.ImageLayoutFile)
	}
	if err := strictJSON(layoutJSON, &a.Layout); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, v1.ImageLayoutFile, err)
	}
	if a.Layout.Version != v1.ImageLayoutVersion {
		return nil, fmt.Errorf("%w: %s: imageLayoutVersion %q, want %q", ErrInvalid, v1.ImageLayoutFile, a.Layout.Version, v1.ImageLayoutVersion)
	}
	if indexJSON == nil {
		return nil, fmt.Errorf("%w: no %s", ErrInvalid, v1.ImageIndexFile)
	}
	if err := strictJSON(indexJSON, &a.Index); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, v1.ImageIndexFile, err)
	}
	if a.Index.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: %s: schemaVersion %d", ErrInvalid, v1.ImageIndexFile, a.Index.SchemaVersion)
	}
	if len(a.Index.Manifests) != 1 {
		return nil, fmt.Errorf("%w: %s: %d manifests, want 1", ErrInvalid, v1.ImageIndexFile, len(a.Index.Manifests))
	}
	md := a.Index.Manifests[0]
	a.Ref = md.Annotations[AnnotationImageName]
	a.Tag = md.Annotations[AnnotationRefName]
	if md.MediaType != v1.MediaTypeImageManifest {
		return nil, fmt.Errorf("%w: %s: manifest media type %q", ErrInvalid, v1.ImageIndexFile, md.MediaType)
	}
	manJSON, err := a.blob(md, "manifest")
	if err != nil {
		return nil, err
	}
	if err := strictJSON(manJSON, &a.Manifest); err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %w", ErrInvalid, md.Digest, err)
	}
	if a.Manifest.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: manifest %s: schemaVersion %d", ErrInvalid, md.Digest, a.Manifest.SchemaVersion)
	}
	if a.Manifest.Config.MediaType != v1.MediaTypeImageConfig {
		return nil, fmt.Errorf("%w: manifest %s: config media type %q", ErrInvalid, md.Digest, a.Manifest.Config.MediaType)
	}
	cfgJSON, err := a.blob(a.Manifest.Config, "config")
	if err != nil {
		return nil, err
	}
	if err := strictJSON(cfgJSON, &a.Config); err != nil {
		return nil, fmt.Errorf("%w: config %s: %w", ErrInvalid, a.Manifest.Config.Digest, err)
	}
	if a.Config.RootFS.Type != "layers" || len(a.Config.RootFS.DiffIDs) != len(a.Manifest.Layers) {
		return nil, fmt.Errorf("%w: config %s: rootfs has %d diff IDs for %d layers", ErrInvalid, a.Manifest.Config.Digest, len(a.Config.RootFS.DiffIDs), len(a.Manifest.Layers))
	}
	for i, ld := range a.Manifest.Layers {
		data, err := a.blob(ld, fmt.Sprintf("layer %d", i))
		if err != nil {
			return nil, err
		}
		files, diffID, err := readLayer(ld.MediaType, data)
		if err != nil {
			return nil, fmt.Errorf("%w: layer %d (%s): %w", ErrInvalid, i, ld.Digest, err)
		}
		if want := a.Config.RootFS.DiffIDs[i]; diffID != want {
			return nil, fmt.Errorf("%w: layer %d (%s): uncompressed digest %s, config says %s", ErrInvalid, i, ld.Digest, diffID, want)
		}
		a.Files = append(a.Files, files...)
	}
	return a, nil
}

// File returns the last layer entry at p ("/coredns" or "coredns").
func (a *Archive) File(p string) (Entry, bool) {
	p = strings.TrimPrefix(p, "/")
	for i := len(a.Files) - 1; i >= 0; i-- {
		if a.Files[i].Path == p {
			return a.Files[i], true
		}
	}
	return Entry{}, false
}

func (a *Archive) blob(d v1.Descriptor, what string) ([]byte, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s descriptor: %w", ErrInvalid, what, err)
	}
	data, ok := a.Blobs[d.Digest]
	if !ok {
		return nil, fmt.Errorf("%w: %s blob %s missing", ErrInvalid, what, d.Digest)
	}
	if int64(len(data)) != d.Size {
		return nil, fmt.Errorf("%w: %s blob %s is %d bytes, descriptor says %d", ErrInvalid, what, d.Digest, len(data), d.Size)
	}
	return data, nil
}

func readLayer(mediaType string, data []byte) ([]Entry, digest.Digest, error) {
	var r io.Reader = bytes.NewReader(data)
	switch mediaType {
	case v1.MediaTypeImageLayerGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, "", err
		}
		r = zr
	case v1.MediaTypeImageLayerZstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, "", err
		}
		defer zr.Close()
		r = zr
	case v1.MediaTypeImageLayer:
	default:
		return nil, "", fmt.Errorf("media type %q not supported", mediaType)
	}
	dg := digest.SHA256.Digester()
	tr := tar.NewReader(io.TeeReader(r, dg.Hash()))
	var out []Entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, "", err
		}
		if len(out) >= maxEntries {
			return nil, "", fmt.Errorf("more than %d entries", maxEntries)
		}
		e := Entry{
			Path: strings.TrimSuffix(strings.TrimPrefix(hdr.Name, "./"), "/"),
			Mode: modeFromTar(hdr.Mode),
			UID:  hdr.Uid,
			GID:  hdr.Gid,
		}
		for k, v := range hdr.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[name] = v
			}
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			e.Type = File
			if e.Data, err = readAll(tr, maxLayerFile, hdr.Name); err != nil {
				return nil, "", err
			}
		case tar.TypeDir:
			e.Type = Dir
		case tar.TypeSymlink:
			e.Type = Symlink
			e.Target = hdr.Linkname
		default:
			continue
		}
		out = append(out, e)
	}
	// Read to the end so the diff ID covers the tar's trailing blocks too.
	if _, err := io.Copy(io.Discard, io.TeeReader(r, dg.Hash())); err != nil {
		return nil, "", err
	}
	return out, dg.Digest(), nil
}

func readAll(r io.Reader, limit int64, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrInvalid, name, limit)
	}
	return data, nil
}

// strictJSON decodes data into v, refusing unknown fields and trailing data.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// modeFromTar turns a tar header's mode into permission bits plus the
// setuid, setgid and sticky flags.
func modeFromTar(m int64) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}
