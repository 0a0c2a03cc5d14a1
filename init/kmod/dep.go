package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrUnknown is returned for a module that is neither in modules.dep nor
// built in.
var ErrUnknown = errors.New("unknown module")

// Loader loads modules by name from a module directory
// (/lib/modules/<uname -r>) using modules.dep and modules.builtin.
type Loader struct {
	Kernel Kernel
	Dir    string
	// SysModule is /sys/module: a module listed there is loaded or built in.
	SysModule string

	deps    map[string][]string // name -> [path, dep paths...]
	builtin map[string]bool
}

// NewLoader reads dir/modules.dep and dir/modules.builtin.
func NewLoader(k Kernel, dir, sysModule string) (*Loader, error) {
	l := &Loader{Kernel: k, Dir: dir, SysModule: sysModule, deps: map[string][]string{}, builtin: map[string]bool{}}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("module index: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		path, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			return nil, fmt.Errorf("%s/modules.dep:%d: no ':'", dir, line)
		}
		l.deps[moduleName(path)] = append([]string{path}, strings.Fields(deps)...)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s/modules.dep: %w", dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, p := range strings.Fields(string(b)) {
			l.builtin[moduleName(p)] = true
		}
	}
	return l, nil
}

// Load loads the named module after its dependencies. Built-in and
// already loaded modules are success.
func (l *Loader) Load(name string) error {
	n := normalize(name)
	if l.builtin[n] || l.present(n) {
		return nil
	}
	entry, ok := l.deps[n]
	if !ok {
		return fmt.Errorf("module %s: %w (not in %s/modules.dep)", name, ErrUnknown, l.Dir)
	}
	// modules.dep lists dependencies so that the last must load first.
	for i := len(entry) - 1; i >= 1; i-- {
		dn := moduleName(entry[i])
		if l.present(dn) {
			continue
		}
		if err := LoadFile(l.Kernel, filepath.Join(l.Dir, entry[i]), ""); err != nil {
			return fmt.Errorf("module %s: dependency: %w", name, err)
		}
	}
	return LoadFile(l.Kernel, filepath.Join(l.Dir, entry[0]), "")
}

func (l *Loader) present(name string) bool {
	if l.SysModule == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(l.SysModule, name))
	return err == nil
}
