package debian

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Field is one "Name: value" field of a deb822 stanza. Continuation lines
// are joined to Value with "\n", their leading space removed, so a
// multi-line field such as Release's SHA256 reads as one line per entry.
type Field struct {
	Name  string
	Value string
}

// Stanza is one paragraph of a deb822 file (Packages, Release, control).
type Stanza struct {
	Fields []Field
	// Line is the 1-based line where the stanza starts, for error messages.
	Line int
}

// Get returns the value of the field named name (case-insensitive, as
// deb822 field names are), and whether it was present.
func (s *Stanza) Get(name string) (string, bool) {
	for _, f := range s.Fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value, true
		}
	}
	return "", false
}

// Value is Get without the presence flag.
func (s *Stanza) Value(name string) string {
	v, _ := s.Get(name)
	return v
}

// maxLine bounds a single line so a hostile index cannot make us buffer
// without limit.
const maxLine = 16 << 20

// ParseStanzas reads deb822 paragraphs from r and calls fn for each one, in
// order. source names the input in errors ("http://.../Packages.xz").
// Lines starting with '#' are comments; a paragraph ends at a blank line.
func ParseStanzas(r io.Reader, source string, fn func(*Stanza) error) error {
	return parseStanzas(r, source, nil, fn)
}

// parseStanzas is ParseStanzas that keeps only the fields for which keep
// returns true (all when keep is nil): a Packages index is mostly
// descriptions that the resolver never reads.
func parseStanzas(r io.Reader, source string, keep func(name []byte) bool, fn func(*Stanza) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	var cur *Stanza
	var cont []string // continuation lines of the last field
	skipping := false // the current field is not kept
	flushField := func() {
		if cur != nil && len(cont) > 0 {
			last := &cur.Fields[len(cur.Fields)-1]
			last.Value = strings.Join(append([]string{last.Value}, cont...), "\n")
			cont = cont[:0]
		}
	}
	flush := func() error {
		flushField()
		if cur == nil {
			return nil
		}
		s := cur
		cur = nil
		return fn(s)
	}
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimRight(sc.Bytes(), "\r")
		if len(bytes.TrimSpace(b)) == 0 {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		if b[0] == '#' {
			continue
		}
		if b[0] == ' ' || b[0] == '\t' {
			if cur == nil {
				return fmt.Errorf("%s:%d: continuation line outside a field", source, line)
			}
			if skipping {
				continue
			}
			v := strings.TrimSpace(string(b))
			if v == "." {
				v = ""
			}
			cont = append(cont, v)
			continue
		}
		colon := bytes.IndexByte(b, ':')
		if colon <= 0 {
			return fmt.Errorf("%s:%d: expected \"Field: value\", got %q", source, line, truncate(string(b), 60))
		}
		if bytes.ContainsAny(b[:colon], " \t") {
			return fmt.Errorf("%s:%d: field name %q contains white space", source, line, truncate(string(b[:colon]), 60))
		}
		flushField()
		if cur == nil {
			cur = &Stanza{Line: line}
		}
		if skipping = keep != nil && !keep(b[:colon]); skipping {
			continue
		}
		cur.Fields = append(cur.Fields, Field{Name: string(b[:colon]), Value: strings.TrimSpace(string(b[colon+1:]))})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s:%d: line longer than %d bytes", source, line+1, maxLine)
		}
		return fmt.Errorf("%s:%d: %w", source, line+1, err)
	}
	return flush()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
