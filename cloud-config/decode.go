package cloudconfig

import (
	"encoding/base64"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// position is where a key's value starts in the file.
type position struct{ line, column int }

// checker collects the errors and warnings of one document, and knows
// where each key path sits in the file (from decoding), so the validation
// pass, which works on typed values, can still point at lines.
type checker struct {
	source string
	pos    map[string]position
	// keyPos is where a map key itself is written, for messages about the
	// key's name rather than its value.
	keyPos map[string]position
	errs   []*Error
	warns  []Warning
	// budget bounds the work of expanding aliases: "a: &a [*b, *b, ...]"
	// chains grow exponentially, and init must never hang on a config.
	budget     int
	byteBudget int
	expanding  map[*yaml.Node]bool
	exhausted  bool
	// validating is set after decoding; bad holds the key paths that
	// failed to decode, whose (zero) values validation then skips.
	validating bool
	bad        map[string]bool
}

func newChecker(source string) *checker {
	return &checker{source: source, pos: map[string]position{}, keyPos: map[string]position{}, expanding: map[*yaml.Node]bool{}, bad: map[string]bool{}}
}

// at finds the position of path, or of its closest parent that has one.
func (c *checker) at(path string) position {
	for {
		if p, ok := c.pos[path]; ok {
			return p
		}
		parent, ok := parentPath(path)
		if !ok {
			return position{}
		}
		path = parent
	}
}

func (c *checker) errorf(path, format string, args ...any) {
	if c.validating && c.hasDecodeError(path) {
		return // the value was not decoded; checking it would only add noise
	}
	if !c.validating {
		c.bad[path] = true
	}
	p := c.at(path)
	c.errs = append(c.errs, &Error{Source: c.source, Line: p.line, Column: p.column, Key: path, Message: fmt.Sprintf(format, args...)})
}

// hasDecodeError says whether path or a parent of it failed to decode.
func (c *checker) hasDecodeError(path string) bool {
	for {
		if c.bad[path] {
			return true
		}
		parent, ok := parentPath(path)
		if !ok {
			return false
		}
		path = parent
	}
}

func (c *checker) errorAt(n *yaml.Node, path, format string, args ...any) {
	if !c.validating {
		c.bad[path] = true
	}
	c.errs = append(c.errs, &Error{Source: c.source, Line: n.Line, Column: n.Column, Key: path, Message: fmt.Sprintf(format, args...)})
}

func (c *checker) warnf(path, format string, args ...any) {
	p := c.at(path)
	c.warns = append(c.warns, Warning{Source: c.source, Line: p.line, Column: p.column, Key: path, Message: fmt.Sprintf(format, args...)})
}

// atKey is the position of the map key at path, else of its value.
func (c *checker) atKey(path string) position {
	if p, ok := c.keyPos[path]; ok {
		return p
	}
	return c.at(path)
}

// keyErrorf reports a problem with a map key's name, at the key.
func (c *checker) keyErrorf(path, format string, args ...any) {
	if c.validating && c.hasDecodeError(path) {
		return
	}
	p := c.atKey(path)
	c.errs = append(c.errs, &Error{Source: c.source, Line: p.line, Column: p.column, Key: path, Message: fmt.Sprintf(format, args...)})
}

// keyWarnf warns about a map key's name, at the key.
func (c *checker) keyWarnf(path, format string, args ...any) {
	p := c.atKey(path)
	c.warns = append(c.warns, Warning{Source: c.source, Line: p.line, Column: p.column, Key: path, Message: fmt.Sprintf(format, args...)})
}

// result sorts what was found and returns the error list, nil when clean.
func (c *checker) result() error {
	sortDiagnostics(c.errs, func(e *Error) (int, int) { return e.Line, e.Column })
	sortDiagnostics(c.warns, func(w Warning) (int, int) { return w.Line, w.Column })
	if len(c.errs) == 0 {
		return nil
	}
	return &ErrorList{Errors: c.errs}
}

// Key paths: "a.b[3].c"; a map key that is not a plain word is quoted,
// `ballast.sysctls["net.ipv4.ip_forward"]`, so the path reads back.

func joinKey(path, key string) string {
	if key == "" || strings.ContainsAny(key, ".[]\" \t\n") {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func joinIndex(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// parentPath drops the last element of a key path.
func parentPath(path string) (string, bool) {
	if path == "" {
		return "", false
	}
	if strings.HasSuffix(path, "\"]") {
		// A quoted key: find its opening `["` by unquoting candidates
		// from the right.
		for i := strings.LastIndex(path, "[\""); i >= 0; i = strings.LastIndex(path[:i], "[\"") {
			if _, err := strconv.Unquote(path[i+1 : len(path)-1]); err == nil {
				return path[:i], true
			}
		}
		return "", true
	}
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndex(path, "["); i >= 0 {
			return path[:i], true
		}
	}
	if i := strings.LastIndex(path, "."); i >= 0 {
		return path[:i], true
	}
	return "", true
}

// describe names what a node is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing (null)"
		case "!!bool":
			return "a boolean (" + n.Value + ")"
		case "!!int", "!!float":
			return "a number (" + n.Value + ")"
		}
		return fmt.Sprintf("the string %q", clip(n.Value))
	}
	return "an unexpected YAML node"
}

