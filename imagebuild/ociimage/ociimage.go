// Package ociimage writes single-image OCI image-layout archives: an
// uncompressed tar holding oci-layout, index.json and blobs/sha256/*, the
// form containerd imports from k3s's agent/images directory.
//
// An image here is one layer (gzip or zstd) built from a list of entries
// (files, directories, symlinks) plus an image config. Output is deterministic:
// entries are sorted, every timestamp is Image.Created, owners are numeric,
// and JSON is produced from the image-spec types, so the same Image gives
// the same bytes.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/klauspost/compress/zstd"
)

// Annotation keys written on the manifest descriptor in index.json.
const (
	// AnnotationImageName is the full reference containerd gives the
	// image when it imports the archive.
	AnnotationImageName = "io.containerd.image.name"
	// AnnotationRefName is the OCI tag of the image.
	AnnotationRefName = v1.AnnotationRefName
)

// EntryType says what an Entry is.
type EntryType int

const (
	File EntryType = iota
	Dir
	Symlink
)

func (t EntryType) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	}
	return fmt.Sprintf("EntryType(%d)", int(t))
}

// Entry is one path in the image's root file system.
type Entry struct {
	Path   string      // slash-separated, relative to / ("bin/sh" or "/bin/sh")
	Type   EntryType   // File, Dir or Symlink
	Mode   fs.FileMode // permission bits plus fs.ModeSetuid, ModeSetgid, ModeSticky
	UID    int
	GID    int
	Data   []byte            // File: the contents
	Target string            // Symlink: where it points
	Xattrs map[string]string // extended attributes, e.g. security.capability
}

// Compression is how the layer blob is compressed.
type Compression string

const (
	// Gzip is application/vnd.oci.image.layer.v1.tar+gzip at the best
	// level, the default (Image.Compression "").
	Gzip Compression = "gzip"
	// Zstd is application/vnd.oci.image.layer.v1.tar+zstd at
	// klauspost/compress's best level: Go binaries come out about 15%
	// smaller than with gzip. containerd 1.5 and later unpack it.
	Zstd Compression = "zstd"
)

// Config is the part of the image config that says how to run it.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string // "uid" or "uid:gid"; empty means root
	WorkingDir string
	Labels     map[string]string
	// Volumes are the image's VOLUME paths ("/var/lib/rancher/k3s").
	Volumes []string
	// StopSignal is the signal that stops the container ("SIGQUIT");
	// empty means the runtime's default, SIGTERM.
	StopSignal string `json:",omitempty"`
}

// Image is what Write turns into an archive.
type Image struct {
	// Ref is the full reference, with a tag: docker.io/rancher/mirrored-pause:3.6.
	Ref string
	// OS and Architecture in Go/OCI terms; OS defaults to "linux".
	OS           string
	Architecture string
	Config       Config
	// Created is the image's creation time and the mtime of every entry.
	Created time.Time
	// Entries are the layer's contents. Parent directories that are not
	// listed are added as root-owned 0755 directories.
	Entries []Entry
	// Compression of the layer; "" means Gzip.
	Compression Compression `json:",omitempty"`
	// RepoTags, when set, also makes the archive one that `docker load`
	// takes (Docker's manifest.json beside the OCI layout, naming the
	// config, the layer and these tags: "ballast/k3s:latest"). Docker
	// before 25 reads only manifest.json, and gzip layers only.
	RepoTags []string `json:",omitempty"`
}

// Tag returns the tag of a reference (the part after the last ':' that
// follows the last '/'), or "" when it has none.
func Tag(ref string) string {
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon <= slash {
		return ""
	}
	return ref[colon+1:]
}

// Validate checks what Write needs: a tagged reference, an architecture,
// and entries with clean, unique paths.
func (img *Image) Validate() error {
	if strings.Contains(img.Ref, "@") {
		return fmt.Errorf("image reference %q: digest references are not supported", img.Ref)
	}
	if Tag(img.Ref) == "" {
		return fmt.Errorf("image reference %q has no tag", img.Ref)
	}
	if img.Architecture == "" {
		return fmt.Errorf("image %s: no architecture", img.Ref)
	}
	switch img.Compression {
	case "", Gzip, Zstd:
	default:
		return fmt.Errorf("image %s: layer compression %q not supported (want %q or %q)", img.Ref, img.Compression, Gzip, Zstd)
	}
	seen := map[string]bool{}
	for i, e := range img.Entries {
		p, err := cleanPath(e.Path)
		if err != nil {
			return fmt.Errorf("image %s: entry %d: %w", img.Ref, i, err)
		}
		if seen[p] {
			return fmt.Errorf("image %s: entry %d: path %q listed twice", img.Ref, i, e.Path)
		}
		seen[p] = true
		switch e.Type {
		case File, Dir:
		case Symlink:
			if e.Target == "" {
				return fmt.Errorf("image %s: symlink %q has no target", img.Ref, e.Path)
			}
		default:
			return fmt.Errorf("image %s: entry %q: unknown type %v", img.Ref, e.Path, e.Type)
		}
		if e.UID < 0 || e.GID < 0 {
			return fmt.Errorf("image %s: entry %q: negative owner %d:%d", img.Ref, e.Path, e.UID, e.GID)
		}
	}
	return nil
}

