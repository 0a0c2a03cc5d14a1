package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// moduleRoots are where a kernel package puts its modules: merged /usr
// first (trixie), then the classic path.
var moduleRoots = []string{"usr/lib/modules", "lib/modules"}

// KernelVersion returns the version of the single kernel whose module
// directory (usr/lib/modules/<kver> or lib/modules/<kver>) is in t.
func KernelVersion(t *filetree.Tree) (string, error) {
	var found []string
	for _, root := range moduleRoots {
		e := t.Get(root)
		if e == nil || e.Kind != filetree.Dir {
			continue
		}
		for _, c := range t.Children(root) {
			if c.Kind == filetree.Dir {
				found = append(found, c.Name())
			}
		}
		if len(found) > 0 {
			break
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("initramfs: no kernel module directory under %s", strings.Join(moduleRoots, " or "))
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("initramfs: several kernels in the tree (%s); name one", strings.Join(found, ", "))
}

// ModulesDir returns the tree path of kver's module directory.
func ModulesDir(t *filetree.Tree, kver string) (string, error) {
	for _, root := range moduleRoots {
		p := root + "/" + kver
		if e := t.Get(p); e != nil && e.Kind == filetree.Dir {
			return p, nil
		}
	}
	return "", fmt.Errorf("initramfs: no module directory for kernel %s under %s", kver, strings.Join(moduleRoots, " or "))
}

// KernelImage returns the entry of the kernel image boot/vmlinuz-<kver>,
// following symlinks inside the tree.
func KernelImage(t *filetree.Tree, kver string) (*filetree.Entry, error) {
	p := "boot/vmlinuz-" + kver
	for range 40 {
		e := t.Get(p)
		switch {
		case e == nil:
			return nil, fmt.Errorf("initramfs: kernel image %s not in the tree", p)
		case e.Kind == filetree.File:
			return e, nil
		case e.Kind == filetree.Symlink:
			if strings.HasPrefix(e.Target, "/") {
				p = e.Target
			} else {
				p = path.Join(path.Dir(p), e.Target)
			}
		default:
			return nil, fmt.Errorf("initramfs: kernel image %s is a %v", p, e.Kind)
		}
	}
	return nil, fmt.Errorf("initramfs: kernel image boot/vmlinuz-%s: too many symlinks", kver)
}

// Module is one loadable kernel module.
type Module struct {
	// Name is the module's name with underscores, as the kernel and
	// modules.load spell it ("nls_iso8859_1").
	Name string
	// Path is the file as modules.dep names it, relative to the module
	// directory, possibly compressed ("kernel/fs/nls/nls_iso8859-1.ko.xz").
	Path string
	// Deps are the modules this one needs: the whole closure when read
	// from modules.dep, the direct ones when read from .modinfo.
	Deps []string

	plain []byte // decompressed contents, when already read
}

// PlainPath is Path without its compression suffix: where the module lies,
// decompressed, in the initramfs.
func (m Module) PlainPath() string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(m.Path, ".ko"+ext) {
			return strings.TrimSuffix(m.Path, ext)
		}
	}
	return m.Path
}