// clip shortens long values quoted in messages (keys, certificates).
func clip(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// resolve follows an alias, refusing one that refers to itself and
// counting the work against the budget. ok is false when decoding must
// not descend.
func (c *checker) resolve(n *yaml.Node, path string) (*yaml.Node, func(), bool) {
	if len(c.expanding) > 0 {
		// Only what aliases repeat costs: the document's own values are
		// bounded by its size (MaxSize).
		c.budget--
		if n.Kind == yaml.ScalarNode {
			c.byteBudget -= len(n.Value)
		}
	}
	if c.budget < 0 || c.byteBudget < 0 {
		if !c.exhausted {
			c.exhausted = true
			c.errorAt(n, path, "the document expands to too many values through its aliases (more than %d values or %d MiB repeated: an alias bomb?)", expansionBudget, expansionBytes>>20)
		}
		return nil, nil, false
	}
	if n.Kind != yaml.AliasNode {
		return n, func() {}, true
	}
	target := n.Alias
	if target == nil {
		c.errorAt(n, path, "unknown alias *%s", n.Value)
		return nil, nil, false
	}
	if c.expanding[target] {
		c.errorAt(n, path, "alias *%s refers to a value that contains it", n.Value)
		return nil, nil, false
	}
	c.expanding[target] = true
	inner, done, ok := c.resolve(target, path)
	if !ok {
		delete(c.expanding, target)
		return nil, nil, false
	}
	return inner, func() { done(); delete(c.expanding, target) }, true
}

// pair is one key: value of a mapping.
type pair struct{ key, value *yaml.Node }

// pairs lists a mapping's entries, with YAML merge keys ("<<: *base")
// expanded: keys written in the mapping win over merged ones. Duplicate and
// non-string keys are errors.
func (c *checker) pairs(n *yaml.Node, path string) []pair {
	var explicit, merged []pair
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, c.mergePairs(v, path)...)
			continue
		}
		kr, done, ok := c.resolve(k, path)
		if !ok {
			continue
		}
		done()
		if kr.Kind != yaml.ScalarNode {
			c.errorAt(k, path, "keys must be strings, got %s", describe(kr))
			continue
		}
		if first, dup := seen[kr.Value]; dup {
			c.errorAt(k, joinKey(path, kr.Value), "key is already set at line %d", first.Line)
			continue
		}
		seen[kr.Value] = k
		explicit = append(explicit, pair{&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: kr.Value, Line: k.Line, Column: k.Column}, v})
	}
	for _, p := range merged {
		if _, dup := seen[p.key.Value]; !dup {
			seen[p.key.Value] = p.key
			explicit = append(explicit, p)
		}
	}
	return explicit
}

