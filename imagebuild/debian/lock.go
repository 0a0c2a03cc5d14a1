package debian

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// LockVersion is the format version written to and accepted from lock files.
const LockVersion = 1

// Lock pins the exact packages of a build: ballast.lock. Suite is the
// archive's suite; a package taken from another suite of the mirror
// (FromSuite) names it in its own "suite" field.
type Lock struct {
	Version  int       `json:"version"`
	Mirror   string    `json:"mirror"`
	Suite    string    `json:"suite"`
	Arch     string    `json:"arch"`
	Packages []Package `json:"packages"`
}

// NewLock records pkgs (a Resolve result) for cfg's archive.
func NewLock(cfg Config, pkgs []Package) *Lock {
	cfg.FillDefaults()
	l := &Lock{Version: LockVersion, Mirror: cfg.Mirror, Suite: cfg.Suite, Arch: cfg.Arch,
		Packages: append([]Package(nil), pkgs...)}
	l.sort()
	return l
}

func (l *Lock) sort() {
	sort.SliceStable(l.Packages, func(i, j int) bool {
		if l.Packages[i].Name != l.Packages[j].Name {
			return l.Packages[i].Name < l.Packages[j].Name
		}
		return l.Packages[i].Arch < l.Packages[j].Arch
	})
}

// Find returns the pinned package called name, or nil.
func (l *Lock) Find(name string) *Package {
	for i := range l.Packages {
		if l.Packages[i].Name == name {
			return &l.Packages[i]
		}
	}
	return nil
}

// Marshal returns the lock's stable encoding: indented JSON, packages
// sorted by name, a trailing newline.
func (l *Lock) Marshal() ([]byte, error) {
	cp := *l
	cp.Packages = append([]Package(nil), l.Packages...)
	cp.sort()
	b, err := json.MarshalIndent(&cp, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Write stores the lock at path atomically.
func (l *Lock) Write(path string) error {
	b, err := l.Marshal()
	if err != nil {
		return fmt.Errorf("debian: lock %s: %w", path, err)
	}
	if err := writeFileAtomic(path, b); err != nil {
		return fmt.Errorf("debian: writing lock %s: %w", path, err)
	}
	return nil
}

// ReadLock reads and checks a lock file.
func ReadLock(path string) (*Lock, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("debian: reading lock: %w", err)
	}
	return ParseLock(b, filepath.Base(path))
}

// ParseLock decodes a lock file's contents; source names it in errors.
func ParseLock(b []byte, source string) (*Lock, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l Lock
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("debian: lock %s: %w", source, err)
	}
	if l.Version != LockVersion {
		return nil, fmt.Errorf("debian: lock %s: version %d, this ballast reads version %d", source, l.Version, LockVersion)
	}
	if l.Suite == "" || l.Arch == "" {
		return nil, fmt.Errorf("debian: lock %s: suite and arch are required", source)
	}
	seen := map[string]bool{}
	for i, p := range l.Packages {
		where := fmt.Sprintf("debian: lock %s: packages[%d] (%s)", source, i, p.Name)
		switch {
		case p.Name == "" || strings.ContainsAny(p.Name, " \t/"):
			return nil, fmt.Errorf("%s: bad name", where)
		case seen[p.Name]:
			return nil, fmt.Errorf("%s: listed twice", where)
		case !isHexSHA256(p.SHA256):
			return nil, fmt.Errorf("%s: bad sha256 %q", where, p.SHA256)
		case p.Size <= 0:
			return nil, fmt.Errorf("%s: bad size %d", where, p.Size)
		case p.Filename == "" || strings.HasPrefix(p.Filename, "/") || strings.Contains(p.Filename, ".."):
			return nil, fmt.Errorf("%s: bad filename %q", where, p.Filename)
		case p.Arch != l.Arch && p.Arch != "all":
			return nil, fmt.Errorf("%s: arch %q in a lock for %s", where, p.Arch, l.Arch)
		case p.Suite == l.Suite:
			return nil, fmt.Errorf("%s: suite %q is the lock's own: leave it out", where, p.Suite)
		case p.Suite != "" && checkSuiteName(p.Suite) != nil:
			return nil, fmt.Errorf("%s: bad suite %q", where, p.Suite)
		}
		if _, err := ParseVersion(p.Version); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		seen[p.Name] = true
		l.Packages[i].SHA256 = strings.ToLower(p.SHA256)
	}
	return &l, nil
}

// matches checks the lock was made for cfg's suite and architecture. A
// different mirror is fine: pool paths and hashes are the same everywhere.
func (l *Lock) matches(cfg Config) error {
	if l.Suite != cfg.Suite || l.Arch != cfg.Arch {
		return fmt.Errorf("debian: lock is for %s/%s, the build wants %s/%s; update the lock (run without --offline)",
			l.Suite, l.Arch, cfg.Suite, cfg.Arch)
	}
	return nil
}
