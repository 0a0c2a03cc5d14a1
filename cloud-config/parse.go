package cloudconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Header is the first line every cloud-config starts with.
const Header = "#cloud-config"

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Parse reads one cloud-config document. name is used in messages only.
//
// The first non-blank line must be "#cloud-config" (a k3OS config.yaml,
// recognised by its k3os: block, may leave it out; a leading UTF-8 BOM is
// allowed); an empty file is an empty config. Decoding is strict: unknown
// keys and wrong types are errors. Every problem is reported, not only the
// first: the error is an *ErrorList whose entries carry file, line,
// column and key path. On error the config is nil: a half-understood
// config must not be applied. Warnings are dropped; use ParseWithWarnings
// to show them.
func Parse(name string, data []byte) (*Config, error) {
	cfg, _, err := ParseWithWarnings(name, data)
	return cfg, err
}

// MaxSize bounds a cloud-config document.
const MaxSize = 4 << 20

// The alias expansion budget: values reached through aliases, and the
// bytes of the scalars among them.
const (
	expansionBudget = 100000
	expansionBytes  = 16 << 20
)

// ParseWithWarnings is Parse, also returning the warnings (unknown k3s
// options, k3OS keys ballast ignores), which do not stop the config from
// being applied. Warnings are returned even when there are errors.
func ParseWithWarnings(name string, data []byte) (*Config, []Warning, error) {
	c := newChecker(name)
	// A fixed budget for what aliases repeat, whatever the document's
	// size: a "billion laughs" document must not take PID 1's memory.
	c.budget, c.byteBudget = expansionBudget, expansionBytes
	var cfg *Config
	if len(data) > MaxSize {
		c.errs = append(c.errs, &Error{Source: name, Line: 1, Message: fmt.Sprintf("the cloud-config is %d bytes; ballast reads at most %d MiB (put large files in the image or fetch them in runcmd)", len(data), MaxSize>>20)})
	} else {
		cfg = c.parse(data)
	}
	if cfg != nil {
		c.validating = true
		cfg.check(c)
	}
	if err := c.result(); err != nil {
		return nil, c.warns, err
	}
	return cfg, c.warns, nil
}

// Validate checks one cloud-config and returns its warnings as printable
// lines and its errors as an *ErrorList; for `ballast validate`.
func Validate(name string, data []byte) (warnings []string, err error) {
	_, warns, err := ParseWithWarnings(name, data)
	for _, w := range warns {
		warnings = append(warnings, w.String())
	}
	return warnings, err
}

// ValidateFiles validates every file and returns every warning line and
// every error of every file: each error is an *Error, or a read error.
// The files are read, nothing is written.
func ValidateFiles(paths []string) (warnings []string, errs []error) {
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("read cloud-config: %w", err))
			continue
		}
		w, err := Validate(p, data)
		warnings = append(warnings, w...)
		var list *ErrorList
		switch {
		case errors.As(err, &list):
			for _, e := range list.Errors {
				errs = append(errs, e)
			}
		case err != nil:
			errs = append(errs, err)
		}
	}
	return warnings, errs
}

// Validate checks a Config built in code or merged from several sources.
// Its errors have keys but no positions.
func (cfg *Config) Validate() error {
	c := newChecker("")
	c.validating = true
	cfg.check(c)
	return c.result()
}

// yamlParserProblems are the messages of yaml.v3's parser (as opposed to
// its scanner): for these it prints the line where the construct began,
// counted from 0. (Scanner errors count from 1.)
var yamlParserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected key":              true,
	"did not find expected '-' indicator":    true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
	"found undefined tag handle":             true,
}

// yamlLineError matches yaml.v3's syntax errors, which carry a line only.
var yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parse checks the header and decodes the document into a Config; nil when
// it could not be read at all.
func (c *checker) parse(data []byte) (cfg *Config) {
	data = bytes.TrimPrefix(data, utf8BOM)
	if len(bytes.TrimSpace(data)) == 0 {
		return &Config{}
	}
	if !c.checkHeader(data) {
		return nil
	}
	if bad := firstInvalid(data); bad.line > 0 {
		c.errs = append(c.errs, &Error{Source: c.source, Line: bad.line, Column: bad.column, Message: "the file is not UTF-8 text"})
		return nil
	}

	var doc yaml.Node
	if err := c.yamlDecode(data, &doc); err != nil {
		return nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &Config{} // only the header and comments
	}
	root := doc.Content[0]
	if isNull(root) {
		return &Config{}
	}
	r, done, ok := c.resolve(root, "")
	if !ok {
		return nil
	}
	done()
	if r.Kind != yaml.MappingNode {
		c.errorAt(root, "", "a cloud-config is a map of keys (hostname: ..., write_files: ...), got %s", describe(r))
		return nil
	}
	cfg = &Config{}
	c.decode(root, reflect.ValueOf(cfg).Elem(), "")
	delete(c.pos, "")
	return cfg
}