func (c *checker) mergePairs(v *yaml.Node, path string) []pair {
	r, done, ok := c.resolve(v, path)
	if !ok {
		return nil
	}
	defer done()
	switch r.Kind {
	case yaml.MappingNode:
		return c.pairs(r, path)
	case yaml.SequenceNode:
		// Earlier maps in a merge list win over later ones.
		var out []pair
		seen := map[string]bool{}
		for _, item := range r.Content {
			for _, p := range c.mergePairs(item, path) {
				if !seen[p.key.Value] {
					seen[p.key.Value] = true
					out = append(out, p)
				}
			}
		}
		return out
	}
	c.errorAt(v, path, "a merge key (<<) takes a map or a list of maps, got %s", describe(r))
	return nil
}

// yamlFields maps a struct's YAML key names to field indexes.
func yamlFields(t reflect.Type) (map[string]int, []string) {
	fields := map[string]int{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	sort.Strings(names)
	return fields, names
}

// cloudInitHints answer the cloud-init keys people bring from other
// systems, which ballast does not have, with what to do instead.
var cloudInitHints = map[string]string{
	"packages":         "a node has no package manager; add packages to the build spec",
	"package_update":   "a node has no package manager; the image is rebuilt instead",
	"package_upgrade":  "a node has no package manager; the image is rebuilt instead",
	"ssh_pwauth":       "use ballast.ssh.password_authentication",
	"chpasswd":         "give users a passwd hash (users[].passwd)",
	"growpart":         "the init grows the data partition by itself",
	"resize_rootfs":    "the root is a read-only image; the data partition grows by itself",
	"mounts":           "the init mounts the data partition; use bootcmd for other mounts",
	"fqdn":             "use hostname",
	"ntp_servers":      "use ntp.servers (or k3os.ntp_servers)",
	"manage_etc_hosts": "the init writes /etc/hosts from hostname",
}

var (
	commandType = reflect.TypeOf(Command{})
	anyMapType  = reflect.TypeOf(map[string]any{})
)

// decode fills v from n, reporting every mismatch and continuing with the
// rest of the document.
func (c *checker) decode(n *yaml.Node, v reflect.Value, path string) {
	if _, seen := c.pos[path]; !seen || n.Kind != yaml.AliasNode {
		c.pos[path] = position{n.Line, n.Column}
	}
	r, done, ok := c.resolve(n, path)
	if !ok {
		return
	}
	defer done()
	n = r

	if v.Type() == commandType {
		c.decodeCommand(n, v, path)
		return
	}
	if v.Type() == anyMapType {
		if isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode {
			c.errorf(path, "expected a map, got %s", describe(n))
			return
		}
		v.Set(reflect.ValueOf(c.generic(n, path)))
		return
	}

	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return
		}
		e := reflect.New(v.Type().Elem())
		c.decode(n, e.Elem(), path)
		v.Set(e)

	case reflect.Struct:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode {
			c.errorf(path, "expected a map, got %s", describe(n))
			return
		}
		fields, names := yamlFields(v.Type())
		for _, p := range c.pairs(n, path) {
			key := p.key.Value
			kp := joinKey(path, key)
			i, known := fields[key]
			if !known {
				if hint, ok := cloudInitHints[key]; ok && path == "" {
					c.errorAt(p.key, kp, "cloud-init's %s is not supported by ballast: %s", key, hint)
					continue
				}
				c.errorAt(p.key, kp, "%s", unknownKeyMessage("key", key, names))
				continue
			}
			c.decode(p.value, v.Field(i), kp)
		}

	case reflect.Slice:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.SequenceNode {
			hint := ""
			if n.Kind == yaml.ScalarNode {
				hint = ` (write a one-item list as "- value" on the next line, or [value])`
			}
			c.errorf(path, "expected a list, got %s%s", describe(n), hint)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			c.decode(item, s.Index(i), joinIndex(path, i))
		}
		v.Set(s)

	case reflect.Map:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode {
			c.errorf(path, "expected a map, got %s", describe(n))
			return
		}
		m := reflect.MakeMap(v.Type())
		for _, p := range c.pairs(n, path) {
			e := reflect.New(v.Type().Elem()).Elem()
			kp := joinKey(path, p.key.Value)
			c.keyPos[kp] = position{p.key.Line, p.key.Column}
			c.decode(p.value, e, kp)
			m.SetMapIndex(reflect.ValueOf(p.key.Value), e)
		}
		v.Set(m)

	case reflect.String:
		if s, ok := c.scalarString(n, path); ok {
			v.SetString(s)
		}

	case reflect.Bool:
		if isNull(n) {
			return
		}
		b, ok := parseBool(n)
		if !ok {
			c.errorf(path, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)

	case reflect.Int:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			c.errorf(path, "expected a whole number, got %s", describe(n))
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 32)
		if err != nil {
			c.errorf(path, "%s is not a whole number in range", n.Value)
			return
		}
		v.SetInt(i)

	default:
		// Only reachable if the schema grows a type this decoder does
		// not know; say so rather than silently dropping the key.
		c.errorf(path, "internal error: cannot decode into %s", v.Type())
	}
}

