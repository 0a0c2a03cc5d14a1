package debian

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// SourcePackage is one source package from a Sources index: where its
// files lie in the pool and what they hash to.
type SourcePackage struct {
	Name    string
	Version string
	// Directory is the pool folder of its files, relative to the mirror
	// root ("pool/main/b/busybox").
	Directory string
	// Files are the .dsc, the upstream (orig) tarballs and their
	// signatures, and the Debian tarball or diff, from Checksums-Sha256.
	Files []SourceFile
	// Component is the archive component the index came from ("main").
	Component string
}

// SourceFile is one file of a source package.
type SourceFile struct {
	Name   string // "busybox_1.37.0.orig.tar.bz2"
	Size   int64
	SHA256 string
}

func (sp *SourcePackage) String() string { return sp.Name + " " + sp.Version + " (source)" }

// File returns the file called name.
func (sp *SourcePackage) File(name string) (SourceFile, bool) {
	for _, f := range sp.Files {
		if f.Name == name {
			return f, true
		}
	}
	return SourceFile{}, false
}

// Orig returns the upstream tarball, <name>_<upstream version>.orig.tar.<compression>,
// as the upstream project released it: the source without Debian's
// changes, which live in the .debian.tar or .diff file beside it.
func (sp *SourcePackage) Orig() (SourceFile, error) {
	v, err := ParseVersion(sp.Version)
	if err != nil {
		return SourceFile{}, fmt.Errorf("debian: source package %s: %w", sp.Name, err)
	}
	prefix := sp.Name + "_" + v.Upstream + ".orig.tar."
	for _, f := range sp.Files {
		if ext, ok := strings.CutPrefix(f.Name, prefix); ok && !strings.Contains(ext, ".") {
			return f, nil
		}
	}
	return SourceFile{}, fmt.Errorf("debian: source package %s %s has no %s* (a native package, or one without a single upstream tarball)",
		sp.Name, sp.Version, prefix)
}

// ErrNoSourcePackage is wrapped when the suite has no source package of
// the name asked for.
var ErrNoSourcePackage = errors.New("no such source package")

// SourcePackage returns the source package called name from the Sources
// indexes of the archive's components, the highest version if there are
// several. The Sources indexes are fetched (and verified against
// InRelease) on the first call only: a build that asks for no source
// downloads none.
func (a *Archive) SourcePackage(ctx context.Context, name string) (*SourcePackage, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sources == nil {
		if err := a.loadSources(ctx); err != nil {
			return nil, err
		}
	}
	var best *SourcePackage
	for _, sp := range a.sources[name] {
		if best == nil || CompareVersions(sp.Version, best.Version) > 0 {
			best = sp
		}
	}
	if best == nil {
		return nil, fmt.Errorf("debian: %w %q in %s (components %s)", ErrNoSourcePackage, name, a.cfg.Suite, strings.Join(a.cfg.Components, ", "))
	}
	cp := *best
	cp.Files = append([]SourceFile(nil), best.Files...)
	return &cp, nil
}

// loadSources reads every component's Sources index; the caller holds a.mu.
func (a *Archive) loadSources(ctx context.Context) error {
	rel, err := a.loadRelease(ctx)
	if err != nil {
		return err
	}
	all := map[string][]*SourcePackage{}
	for _, comp := range a.cfg.Components {
		r, src, err := a.openIndex(ctx, a.cfg.Suite, rel, comp+"/source/Sources", fmt.Sprintf("does %s publish sources of %q?", a.cfg.Suite, comp))
		if err != nil {
			return err
		}
		srcs, err := ParseSources(r, src)
		r.Close()
		if err != nil {
			return fmt.Errorf("debian: %w", err)
		}
		for i := range srcs {
			srcs[i].Component = comp
			all[srcs[i].Name] = append(all[srcs[i].Name], &srcs[i])
		}
	}
	a.sources = all
	return nil
}

// ParseSources reads a Sources index. source names the input in errors.
// Stanzas marked Extra-Source-Only (kept in the archive for another
// package's Built-Using, not the suite's own source) are left out.
func ParseSources(r io.Reader, source string) ([]SourcePackage, error) {
	var out []SourcePackage
	err := parseStanzas(r, source, sourceField, func(s *Stanza) error {
		if strings.EqualFold(s.Value("Extra-Source-Only"), "yes") {
			return nil
		}
		sp, err := sourceFromStanza(s)
		if err != nil {
			return fmt.Errorf("%s:%d: %w", source, s.Line, err)
		}
		out = append(out, sp)
		return nil
	})
	return out, err
}

// sourceField says which Sources fields sourceFromStanza reads.
func sourceField(name []byte) bool {
	switch strings.ToLower(string(name)) {
	case "package", "version", "directory", "checksums-sha256", "extra-source-only":
		return true
	}
	return false
}