// yamlDecode reads exactly one YAML document into doc.
func (c *checker) yamlDecode(data []byte, doc *yaml.Node) (err error) {
	defer func() {
		// yaml.v3 has panicked on hostile input before; PID 1 must not.
		if r := recover(); r != nil {
			c.errs = append(c.errs, &Error{Source: c.source, Line: 1, Message: fmt.Sprintf("YAML parser failed: %v", r)})
			err = errors.New("yaml panic")
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		c.syntaxError(data, err)
		return err
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		line := extra.Line
		if line == 0 && len(extra.Content) > 0 {
			line = extra.Content[0].Line
		}
		c.errs = append(c.errs, &Error{Source: c.source, Line: max(line, 1), Message: "a cloud-config is one YAML document; found a second one (after ---)"})
		return errors.New("second document")
	case !errors.Is(err, io.EOF):
		c.syntaxError(data, err)
		return err
	}
	return nil
}

func (c *checker) syntaxError(data []byte, err error) {
	msg := err.Error()
	if m := yamlLineError.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if yamlParserProblems[m[2]] {
			line++ // yaml.v3 reports parser errors' lines 0-based
		}
		c.errs = append(c.errs, &Error{Source: c.source, Line: line, Message: "YAML syntax: " + m[2]})
		return
	}
	if yamlParserProblems[strings.TrimPrefix(msg, "yaml: ")] {
		// A 0-based line 0, which yaml.v3 leaves out.
		c.errs = append(c.errs, &Error{Source: c.source, Line: 1, Message: "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")})
		return
	}
	// Reader errors (control characters...) come without a line: find the
	// first character YAML refuses.
	p := firstForbidden(data)
	if p.line == 0 {
		p.line = 1
	}
	c.errs = append(c.errs, &Error{Source: c.source, Line: p.line, Column: p.column, Message: "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")})
}

// isK3OSConfig: k3OS's config.yaml has no "#cloud-config" line; it is
// recognised by its top-level k3os: block, so that k3OS users' files are
// read as they are.
func isK3OSConfig(data []byte) (ok bool) {
	defer func() {
		if recover() != nil { // yaml.v3 has panicked on hostile input
			ok = false
		}
	}()
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return false
	}
	m := doc.Content[0].Content
	for i := 0; i+1 < len(m); i += 2 {
		if m[i].Value == "k3os" && m[i+1].Kind == yaml.MappingNode {
			return true
		}
	}
	return false
}

// checkHeader requires "#cloud-config" as the first non-blank line, except
// in a k3OS config.yaml.
func (c *checker) checkHeader(data []byte) bool {
	line, lineNo := "", 0
	for i, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) != "" {
			line, lineNo = strings.TrimSpace(l), i+1
			break
		}
	}
	if line == Header || isK3OSConfig(data) {
		return true
	}
	msg := fmt.Sprintf("the first line must be %q, found %q", Header, clip(line))
	if strings.HasPrefix(line, "#!") {
		msg += " (scripts are not supported as user-data: use bootcmd or runcmd)"
	}
	c.errs = append(c.errs, &Error{Source: c.source, Line: lineNo, Column: 1, Message: msg})
	return false
}

// firstInvalid is the position of the first byte that is not UTF-8.
func firstInvalid(data []byte) position {
	line, col := 1, 1
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		if r == utf8.RuneError && size <= 1 {
			return position{line, col}
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		data = data[size:]
	}
	return position{}
}

// firstForbidden is the position of the first character YAML does not
// allow in a stream (C0 controls other than tab, LF, CR; DEL; C1...).
func firstForbidden(data []byte) position {
	line, col := 1, 1
	for _, r := range string(data) {
		switch {
		case r == '\n':
			line, col = line+1, 1
			continue
		case r == '\t' || r == '\r':
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f && r != 0x85, r == 0xfffe, r == 0xffff:
			return position{line, col}
		}
		col++
	}
	return position{}
}
