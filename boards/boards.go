// Package boards holds one definition per supported board, as data: the YAML
// files beside this file, embedded in the binary. A board says what a
// machine needs to boot: architecture, kernel package, firmware, kernel
// command line, partition scheme and boot chains.
package boards

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed *.yaml
var files embed.FS

// Board is one board definition.
type Board struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Arch is the Go and Debian architecture: amd64 or arm64.
	Arch string `yaml:"arch"`
	// KernelPackage is the Debian package whose closure provides vmlinuz
	// and the modules (a metapackage such as linux-image-amd64).
	KernelPackage string `yaml:"kernel_package"`
	// KernelSuite, when set, is the suite of the same Debian mirror the
	// kernel package comes from instead of the build's suite (a newer
	// kernel from trixie-backports); of that suite's packages the build
	// takes only what the kernel needs and the build's suite cannot
	// satisfy. Empty: the build's suite, like every other package.
	KernelSuite string `yaml:"kernel_suite"`
	// Packages are board-specific packages (firmware) added to the system.
	Packages []string `yaml:"packages"`
	// Cmdline is the kernel command line, one parameter per item.
	Cmdline []string `yaml:"cmdline"`
	// PartitionScheme is "gpt" or "mbr" (the Raspberry Pi firmware needs MBR).
	PartitionScheme string `yaml:"partition_scheme"`
	// BootChains lists how the image boots: "uefi", "bios", "rpi".
	BootChains []string `yaml:"boot_chains"`
	// Formats the board can be written as ("raw", "iso"); DefaultFormats
	// those built when the spec names none.
	Formats        []string `yaml:"formats"`
	DefaultFormats []string `yaml:"default_formats"`
	// InitramfsModules are loaded by the initramfs to find the root.
	InitramfsModules []string `yaml:"initramfs_modules"`
	// ModuleExcludes are directories under kernel/ left out of the system.
	ModuleExcludes []string `yaml:"module_excludes"`
	// Firmware is what the board's boot ROM loads before the kernel
	// (Raspberry Pi: raspi-firmware's start*.elf); nil for UEFI boards.
	Firmware *Firmware `yaml:"firmware"`
	// DeviceTrees are glob patterns, relative to the kernel package's
	// usr/lib/linux-image-<version>/, of the DTBs copied to the root of the
	// boot partition, where the Raspberry Pi firmware looks for them by name.
	DeviceTrees []string `yaml:"device_trees"`
	// ConfigTxt is the Raspberry Pi firmware's config.txt, without the
	// kernel= and initramfs lines, which the builder appends.
	ConfigTxt string `yaml:"config_txt"`
	// RuntimeDataMiB is the size of BALLAST_DATA, in MiB, in a raw image
	// that carries a runtime and whose spec sets no image.size: enough for
	// k3s to run when the image is booted as it is (a VM given the file, a
	// disk exactly its size). Unwritten, the space is a hole: it costs
	// nothing on disk, and `ballast flash` skips it. 0: the small
	// placeholder, which the init grows to fill the disk (an SD card is
	// always larger than the image).
	RuntimeDataMiB int64 `yaml:"runtime_data_mib"`
}

// Firmware names the files of a firmware package that go onto the boot
// partition.
type Firmware struct {
	// Package is the Debian package (raspi-firmware, non-free-firmware).
	Package string `yaml:"package"`
	// Dir is the directory in the package the files are taken from.
	Dir string `yaml:"dir"`
	// Files are glob patterns relative to Dir; each file keeps its path
	// relative to Dir on the boot partition. Every pattern must match.
	Files []string `yaml:"files"`
}

// CmdlineString joins the command line.
func (b *Board) CmdlineString() string { return strings.Join(b.Cmdline, " ") }

// HasBootChain reports whether the board boots through chain.
func (b *Board) HasBootChain(chain string) bool { return contains(b.BootChains, chain) }

// SupportsFormat reports whether the board can be written as format.
func (b *Board) SupportsFormat(format string) bool { return contains(b.Formats, format) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ErrUnknownBoard is returned by Get for a name no definition has.
var ErrUnknownBoard = errors.New("unknown board")

// Names lists the defined boards, sorted.
func Names() []string {
	ents, _ := fs.ReadDir(files, ".")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), path.Ext(e.Name())))
	}
	sort.Strings(out)
	return out
}