func sourceFromStanza(s *Stanza) (SourcePackage, error) {
	sp := SourcePackage{Name: s.Value("Package"), Version: s.Value("Version"), Directory: s.Value("Directory")}
	for _, req := range []struct{ name, v string }{
		{"Package", sp.Name}, {"Version", sp.Version}, {"Directory", sp.Directory},
	} {
		if req.v == "" {
			return sp, fmt.Errorf("source package %q: missing %s field", sp.Name, req.name)
		}
	}
	if strings.ContainsAny(sp.Name, " \t/") {
		return sp, fmt.Errorf("source package %q: bad name", truncate(sp.Name, 60))
	}
	if _, err := ParseVersion(sp.Version); err != nil {
		return sp, fmt.Errorf("source package %q: %w", sp.Name, err)
	}
	if !safeRelPath(sp.Directory) {
		return sp, fmt.Errorf("source package %q: bad Directory %q", sp.Name, truncate(sp.Directory, 80))
	}
	sums, ok := s.Get("Checksums-Sha256")
	if !ok {
		return sp, fmt.Errorf("source package %q: missing Checksums-Sha256 field", sp.Name)
	}
	for i, l := range strings.Split(sums, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		parts := strings.Fields(l)
		if len(parts) != 3 {
			return sp, fmt.Errorf("source package %q: Checksums-Sha256 entry %d: want \"sha256 size name\", got %q", sp.Name, i, truncate(l, 80))
		}
		if !isHexSHA256(parts[0]) {
			return sp, fmt.Errorf("source package %q: Checksums-Sha256 entry %d (%s): bad hash %q", sp.Name, i, truncate(parts[2], 80), truncate(parts[0], 80))
		}
		size, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || size < 0 {
			return sp, fmt.Errorf("source package %q: Checksums-Sha256 entry %d (%s): bad size %q", sp.Name, i, truncate(parts[2], 80), truncate(parts[1], 40))
		}
		name := parts[2]
		if name != path.Base(name) || name == "." || name == ".." || strings.ContainsRune(name, '\\') {
			return sp, fmt.Errorf("source package %q: Checksums-Sha256 entry %d: bad file name %q", sp.Name, i, truncate(name, 80))
		}
		if _, dup := sp.File(name); dup {
			return sp, fmt.Errorf("source package %q: Checksums-Sha256 lists %s twice", sp.Name, name)
		}
		sp.Files = append(sp.Files, SourceFile{Name: name, Size: size, SHA256: strings.ToLower(parts[0])})
	}
	if len(sp.Files) == 0 {
		return sp, fmt.Errorf("source package %q: Checksums-Sha256 lists no files", sp.Name)
	}
	return sp, nil
}

// safeRelPath says p is a clean relative path that stays below its root.
func safeRelPath(p string) bool {
	return p != "" && !strings.HasPrefix(p, "/") && !strings.ContainsRune(p, '\\') &&
		path.Clean(p) == p && p != "." && p != ".." && !strings.HasPrefix(p, "../")
}

// sourcePath is where a verified source file lies in the cache: in a
// folder named by its hash, under its own name (tools that unpack it go
// by the name's suffix).
func (a *Archive) sourcePath(f SourceFile) string {
	return filepath.Join(a.root(), "sources", f.SHA256, f.Name)
}

// FetchSourceFile returns the path in the cache of the file called
// filename of sp (one of sp.Files), downloading it from the pool when the
// cache does not hold it. The file is checked against the size and
// SHA-256 of the Sources index before it gets its name, and a cached one
// is hashed again on every call (source tarballs are a few MB; a file
// changed in the cache is fetched anew, or refused offline).
func (a *Archive) FetchSourceFile(ctx context.Context, sp *SourcePackage, filename string) (string, error) {
	f, ok := sp.File(filename)
	if !ok {
		var have []string
		for _, f := range sp.Files {
			have = append(have, f.Name)
		}
		return "", fmt.Errorf("debian: source package %s %s has no file %q (it has %s)", sp.Name, sp.Version, filename, strings.Join(have, ", "))
	}
	if !isHexSHA256(f.SHA256) || !safeRelPath(sp.Directory) || f.Name != path.Base(f.Name) {
		return "", fmt.Errorf("debian: source package %s %s: bad directory, name or hash for %q", sp.Name, sp.Version, filename)
	}
	final := a.sourcePath(f)
	err := checkFile(final, f.Size, f.SHA256)
	if err == nil {
		return final, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		os.Remove(final)
		if a.cfg.Offline {
			return "", fmt.Errorf("debian: source package %s %s: cached %s: %w (removed; run without --offline to fetch it again)", sp.Name, sp.Version, final, err)
		}
	} else if a.cfg.Offline {
		return "", fmt.Errorf("debian: source package %s %s: %s is not in the cache (offline); run without --offline to fetch it",
			sp.Name, sp.Version, filename)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", fmt.Errorf("debian: %w", err)
	}
	u := a.cfg.Mirror + "/" + sp.Directory + "/" + f.Name
	if err := a.fetchFile(ctx, u, f.Name, final, f.Size, f.SHA256); err != nil {
		return "", fmt.Errorf("debian: source package %s %s: %w", sp.Name, sp.Version, err)
	}
	return final, nil
}

// checkFile hashes the file at p and compares it with size and sum.
func checkFile(p string, size int64, sum string) error {
	fh, err := os.Open(p)
	if err != nil {
		return err
	}
	defer fh.Close()
	if st, err := fh.Stat(); err != nil {
		return err
	} else if st.Size() != size {
		return fmt.Errorf("%w: size %d, want %d", ErrHashMismatch, st.Size(), size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("%w: sha256 %s, want %s", ErrHashMismatch, got, sum)
	}
	return nil
}

// fetchFile downloads u into final through a temporary file beside it,
// checking size and SHA-256 before the rename, so the name never holds a
// partial or wrong file. label names the download in progress lines.
func (a *Archive) fetchFile(ctx context.Context, u, label, final string, size int64, sum string) error {
	f, err := os.CreateTemp(filepath.Dir(final), ".tmp-"+filepath.Base(final)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this is a no-op
	var h hash.Hash
	var n int64
	err = a.download(ctx, u, label, size, func() (io.Writer, error) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		if err := f.Truncate(0); err != nil {
			return nil, err
		}
		h, n = sha256.New(), 0
		return io.MultiWriter(f, h, &limitedWriter{w: countWriter{&n}, n: size + 1, url: u}), nil
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != size || got != sum {
		return fmt.Errorf("%s: %w: got sha256 %s size %d, want sha256 %s size %d", u, ErrHashMismatch, got, n, sum, size)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, final)
}