func cleanPath(p string) (string, error) {
	c := path.Clean("/" + p)
	if c == "/" {
		return "", fmt.Errorf("path %q names the root", p)
	}
	if c != "/"+strings.TrimPrefix(p, "/") {
		return "", fmt.Errorf("path %q is not clean (want %q)", p, c)
	}
	return c[1:], nil
}

// WriteFile writes the archive to name atomically (a temporary file in the
// same directory, renamed into place).
func WriteFile(name string, img Image) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("writing image %s: %w", img.Ref, err)
	}
	defer os.Remove(tmp.Name())
	if err := Write(tmp, img); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("writing image %s: %w", img.Ref, err)
	}
	return nil
}

// Write writes img as an OCI image-layout tar archive to w.
func Write(w io.Writer, img Image) error {
	if err := img.Validate(); err != nil {
		return err
	}
	created := img.Created.UTC().Truncate(time.Second)
	osName := img.OS
	if osName == "" {
		osName = "linux"
	}

	layer, diffID, err := buildLayer(img.Entries, created, img.Compression)
	if err != nil {
		return fmt.Errorf("image %s: layer: %w", img.Ref, err)
	}
	layerDesc := v1.Descriptor{
		MediaType: v1.MediaTypeImageLayerGzip,
		Digest:    digest.FromBytes(layer),
		Size:      int64(len(layer)),
	}
	if img.Compression == Zstd {
		layerDesc.MediaType = v1.MediaTypeImageLayerZstd
	}

	cfg := v1.Image{
		Created:  &created,
		Platform: v1.Platform{Architecture: img.Architecture, OS: osName},
		Config: v1.ImageConfig{
			User:       img.Config.User,
			Env:        img.Config.Env,
			Entrypoint: img.Config.Entrypoint,
			Cmd:        img.Config.Cmd,
			WorkingDir: img.Config.WorkingDir,
			Labels:     img.Config.Labels,
			Volumes:    volumes(img.Config.Volumes),
			StopSignal: img.Config.StopSignal,
		},
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		History: []v1.History{{
			Created:   &created,
			CreatedBy: "ballast ociimage",
		}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("image %s: config: %w", img.Ref, err)
	}
	cfgDesc := v1.Descriptor{
		MediaType: v1.MediaTypeImageConfig,
		Digest:    digest.FromBytes(cfgJSON),
		Size:      int64(len(cfgJSON)),
	}

	manifest := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    []v1.Descriptor{layerDesc},
		Annotations: map[string]string{
			v1.AnnotationCreated: created.Format(time.RFC3339),
		},
	}
	manJSON, err := json.Marshal(manifest)
	if err != nil {
		return fmt.Errorf("image %s: manifest: %w", img.Ref, err)
	}
	platform := cfg.Platform
	index := v1.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: v1.MediaTypeImageManifest,
			Digest:    digest.FromBytes(manJSON),
			Size:      int64(len(manJSON)),
			Platform:  &platform,
			Annotations: map[string]string{
				AnnotationImageName: img.Ref,
				AnnotationRefName:   Tag(img.Ref),
			},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return fmt.Errorf("image %s: index: %w", img.Ref, err)
	}
	layoutJSON, err := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	if err != nil {
		return err
	}

	blobs := map[digest.Digest][]byte{
		layerDesc.Digest:          layer,
		cfgDesc.Digest:            cfgJSON,
		digest.FromBytes(manJSON): manJSON,
	}
	tw := tar.NewWriter(w)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: created, Format: tar.FormatPAX})
	}
	file := func(name string, data []byte) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: created, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := dir("blobs/"); err != nil {
		return err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return err
	}
	keys := make([]string, 0, len(blobs))
	for d := range blobs {
		keys = append(keys, string(d))
	}
	sort.Strings(keys)
	for _, k := range keys {
		d := digest.Digest(k)
		if err := file("blobs/sha256/"+d.Encoded(), blobs[d]); err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
	}
	if err := file(v1.ImageIndexFile, indexJSON); err != nil {
		return fmt.Errorf("image %s: %w", img.Ref, err)
	}
	if err := file(v1.ImageLayoutFile, layoutJSON); err != nil {
		return fmt.Errorf("image %s: %w", img.Ref, err)
	}
	if len(img.RepoTags) > 0 {
		dm, err := json.Marshal([]dockerManifest{{
			Config:   "blobs/sha256/" + cfgDesc.Digest.Encoded(),
			RepoTags: img.RepoTags,
			Layers:   []string{"blobs/sha256/" + layerDesc.Digest.Encoded()},
		}})
		if err != nil {
			return err
		}
		if err := file("manifest.json", dm); err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image %s: %w", img.Ref, err)
	}
	return nil
}