// Get loads and validates the named board.
func Get(name string) (*Board, error) {
	data, err := files.ReadFile(name + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownBoard, name, strings.Join(Names(), ", "))
	}
	return Parse(name+".yaml", data)
}

// Parse reads one board definition strictly: unknown keys are errors.
func Parse(file string, data []byte) (*Board, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var b Board
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("board %s: %w", file, err)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("board %s: %w", file, err)
	}
	return &b, nil
}

// Validate checks that the definition is complete and consistent.
func (b *Board) Validate() error {
	var errs []error
	if b.Name == "" {
		errs = append(errs, errors.New("name: missing"))
	}
	switch b.Arch {
	case "amd64", "arm64":
	default:
		errs = append(errs, fmt.Errorf("arch: %q is not amd64 or arm64", b.Arch))
	}
	if b.KernelPackage == "" {
		errs = append(errs, errors.New("kernel_package: missing"))
	}
	if s := b.KernelSuite; s != "" && (strings.ContainsAny(s, " \t\\/") || strings.Contains(s, "..")) {
		errs = append(errs, fmt.Errorf("kernel_suite: %q is not a suite name", s))
	}
	switch b.PartitionScheme {
	case "gpt", "mbr":
	default:
		errs = append(errs, fmt.Errorf("partition_scheme: %q is not gpt or mbr", b.PartitionScheme))
	}
	for _, c := range b.BootChains {
		switch c {
		case "uefi", "bios", "rpi":
		default:
			errs = append(errs, fmt.Errorf("boot_chains: unknown chain %q", c))
		}
	}
	for _, f := range b.Formats {
		if f != "raw" && f != "iso" && f != "oci" {
			errs = append(errs, fmt.Errorf("formats: unknown format %q", f))
		}
	}
	for _, f := range b.DefaultFormats {
		if !b.SupportsFormat(f) {
			errs = append(errs, fmt.Errorf("default_formats: %q is not in formats", f))
		}
	}
	if b.HasBootChain("rpi") {
		if b.PartitionScheme != "mbr" {
			errs = append(errs, errors.New("boot_chains: rpi needs partition_scheme: mbr (the firmware reads MBR only)"))
		}
		if b.Arch != "arm64" {
			errs = append(errs, fmt.Errorf("boot_chains: rpi needs arch arm64, not %q", b.Arch))
		}
		if len(b.DeviceTrees) == 0 {
			errs = append(errs, errors.New("device_trees: missing (the rpi chain boots with the firmware's device tree)"))
		}
		if b.ConfigTxt == "" {
			errs = append(errs, errors.New("config_txt: missing"))
		}
		for _, l := range strings.Split(b.ConfigTxt, "\n") {
			k, _, _ := strings.Cut(strings.TrimSpace(l), "=")
			if f := strings.Fields(k); len(f) > 0 && (f[0] == "kernel" || f[0] == "initramfs" || f[0] == "cmdline") {
				errs = append(errs, fmt.Errorf("config_txt: %q is set by the builder, leave it out", f[0]))
			}
		}
	}
	if b.RuntimeDataMiB < 0 {
		errs = append(errs, fmt.Errorf("runtime_data_mib: %d is negative", b.RuntimeDataMiB))
	}
	if b.PartitionScheme == "mbr" && !b.HasBootChain("rpi") {
		errs = append(errs, errors.New("partition_scheme: mbr is only written for the rpi boot chain"))
	}
	if b.Arch == "arm64" && b.HasBootChain("bios") {
		errs = append(errs, errors.New("boot_chains: bios is x86 only"))
	}
	if f := b.Firmware; f != nil {
		if f.Package == "" || f.Dir == "" {
			errs = append(errs, errors.New("firmware: package and dir are required"))
		}
		for _, p := range f.Files {
			if _, err := path.Match(p, ""); err != nil || strings.HasPrefix(p, "/") || strings.Contains(p, "..") {
				errs = append(errs, fmt.Errorf("firmware: files: bad pattern %q", p))
			}
		}
	}
	for _, p := range b.DeviceTrees {
		if _, err := path.Match(p, ""); err != nil || strings.HasPrefix(p, "/") || strings.Contains(p, "..") {
			errs = append(errs, fmt.Errorf("device_trees: bad pattern %q", p))
		}
	}
	return errors.Join(errs...)
}
