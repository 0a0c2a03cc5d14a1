// Package mounts describes mounts as data and applies them through an
// injected Mounter, so the boot's mount table reads like a table and tests
// run without root.
package mounts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Mounter performs mount(2) and umount2(2); System is the real one.
type Mounter interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	Unmount(target string, flags int) error
}

// System calls the kernel.
type System struct{}

func (System) Mount(source, target, fstype string, flags uintptr, data string) error {
	return unix.Mount(source, target, fstype, flags, data)
}

func (System) Unmount(target string, flags int) error { return unix.Unmount(target, flags) }

// Mount is one entry of a mount table. Target is an absolute path inside
// the file-system root the table is applied to.
type Mount struct {
	Source string
	Target string
	FSType string
	Flags  uintptr
	Data   string
	// Mode is the permission of Target when it has to be created (0755 if zero).
	Mode os.FileMode
}

func (m Mount) String() string {
	s := fmt.Sprintf("%s on %s", m.Source, m.Target)
	if m.FSType != "" {
		s += " type " + m.FSType
	}
	if m.Data != "" {
		s += " (" + m.Data + ")"
	}
	return s
}

// Apply creates the target under root and mounts it. A target that
// cannot be created because its parent is read-only is tried anyway: it
// may already exist.
func (m Mount) Apply(mnt Mounter, root string) error {
	target := filepath.Join(root, m.Target)
	mode := m.Mode
	if mode == 0 {
		mode = 0o755
	}
	if err := os.MkdirAll(target, mode); err != nil && !errors.Is(err, unix.EROFS) {
		return fmt.Errorf("mount %s: creating mount point: %w", m, err)
	}
	if err := mnt.Mount(m.Source, target, m.FSType, m.Flags, m.Data); err != nil {
		return fmt.Errorf("mount %s: %w", m, err)
	}
	return nil
}

// ApplyAll applies mounts in order, stopping at the first error.
func ApplyAll(mnt Mounter, root string, ms []Mount) error {
	for _, m := range ms {
		if err := m.Apply(mnt, root); err != nil {
			return err
		}
	}
	return nil
}

// Bind returns a bind mount of source on target.
func Bind(source, target string) Mount {
	return Mount{Source: source, Target: target, Flags: unix.MS_BIND}
}

// Info is one line of /proc/self/mountinfo.
type Info struct {
	ID, Parent int
	Root       string
	Target     string
	Options    string
	FSType     string
	Source     string
}

// ParseMountinfo parses /proc/self/mountinfo content.
func ParseMountinfo(data string) ([]Info, error) {
	var out []Info
	for n, line := range strings.Split(data, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+3 {
			return nil, fmt.Errorf("mountinfo line %d: malformed %q", n+1, line)
		}
		var in Info
		if _, err := fmt.Sscanf(f[0]+" "+f[1], "%d %d", &in.ID, &in.Parent); err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n+1, err)
		}
		in.Root, in.Target, in.Options = unescape(f[3]), unescape(f[4]), f[5]
		in.FSType, in.Source = f[sep+1], unescape(f[sep+2])
		out = append(out, in)
	}
	return out, nil
}

// unescape decodes mountinfo's octal escapes (\040 for space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ReadMountinfo reads and parses a mountinfo file (normally /proc/self/mountinfo).
func ReadMountinfo(path string) ([]Info, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	return ParseMountinfo(string(b))
}

// Find returns the last (topmost) mount on target.
func Find(infos []Info, target string) (Info, bool) {
	var found Info
	ok := false
	for _, in := range infos {
		if in.Target == target {
			found, ok = in, true
		}
	}
	return found, ok
}