// dockerManifest is one entry of the manifest.json of `docker save`.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func volumes(paths []string) map[string]struct{} {
	if len(paths) == 0 {
		return nil
	}
	m := make(map[string]struct{}, len(paths))
	for _, p := range paths {
		m[p] = struct{}{}
	}
	return m
}

// buildLayer returns the compressed layer tar and the digest of the
// uncompressed tar (the config's diff ID).
func buildLayer(entries []Entry, mtime time.Time, c Compression) ([]byte, digest.Digest, error) {
	all, err := withParents(entries)
	if err != nil {
		return nil, "", err
	}
	var gz bytes.Buffer
	var zw io.WriteCloser
	if c == Zstd {
		// One goroutine: the frame is the same on every machine.
		zw, err = zstd.NewWriter(&gz, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	} else {
		// gzip.Writer's header has a zero ModTime and no name unless
		// set, so the compressed bytes depend on the content alone.
		zw, err = gzip.NewWriterLevel(&gz, gzip.BestCompression)
	}
	if err != nil {
		return nil, "", err
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	for _, e := range all {
		hdr, err := header(e, mtime)
		if err != nil {
			return nil, "", err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, "", fmt.Errorf("%s: %w", e.Path, err)
		}
		if e.Type == File {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, "", fmt.Errorf("%s: %w", e.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), digest.NewDigest(digest.SHA256, diff), nil
}

// withParents returns the entries with cleaned paths, sorted, and with a
// directory entry for every parent not listed.
func withParents(entries []Entry) ([]Entry, error) {
	byPath := map[string]Entry{}
	for _, e := range entries {
		p, err := cleanPath(e.Path)
		if err != nil {
			return nil, err
		}
		e.Path = p
		byPath[p] = e
	}
	for p := range byPath {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if e, ok := byPath[d]; ok {
				if e.Type != Dir {
					return nil, fmt.Errorf("%q is inside %q, which is a %v", p, d, e.Type)
				}
				continue
			}
			byPath[d] = Entry{Path: d, Type: Dir, Mode: 0o755}
		}
	}
	out := make([]Entry, 0, len(byPath))
	for _, e := range byPath {
		out = append(out, e)
	}
	// Sorting by path puts every directory before what it holds.
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func header(e Entry, mtime time.Time) (*tar.Header, error) {
	hdr := &tar.Header{
		Name:    e.Path,
		Mode:    int64(e.Mode.Perm()),
		Uid:     e.UID,
		Gid:     e.GID,
		ModTime: mtime,
		Format:  tar.FormatPAX,
	}
	if e.Mode&fs.ModeSetuid != 0 {
		hdr.Mode |= 0o4000
	}
	if e.Mode&fs.ModeSetgid != 0 {
		hdr.Mode |= 0o2000
	}
	if e.Mode&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	switch e.Type {
	case File:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = int64(len(e.Data))
	case Dir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case Symlink:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = e.Target
		if hdr.Mode == 0 {
			hdr.Mode = 0o777
		}
	default:
		return nil, fmt.Errorf("%s: unknown entry type %v", e.Path, e.Type)
	}
	if len(e.Xattrs) > 0 {
		hdr.PAXRecords = map[string]string{}
		for k, v := range e.Xattrs {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return nil, fmt.Errorf("%s: bad extended attribute name %q", e.Path, k)
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	return hdr, nil
}

// ErrInvalid is wrapped by every error Read returns about the archive's
// content (as opposed to I/O errors).
var ErrInvalid = errors.New("invalid OCI image archive")

// XattrCapability is the extended attribute holding a file's capabilities.
const XattrCapability = "security.capability"

// FileCapabilities returns the value of a security.capability attribute
// that grants caps (capability numbers, e.g. 10 for CAP_NET_BIND_SERVICE)
// as permitted and effective, what `setcap cap_x=+ep` writes: struct
// vfs_cap_data, revision 2, little-endian.
func FileCapabilities(caps ...uint) string {
	const (
		revision2 = 0x02000000
		effective = 0x000001
	)
	var permitted [2]uint32
	for _, c := range caps {
		permitted[c/32] |= 1 << (c % 32)
	}
	b := make([]byte, 0, 20)
	b = binary.LittleEndian.AppendUint32(b, revision2|effective)
	for _, p := range permitted {
		b = binary.LittleEndian.AppendUint32(b, p) // permitted
		b = binary.LittleEndian.AppendUint32(b, 0) // inheritable
	}
	return string(b)
}