// scalarString reads any scalar as its text: cloud-configs say
// "permissions: 0644" unquoted and mean the string. !!binary is decoded, as
// cloud-init does for write_files content.
func (c *checker) scalarString(n *yaml.Node, path string) (string, bool) {
	if isNull(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		c.errorf(path, "expected a string, got %s", describe(n))
		return "", false
	}
	if n.ShortTag() == "!!binary" {
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(n.Value), ""))
		if err != nil {
			c.errorf(path, "!!binary value is not base64: %v", err)
			return "", false
		}
		return string(b), true
	}
	return n.Value, true
}

// parseBool accepts YAML 1.2 booleans and the YAML 1.1 words people still
// write (yes/no/on/off), as yaml.v3 does when decoding into a bool.
func parseBool(n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode || n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		return false, false
	}
	switch strings.ToLower(n.Value) {
	case "true", "yes", "on", "y":
		return true, true
	case "false", "no", "off", "n":
		return false, true
	}
	return false, false
}

func (c *checker) decodeCommand(n *yaml.Node, v reflect.Value, path string) {
	switch {
	case n.Kind == yaml.ScalarNode && !isNull(n):
		v.Set(reflect.ValueOf(Command{Shell: n.Value}))
	case n.Kind == yaml.SequenceNode:
		argv := make([]string, 0, len(n.Content))
		for i, item := range n.Content {
			ip := joinIndex(path, i)
			c.pos[ip] = position{item.Line, item.Column}
			r, done, ok := c.resolve(item, ip)
			if !ok {
				continue
			}
			if r.Kind != yaml.ScalarNode || isNull(r) {
				c.errorf(ip, "a command's arguments are strings, got %s", describe(r))
			} else {
				argv = append(argv, r.Value)
			}
			done()
		}
		v.Set(reflect.ValueOf(Command{Argv: argv}))
	default:
		c.errorf(path, "a command is a string (run by /bin/sh -c) or a list of arguments, got %s", describe(n))
	}
}

// generic converts free-form YAML (the k3s: block) to plain Go values:
// map[string]any, []any, string, int, float64, bool and nil, so the
// result marshals to YAML and JSON alike.
func (c *checker) generic(n *yaml.Node, path string) any {
	if _, seen := c.pos[path]; !seen || n.Kind != yaml.AliasNode {
		c.pos[path] = position{n.Line, n.Column}
	}
	r, done, ok := c.resolve(n, path)
	if !ok {
		return nil
	}
	defer done()
	n = r
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for _, p := range c.pairs(n, path) {
			kp := joinKey(path, p.key.Value)
			c.keyPos[kp] = position{p.key.Line, p.key.Column}
			m[p.key.Value] = c.generic(p.value, kp)
		}
		return m
	case yaml.SequenceNode:
		l := make([]any, len(n.Content))
		for i, item := range n.Content {
			l[i] = c.generic(item, joinIndex(path, i))
		}
		return l
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil
		case "!!bool":
			if b, ok := parseBool(n); ok {
				return b
			}
		case "!!int":
			// Only plain decimals become numbers: "0644" is a file mode
			// for k3s (write-kubeconfig-mode), and must reach its config
			// as the text written, not as 420.
			if i, err := strconv.Atoi(n.Value); err == nil && strconv.Itoa(i) == n.Value {
				return i
			}
		case "!!float":
			if f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return f
			}
		}
		// Strings, and numbers Go cannot hold: keep the text.
		return n.Value
	}
	c.errorf(path, "unexpected YAML node")
	return nil
}