// ModuleName turns a module file name or a name as people write it into
// the kernel's spelling: no directory, no .ko or compression suffix, '-'
// as '_'.
func ModuleName(s string) string {
	s = path.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// SelectModules returns the modules named and everything they depend on,
// dependencies first, each once. Names may use '-' or '_'. Modules built
// into the kernel (modules.builtin) are left out silently; names found
// nowhere are an error that lists them all.
//
// Dependencies come from modules.dep when the tree has one. A kernel
// package as Debian ships it has none (depmod writes it at install time),
// so then the module files are indexed by name and each selected module's
// "depends=" in its .modinfo section is read instead, which is what
// modpost recorded at kernel build time. Soft dependencies are not
// followed: list them by name.
func SelectModules(kernelTree *filetree.Tree, kver string, names []string) ([]Module, error) {
	dir, err := ModulesDir(kernelTree, kver)
	if err != nil {
		return nil, err
	}
	var idx moduleIndex
	src := dir + " (.modinfo depends)" // named in errors
	if kernelTree.Get(dir+"/modules.dep") != nil {
		src = dir + "/modules.dep"
		if idx, err = readModulesDep(kernelTree, dir+"/modules.dep"); err != nil {
			return nil, err
		}
	} else if idx, err = scanModules(kernelTree, dir); err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if e := kernelTree.Get(dir + "/modules.builtin"); e != nil {
		b, err := readEntry(kernelTree, e)
		if err != nil {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
		for line := range strings.Lines(string(b)) {
			if line = strings.TrimSpace(line); line != "" {
				builtin[ModuleName(line)] = true
			}
		}
	}

	var (
		out     []Module
		state   = map[string]int{} // 1: being visited, 2: done
		missing []string
	)
	var visit func(name, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("initramfs: %s: dependency cycle through %s", src, name)
		case 2:
			return nil
		}
		m, ok, err := idx.lookup(name)
		if err != nil {
			return err
		}
		if !ok {
			if builtin[name] {
				// modinfo names built-in modules too.
				state[name] = 2
				return nil
			}
			return fmt.Errorf("initramfs: %s: %s needs %s, which is neither a module file nor built in", src, from, name)
		}
		state[name] = 1
		// depmod lists dependencies in reverse load order; walking them
		// backwards loads them the way modprobe would.
		for _, d := range slices.Backward(m.Deps) {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, m)
		return nil
	}
	for _, n := range names {
		name := ModuleName(n)
		if !idx.has(name) {
			if !builtin[name] && !slices.Contains(missing, n) {
				missing = append(missing, n)
			}
			continue
		}
		if err := visit(name, name); err != nil {
			return nil, err
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("initramfs: kernel %s has no module %s (neither a module file nor in modules.builtin)", kver, strings.Join(missing, ", "))
	}
	for _, m := range out {
		if e := kernelTree.Get(dir + "/" + m.Path); e == nil || (e.Kind != filetree.File && e.Kind != filetree.Hardlink) {
			return nil, fmt.Errorf("initramfs: %s names %s, which is not a file in the tree", src, m.Path)
		}
	}
	return out, nil
}

// moduleIndex finds modules by name with their dependencies.
type moduleIndex interface {
	has(name string) bool
	lookup(name string) (Module, bool, error)
}

// depIndex is modules.dep, parsed.
type depIndex map[string]Module

func (d depIndex) has(name string) bool { _, ok := d[name]; return ok }
func (d depIndex) lookup(name string) (Module, bool, error) {
	m, ok := d[name]
	return m, ok, nil
}

// fileIndex knows the module files by name and reads dependencies from
// each module's .modinfo when asked.
type fileIndex struct {
	tree  *filetree.Tree
	dir   string
	paths map[string]string // name -> path relative to dir
	read  map[string]Module
}

func scanModules(t *filetree.Tree, dir string) (*fileIndex, error) {
	idx := &fileIndex{tree: t, dir: dir, paths: map[string]string{}, read: map[string]Module{}}
	prefix := dir + "/"
	for _, e := range t.Entries() {
		rel, ok := strings.CutPrefix(e.Path, prefix)
		if !ok || (e.Kind != filetree.File && e.Kind != filetree.Hardlink) || checkModulePath(rel) != nil {
			continue
		}
		name := ModuleName(rel)
		if old, dup := idx.paths[name]; dup {
			// depmod's rule: updates/ overrides the kernel's own.
			switch {
			case strings.HasPrefix(rel, "updates/") && !strings.HasPrefix(old, "updates/"):
			case strings.HasPrefix(old, "updates/") && !strings.HasPrefix(rel, "updates/"):
				continue
			default:
				return nil, fmt.Errorf("initramfs: %s: module %s found twice: %s and %s", dir, name, old, rel)
			}
		}
		idx.paths[name] = rel
	}
	return idx, nil
}

func (f *fileIndex) has(name string) bool { _, ok := f.paths[name]; return ok }

func (f *fileIndex) lookup(name string) (Module, bool, error) {
	if m, ok := f.read[name]; ok {
		return m, true, nil
	}
	rel, ok := f.paths[name]
	if !ok {
		return Module{}, false, nil
	}
	p := f.dir + "/" + rel
	raw, err := readEntry(f.tree, f.tree.Get(p))
	if err != nil {
		return Module{}, false, fmt.Errorf("initramfs: %w", err)
	}
	plain, err := decompressModule(p, raw)
	if err != nil {
		return Module{}, false, fmt.Errorf("initramfs: %w", err)
	}
	deps, err := moduleDepends(plain)
	if err != nil {
		return Module{}, false, fmt.Errorf("initramfs: %s: %w", p, err)
	}
	m := Module{Name: name, Path: rel, Deps: deps, plain: plain}
	f.read[name] = m
	return m, true, nil
}

// moduleDepends reads the "depends=" entry of a module's .modinfo section.
func moduleDepends(plain []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(plain))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %w", err)
	}
	return parseModinfoDepends(data), nil
}

