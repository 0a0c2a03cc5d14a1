package initramfs

import (
	"slices"
	"strings"
	"testing"
)

// FuzzParseModulesDep feeds modules.dep text, which comes from a
// downloaded kernel package, to the parser: it must never panic, and what
// it accepts must be consistent.
func FuzzParseModulesDep(f *testing.F) {
	f.Add([]byte("kernel/fs/ext4/ext4.ko.xz: kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz\nkernel/fs/mbcache.ko.xz:\nkernel/fs/jbd2/jbd2.ko.xz:\n"))
	f.Add([]byte("# comment\n\nkernel/a.ko: \n/lib/modules/x/kernel/b.ko:\n"))
	f.Add([]byte("kernel/a.ko\n"))
	f.Add([]byte("kernel/../../etc/passwd.ko:\n"))
	f.Add([]byte("a.ko: b.ko\na-b.ko: a_b.ko\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mods, err := parseModulesDep("modules.dep", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "initramfs: modules.dep") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		for name, m := range mods {
			if name != m.Name || name != ModuleName(m.Path) {
				t.Errorf("module %q stored as %q from path %q", m.Name, name, m.Path)
			}
			if slices.Contains(strings.Split(m.Path, "/"), "..") || strings.HasPrefix(m.Path, "/") {
				t.Errorf("accepted path %q", m.Path)
			}
		}
	})
}

// FuzzModuleDepends feeds module files, which come from a downloaded
// kernel package, to the ELF/.modinfo reader: errors are fine, panics and
// malformed names are not.
func FuzzModuleDepends(f *testing.F) {
	f.Add(minimalELF("license=GPL\x00depends=jbd2,mbcache\x00name=ext4\x00"))
	f.Add(minimalELF("depends=\x00"))
	f.Add(minimalELF("depends=a-b,,c_d, e\x00depends=a_b"))
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, b []byte) {
		deps, err := moduleDepends(b)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, d := range deps {
			if d == "" || strings.Contains(d, "-") || strings.Contains(d, ",") || seen[d] {
				t.Errorf("bad dependency list %q", deps)
			}
			seen[d] = true
		}
	})
}
