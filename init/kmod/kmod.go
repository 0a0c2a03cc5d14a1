// Package kmod loads kernel modules: the initramfs's short list
// (/etc/ballast/modules.load with paths in modules.paths) and, in the
// system, modules by name through modules.dep with their dependencies,
// decompressing Debian's .ko.xz when the kernel cannot.
package kmod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// Kernel is the module syscalls; System is the real one.
type Kernel interface {
	FinitModule(f *os.File, params string, flags int) error
	InitModule(image []byte, params string) error
}

// System calls finit_module(2) and init_module(2).
type System struct{}

func (System) FinitModule(f *os.File, params string, flags int) error {
	return unix.FinitModule(int(f.Fd()), params, flags)
}
func (System) InitModule(image []byte, params string) error { return unix.InitModule(image, params) }

// LoadFile loads one module file. Already loaded (EEXIST) is success.
// Compressed files go to the kernel as is (MODULE_INIT_COMPRESSED_FILE)
// and are decompressed here when the kernel refuses.
func LoadFile(k Kernel, path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	flags := 0
	compressed := strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz")
	if compressed {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = k.FinitModule(f, params, flags)
	if err == nil || errors.Is(err, unix.EEXIST) {
		return nil
	}
	if !compressed && !errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("module %s: %w", path, err)
	}
	// The kernel cannot decompress this format (or lacks finit_module).
	if _, serr := f.Seek(0, io.SeekStart); serr != nil {
		return fmt.Errorf("module %s: %w", path, serr)
	}
	image, derr := decompress(f, path)
	if derr != nil {
		return fmt.Errorf("module %s: %w (finit_module: %v)", path, derr, err)
	}
	if err := k.InitModule(image, params); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("module %s: %w", path, err)
	}
	return nil
}

func decompress(r io.Reader, path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.ReadAll(xr)
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		return io.ReadAll(zr)
	default:
		return io.ReadAll(r)
	}
}

// LoadInitramfsList loads the modules named in loadList, in order, from
// the paths in pathsFile (relative to modDir). It returns every failure,
// joined; loading goes on past a failed module.
func LoadInitramfsList(k Kernel, loadList, pathsFile, modDir string) (loaded int, err error) {
	names, err := readLines(loadList)
	if err != nil {
		return 0, err
	}
	paths := map[string]string{}
	pl, err := readLines(pathsFile)
	if err != nil {
		return 0, err
	}
	for i, l := range pl {
		name, path, ok := strings.Cut(l, " ")
		if !ok {
			return 0, fmt.Errorf("%s:%d: want \"name path\", got %q", pathsFile, i+1, l)
		}
		paths[normalize(name)] = strings.TrimSpace(path)
	}
	var errs []error
	for _, n := range names {
		p, ok := paths[normalize(n)]
		if !ok {
			errs = append(errs, fmt.Errorf("module %s: not in %s", n, pathsFile))
			continue
		}
		if err := LoadFile(k, filepath.Join(modDir, p), ""); err != nil {
			errs = append(errs, err)
			continue
		}
		loaded++
	}
	return loaded, errors.Join(errs...)
}

func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading module list: %w", err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, nil
}

// normalize makes "nf-conntrack" and "nf_conntrack" the same name, as the
// kernel does.
func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// moduleName is the name of a module file: ".../br_netfilter.ko.xz" -> "br_netfilter".
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return normalize(base)
}
