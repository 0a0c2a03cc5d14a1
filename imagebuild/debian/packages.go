package debian

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Package is one binary package from a Packages index (or a lock file).
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Arch is the package's architecture: the archive's ("amd64") or "all".
	Arch string `json:"arch"`
	// Filename is the path of the .deb relative to the mirror root
	// ("pool/main/b/bash/bash_5.2.37-2_amd64.deb").
	Filename string `json:"filename"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	// The raw relationship fields, kept so a lock file can be resolved
	// again without the index.
	Depends    string `json:"depends,omitempty"`
	PreDepends string `json:"pre_depends,omitempty"`
	Provides   string `json:"provides,omitempty"`
	MultiArch  string `json:"multi_arch,omitempty"`
	Essential  bool   `json:"essential,omitempty"`
	Priority   string `json:"priority,omitempty"`
	// Suite is the suite the package comes from when it is not the
	// archive's own (a kernel from trixie-backports); empty for the
	// archive's suite, so that a lock without such packages reads as
	// before.
	Suite string `json:"suite,omitempty"`
	// Component is the archive component the index came from ("main").
	Component string `json:"-"`
}

func (p *Package) String() string { return p.Name + " " + p.Version + " (" + p.Arch + ")" }

// ParsePackages reads a Packages index. source names the input in errors.
func ParsePackages(r io.Reader, source string) ([]Package, error) {
	var out []Package
	err := parseStanzas(r, source, packageField, func(s *Stanza) error {
		p, err := packageFromStanza(s)
		if err != nil {
			return fmt.Errorf("%s:%d: %w", source, s.Line, err)
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// packageField says which Packages fields packageFromStanza reads.
func packageField(name []byte) bool {
	switch len(name) {
	case 4, 6, 7, 8, 9, 10, 11, 12:
	default:
		return false
	}
	switch strings.ToLower(string(name)) {
	case "package", "version", "architecture", "filename", "size", "sha256",
		"depends", "pre-depends", "provides", "multi-arch", "essential", "priority":
		return true
	}
	return false
}

func packageFromStanza(s *Stanza) (Package, error) {
	var p Package
	for _, f := range s.Fields {
		switch strings.ToLower(f.Name) {
		case "package":
			p.Name = f.Value
		case "version":
			p.Version = f.Value
		case "architecture":
			p.Arch = f.Value
		case "filename":
			p.Filename = f.Value
		case "size":
			n, err := strconv.ParseInt(f.Value, 10, 64)
			if err != nil || n < 0 {
				return p, fmt.Errorf("package %q: bad Size %q", p.Name, truncate(f.Value, 40))
			}
			p.Size = n
		case "sha256":
			p.SHA256 = strings.ToLower(f.Value)
		case "depends":
			p.Depends = f.Value
		case "pre-depends":
			p.PreDepends = f.Value
		case "provides":
			p.Provides = f.Value
		case "multi-arch":
			p.MultiArch = f.Value
		case "essential":
			p.Essential = f.Value == "yes"
		case "priority":
			p.Priority = f.Value
		}
	}
	for _, req := range []struct{ name, v string }{
		{"Package", p.Name}, {"Version", p.Version}, {"Architecture", p.Arch}, {"Filename", p.Filename},
	} {
		if req.v == "" {
			return p, fmt.Errorf("package %q: missing %s field", p.Name, req.name)
		}
	}
	if !isHexSHA256(p.SHA256) {
		return p, fmt.Errorf("package %q: missing or bad SHA256 field", p.Name)
	}
	if _, err := ParseVersion(p.Version); err != nil {
		return p, fmt.Errorf("package %q: %w", p.Name, err)
	}
	if strings.Contains(p.Name, " ") || strings.Contains(p.Filename, "..") || strings.HasPrefix(p.Filename, "/") {
		return p, fmt.Errorf("package %q: bad name or filename %q", p.Name, p.Filename)
	}
	return p, nil
}
