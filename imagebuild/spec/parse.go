package spec

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/ballast-os/ballast/boards"
	"github.com/ballast-os/ballast/internal/didyoumean"
)

// Error is one problem in a spec, with its position.
type Error struct {
	File         string
	Line, Column int
	Key          string
	Message      string
}

func (e *Error) Error() string {
	pos := e.File
	if e.Line > 0 {
		pos = fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Column)
	}
	if e.Key != "" {
		return fmt.Sprintf("%s: %s: %s", pos, e.Key, e.Message)
	}
	return fmt.Sprintf("%s: %s", pos, e.Message)
}

// ErrorList holds every problem found; errors.As finds it.
type ErrorList []*Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Load reads and validates the spec file at path.
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading build spec: %w", err)
	}
	s, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	s.Dir = filepath.Dir(path)
	return s, nil
}

// Parse reads a spec strictly, fills defaults and validates it. The error,
// if any, is an ErrorList naming every problem with file:line:column and key.
func Parse(file string, data []byte) (*Spec, error) {
	s := &Spec{File: file}
	var errs ErrorList
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, ErrorList{{File: file, Message: strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if len(root.Content) > 0 {
		decodeStrict(file, root.Content[0], reflect.ValueOf(s).Elem(), "", &errs)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	s.FillDefaults()
	errs = append(errs, s.validate(&root)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// Default is the built-in spec: board x86_64, the embedded cloud-config.
func Default() *Spec {
	s := &Spec{}
	s.FillDefaults()
	return s
}

var sizeType = reflect.TypeOf(Size(0))

// decodeStrict walks node against v's type: unknown keys and wrong kinds
// are reported with their position and dotted key path.
func decodeStrict(file string, n *yaml.Node, v reflect.Value, key string, errs *ErrorList) {
	add := func(n *yaml.Node, k, format string, args ...any) {
		*errs = append(*errs, &Error{File: file, Line: n.Line, Column: n.Column, Key: k, Message: fmt.Sprintf(format, args...)})
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if v.Type() == sizeType {
		if n.Kind != yaml.ScalarNode {
			add(n, key, "want a size such as 512MiB")
			return
		}
		sz, err := ParseSize(n.Value)
		if err != nil {
			add(n, key, "%v", err)
			return
		}
		v.SetInt(int64(sz))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			add(n, key, "want a mapping, got %s", kindName(n))
			return
		}
		fields := map[string]int{}
		var names []string
		for i := 0; i < v.NumField(); i++ {
			tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = i
			names = append(names, tag)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			k := join(key, kn.Value)
			if seen[kn.Value] {
				add(kn, k, "key given twice")
				continue
			}
			seen[kn.Value] = true
			idx, ok := fields[kn.Value]
			if !ok {
				msg := fmt.Sprintf("unknown key %q", kn.Value)
				if s := didyoumean.Suggest(kn.Value, names); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				} else {
					sort.Strings(names)
					msg += " (known: " + strings.Join(names, ", ") + ")"
				}
				add(kn, k, "%s", msg)
				continue
			}
			decodeStrict(file, vn, v.Field(idx), k, errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			add(n, key, "want a list, got %s", kindName(n))
			return
		}
		sl := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			decodeStrict(file, c, sl.Index(i), fmt.Sprintf("%s[%d]", key, i), errs)
		}
		v.Set(sl)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			add(n, key, "want a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			add(n, key, "%v", strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

// validate checks values; positions come from the document's nodes.
func (s *Spec) validate(root *yaml.Node) ErrorList {
	var errs ErrorList
	add := func(key, format string, args ...any) {
		n := lookup(root, key)
		e := &Error{File: s.File, Key: key, Message: fmt.Sprintf(format, args...)}
		if n != nil {
			e.Line, e.Column = n.Line, n.Column
		}
		errs = append(errs, e)
	}
	b, err := boards.Get(s.Board)
	if err != nil {
		add("board", "%v", err)
	}
	for i, f := range s.Formats {
		if f != "raw" && f != "iso" && f != "oci" {
			add(fmt.Sprintf("formats[%d]", i), "unknown format %q (known: raw, iso, oci)", f)
		} else if b != nil && !b.SupportsFormat(f) {
			add(fmt.Sprintf("formats[%d]", i), "board %s cannot be written as %q", b.Name, f)
		}
	}
	for i, o := range s.Overlays {
		add(fmt.Sprintf("overlays[%d]", i), "overlay %q is not available yet (no overlays are implemented in this version)", o)
	}
	s.validateRuntime(add)
	switch s.Image.Compression {
	case "zstd", "xz":
	default:
		add("image.compression", "unknown compression %q (known: zstd, xz)", s.Image.Compression)
	}
	switch s.Image.NoCloud {
	case "", "first-boot", "always", "off":
	default:
		add("image.nocloud", "%q is not a NoCloud policy (first-boot, always or off)", s.Image.NoCloud)
	}
	if s.Image.SlotSize < 64<<20 {
		add("image.slot_size", "%s is too small (at least 64MiB)", s.Image.SlotSize)
	}
	if s.Image.Size != 0 && s.Image.Size < 2*s.Image.SlotSize+256<<20 {
		add("image.size", "%s cannot hold two %s system slots, the boot and data partitions", s.Image.Size, s.Image.SlotSize)
	}
	for i, p := range append(append([]string(nil), s.Packages...), s.ExcludePackages...) {
		if !validPackageName(p) {
			key := fmt.Sprintf("packages[%d]", i)
			if i >= len(s.Packages) {
				key = fmt.Sprintf("exclude_packages[%d]", i-len(s.Packages))
			}
			add(key, "%q is not a Debian package name", p)
		}
	}
	for i, m := range s.Kernel.KeepModules {
		if !validModuleDir(m) {
			add(fmt.Sprintf("kernel.keep_modules[%d]", i), "%q is not a module directory under kernel/ (e.g. drivers/net/wireless/virtual)", m)
		}
	}
	if s.Name != "" && strings.ContainsAny(s.Name, "/\\ ") {
		add("name", "%q must not contain slashes or spaces", s.Name)
	}
	return errs
}

// validModuleDir accepts a relative, clean slash path such as net/mac80211.
func validModuleDir(p string) bool {
	if p == "" || p != path.Clean(p) || strings.HasPrefix(p, "/") || p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return false
	}
	return !strings.ContainsAny(p, "\\ \t\n")
}

func validPackageName(p string) bool {
	if len(p) < 2 {
		return false
	}
	for i, r := range p {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (i > 0 && strings.ContainsRune("+-.", r))
		if !ok {
			return false
		}
	}
	return true
}

// lookup finds the value node of a dotted key path ("image.size",
// "formats[1]") in a document; nil when absent.
func lookup(doc *yaml.Node, key string) *yaml.Node {
	if doc == nil || len(doc.Content) == 0 {
		return nil
	}
	n := doc.Content[0]
	for _, part := range strings.Split(key, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			name = part[:i]
			fmt.Sscanf(part[i:], "[%d]", &idx)
		}
		var next *yaml.Node
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == name {
					next = n.Content[i+1]
				}
			}
		}
		if next == nil {
			return nil
		}
		n = next
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return nil
			}
			n = n.Content[idx]
		}
	}
	return n
}

// IsSpecError reports whether err came from spec parsing or validation.
func IsSpecError(err error) bool {
	var l ErrorList
	return errors.As(err, &l)
}