// parseModinfoDepends picks the modules named by "depends=a,b" out of a
// .modinfo section: NUL-separated key=value strings.
func parseModinfoDepends(data []byte) []string {
	var deps []string
	for kv := range bytes.SplitSeq(data, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		for d := range strings.SplitSeq(string(v), ",") {
			if d = strings.TrimSpace(d); d != "" && !slices.Contains(deps, ModuleName(d)) {
				deps = append(deps, ModuleName(d))
			}
		}
	}
	return deps
}

// readModulesDep parses depmod's modules.dep: one line per module,
// "path: dep-path dep-path...".
func readModulesDep(t *filetree.Tree, p string) (depIndex, error) {
	e := t.Get(p)
	if e == nil {
		return nil, fmt.Errorf("initramfs: %s not in the kernel tree", p)
	}
	b, err := readEntry(t, e)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	return parseModulesDep(p, b)
}

func parseModulesDep(name string, b []byte) (depIndex, error) {
	mods := depIndex{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, rest, ok := strings.Cut(line, ":")
		if !ok || file == "" {
			return nil, fmt.Errorf("initramfs: %s:%d: want \"path: deps...\", got %q", name, n, line)
		}
		if err := checkModulePath(file); err != nil {
			return nil, fmt.Errorf("initramfs: %s:%d: %w", name, n, err)
		}
		m := Module{Name: ModuleName(file), Path: file}
		for _, d := range strings.Fields(rest) {
			if err := checkModulePath(d); err != nil {
				return nil, fmt.Errorf("initramfs: %s:%d: dependency: %w", name, n, err)
			}
			m.Deps = append(m.Deps, ModuleName(d))
		}
		if old, dup := mods[m.Name]; dup {
			return nil, fmt.Errorf("initramfs: %s:%d: module %s listed twice (%s and %s)", name, n, m.Name, old.Path, m.Path)
		}
		mods[m.Name] = m
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("initramfs: %s: %w", name, err)
	}
	return mods, nil
}

// checkModulePath accepts what depmod writes: a path relative to the
// module directory, ending in .ko with an optional compression suffix.
func checkModulePath(p string) error {
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("absolute path %q (depmod from before 2010?); want paths relative to the module directory", p)
	}
	if slices.Contains(strings.Split(p, "/"), "..") {
		return fmt.Errorf("path %q climbs out of the module directory", p)
	}
	base := path.Base(p)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(base, ext) && len(base) > len(ext) {
			return nil
		}
	}
	return fmt.Errorf("%q is not a kernel module file (.ko, .ko.xz, .ko.zst, .ko.gz)", p)
}

// readEntry reads a file (or hard link) from the tree.
func readEntry(t *filetree.Tree, e *filetree.Entry) ([]byte, error) {
	for range 40 {
		if e.Kind != filetree.Hardlink {
			break
		}
		if e = t.Get(e.Target); e == nil {
			return nil, fmt.Errorf("hard link to a missing file")
		}
	}
	if e.Kind != filetree.File {
		return nil, fmt.Errorf("%s: a %v, not a file", e.Path, e.Kind)
	}
	rc, err := e.Data.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Path, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Path, err)
	}
	return b, nil
}

// decompressModule returns a module file's plain contents, by its suffix.
func decompressModule(name string, b []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".ko.xz"):
		xr, err := xz.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		r = xr
	case strings.HasSuffix(name, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(name, ".ko.gz"):
		gr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		r = gr
	case strings.HasSuffix(name, ".ko"):
		return b, nil
	default:
		return nil, fmt.Errorf("%s: not a kernel module (.ko, .ko.xz, .ko.zst, .ko.gz)", name)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: decompressing: %w", name, err)
	}
	return out, nil
}
