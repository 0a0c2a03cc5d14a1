package debian

import (
	"fmt"
	"strings"
)

// Relation is one term of a Depends-style field: "libc6 (>= 2.36)",
// "python3:any", "foo (= 1.0) [amd64]".
type Relation struct {
	Name string
	// ArchQual is the ":any" / ":native" / ":amd64" qualifier, without the colon.
	ArchQual string
	// Op is one of "<<", "<=", "=", ">=", ">>" (the obsolete "<" and ">"
	// are read as "<=" and ">="), or "" for any version.
	Op      string
	Version string
	// Archs is the "[amd64 !i386]" restriction list, rarely seen outside
	// Build-Depends.
	Archs []string
}

func (r Relation) String() string {
	s := r.Name
	if r.ArchQual != "" {
		s += ":" + r.ArchQual
	}
	if r.Op != "" {
		s += " (" + r.Op + " " + r.Version + ")"
	}
	return s
}

// Alternatives is an or-group, "a | b | c"; the first satisfiable one wins.
type Alternatives []Relation

func (a Alternatives) String() string {
	parts := make([]string, len(a))
	for i, r := range a {
		parts[i] = r.String()
	}
	return strings.Join(parts, " | ")
}

// ParseRelations parses a comma-separated Depends/Pre-Depends/Provides field.
func ParseRelations(field string) ([]Alternatives, error) {
	var out []Alternatives
	for _, group := range strings.Split(field, ",") {
		if strings.TrimSpace(group) == "" {
			continue
		}
		var alts Alternatives
		for _, term := range strings.Split(group, "|") {
			r, err := parseRelation(term)
			if err != nil {
				return nil, err
			}
			alts = append(alts, r)
		}
		out = append(out, alts)
	}
	return out, nil
}

func parseRelation(term string) (Relation, error) {
	var r Relation
	s := strings.TrimSpace(term)
	// Build profiles "<!nocheck>" never matter for binary packages.
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case '<':
			if depth == 0 {
				s = strings.TrimSpace(s[:i])
			}
		}
	}
	if i := strings.IndexByte(s, '['); i >= 0 {
		j := strings.IndexByte(s[i:], ']')
		if j < 0 {
			return r, fmt.Errorf("relation %q: unterminated [", term)
		}
		r.Archs = strings.Fields(s[i+1 : i+j])
		s = strings.TrimSpace(s[:i] + s[i+j+1:])
	}
	if i := strings.IndexByte(s, '('); i >= 0 {
		j := strings.LastIndexByte(s, ')')
		if j < i || strings.TrimSpace(s[j+1:]) != "" {
			return r, fmt.Errorf("relation %q: unbalanced parentheses", term)
		}
		c := strings.TrimSpace(s[i+1 : j])
		s = strings.TrimSpace(s[:i])
		k := 0
		for k < len(c) && strings.IndexByte("<=>", c[k]) >= 0 {
			k++
		}
		r.Op, r.Version = c[:k], strings.TrimSpace(c[k:])
		switch r.Op {
		case "<<", "<=", "=", ">=", ">>":
		case "<":
			r.Op = "<="
		case ">":
			r.Op = ">="
		default:
			return r, fmt.Errorf("relation %q: unknown operator %q", term, r.Op)
		}
		if r.Version == "" || strings.ContainsAny(r.Version, " \t") {
			return r, fmt.Errorf("relation %q: bad version %q", term, r.Version)
		}
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		r.ArchQual = s[i+1:]
		s = s[:i]
	}
	if s == "" || strings.ContainsAny(s, " \t()[]|,") {
		return r, fmt.Errorf("relation %q: bad package name %q", term, s)
	}
	r.Name = s
	return r, nil
}

// Satisfies reports whether version v meets the relation's constraint.
func (r Relation) Satisfies(v string) bool {
	if r.Op == "" {
		return true
	}
	c := CompareVersions(v, r.Version)
	switch r.Op {
	case "<<":
		return c < 0
	case "<=":
		return c <= 0
	case "=":
		return c == 0
	case ">=":
		return c >= 0
	case ">>":
		return c > 0
	}
	return false
}

// appliesTo reports whether an "[amd64 !i386]" restriction admits arch.
func (r Relation) appliesTo(arch string) bool {
	if len(r.Archs) == 0 {
		return true
	}
	negated := strings.HasPrefix(r.Archs[0], "!")
	for _, a := range r.Archs {
		if strings.TrimPrefix(a, "!") == arch {
			return !negated
		}
	}
	return negated
}
