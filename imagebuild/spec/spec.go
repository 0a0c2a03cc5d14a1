// Package spec is the build spec: which board, which formats, which
// packages, overlays, runtime and cloud-config go into an image.
//
//	board: x86_64
//	formats: [raw, iso]
//	cloud_config: node.yaml
//	image: {size: 4GiB}
//
// Parsing is strict: unknown keys, wrong types and bad values are errors that
// name the file, line, column and key.
package spec

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ballast-os/ballast/boards"
)

// Spec is a build spec. Unset fields take the defaults of FillDefaults.
type Spec struct {
	// Board names a definition in boards/ (default x86_64).
	Board string `yaml:"board"`
	// Formats to write: "raw", "iso" (default: the board's default formats).
	Formats []string `yaml:"formats"`
	// Name is the image base name: <output>/<name>-<board>.img (default "ballast").
	Name string `yaml:"name"`
	// Output is the directory images are written to (default "out").
	Output string `yaml:"output"`
	Debian Debian `yaml:"debian"`
	// Packages are added to the base userland.
	Packages []string `yaml:"packages"`
	// ExcludePackages are dropped from the resolved closure: packages that
	// only serve maintainer scripts, which never run in an image.
	ExcludePackages []string `yaml:"exclude_packages"`
	// Overlays are optional layers (overlays/): none exist yet.
	Overlays []string `yaml:"overlays"`
	Runtime  Runtime  `yaml:"runtime"`
	Kernel   Kernel   `yaml:"kernel"`
	// CloudConfig is a cloud-config file baked into the image; relative to
	// the spec file. Empty: the embedded default (examples/).
	CloudConfig string `yaml:"cloud_config"`
	// UserData is the file placed on the boot partition as /user-data for a
	// person to edit after flashing. Empty: a commented template.
	UserData string `yaml:"user_data"`
	Image    Image  `yaml:"image"`
	// Lock is the lock file pinning package versions and hashes; relative
	// to the spec file. Default: <spec name>.lock beside the spec, or
	// <output>/ballast.lock for the built-in default (<output>/ballast-<board>.lock
	// for another board).
	Lock string `yaml:"lock"`

	// Dir is the directory relative paths are resolved against (the spec
	// file's directory); not part of the YAML.
	Dir string `yaml:"-"`
	// File is the spec's file name, for messages; not part of the YAML.
	File string `yaml:"-"`
}

// Debian selects the archive.
type Debian struct {
	Mirror     string   `yaml:"mirror"`
	Suite      string   `yaml:"suite"`
	Components []string `yaml:"components"`
}

// Runtime selects the Kubernetes runtime put in the image.
//
//	runtime:
//	  kind: ballast            # default
//	  images: [testserver, extra/app.tar]
//
//	runtime:
//	  kind: k3s
//	  version: v1.34.3+k3s1
//	  sha256: 0123...          # mandatory for a download
//
//	runtime: {kind: k3s, file: bin/k3s}   # a local binary; sha256 optional
type Runtime struct {
	// Kind: "ballast" (default: built from runtime/), "k3s" (the official
	// release binary), or "none".
	Kind string `yaml:"kind"`
	// Version of the official k3s release (kind k3s), e.g. v1.34.3+k3s1.
	Version string `yaml:"version"`
	// SHA256 of the official binary: mandatory when it is downloaded,
	// checked when given for a local file.
	SHA256 string `yaml:"sha256"`
	// File is a local k3s binary, relative to the spec, instead of a download.
	File string `yaml:"file"`
	// URL of the binary to download; default K3sURL(version, arch).
	URL string `yaml:"url"`
	// Images are extra images for agent/images: a name the builder knows
	// how to build (componentimages.Known, e.g. "testserver") or the path of
	// an image archive (.tar, relative to the spec). Kind ballast adds
	// them to its default images (pause, CoreDNS, ...).
	Images []string `yaml:"images"`
}

// Runtime kinds.
const (
	RuntimeBallast = "ballast"
	RuntimeK3s     = "k3s"
	RuntimeNone    = "none"
)

// K3sURL is where the official k3s release binary for arch (Debian's
// name: amd64, arm64) is downloaded from by default.
func K3sURL(version, arch string) string {
	name := "k3s"
	if arch != "amd64" {
		name += "-" + arch
	}
	return "https://github.com/k3s-io/k3s/releases/download/" + version + "/" + name
}

// IsImageFile reports whether a runtime.images entry names an archive file
// rather than an image the builder knows.
func IsImageFile(entry string) bool {
	return strings.ContainsRune(entry, '/') || strings.Contains(entry, ".tar") || strings.HasSuffix(entry, ".tgz")
}

// Kernel adjusts which kernel modules the system image carries.
type Kernel struct {
	// KeepModules are directories under the modules' kernel/ (for example
	// drivers/net/wireless/virtual) kept even though the board's
	// module_excludes leave them, or a directory above them, out.
	KeepModules []string `yaml:"keep_modules"`
}

// Image sets sizes and compression.
type Image struct {
	// Size of the raw image, e.g. "4GiB"; 0 or empty: as small as the
	// partitions allow (the data partition grows at first boot anyway),
	// with BALLAST_DATA of the board's runtime_data_mib when the image
	// has a runtime (3 GiB on x86_64 and arm64-efi, so that a VM given the
	// file runs k3s), unwritten: a hole that costs nothing on disk.
	Size Size `yaml:"size"`
	// SlotSize of each system partition (default 512MiB).
	SlotSize Size `yaml:"slot_size"`
	// Compression of the squashfs: "zstd" (default) or "xz".
	Compression string `yaml:"compression"`
	// NoCloud says when the node reads a NoCloud (CIDATA) volume:
	// "first-boot" (default: until the node recorded its first config; a
	// copy is kept for later boots, so a USB stick plugged in later cannot
	// take the node), "always" (every boot, as cloud-init does) or "off".
	// Written on the kernel command line as ballast.nocloud=.
	NoCloud string `yaml:"nocloud"`
}

// Size is a byte count written as a number or with a unit (KiB, MiB, GiB, K, M, G).
type Size int64

var sizeRE = regexp.MustCompile(`^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$`)

// ParseSize reads "512MiB", "4G", "1048576".
func ParseSize(s string) (Size, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size (examples: 512MiB, 4GiB, 1048576)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	shift := map[byte]uint{'K': 10, 'M': 20, 'G': 30, 'T': 40}
	if m[2] != "" && m[2] != "B" {
		sh := shift[m[2][0]]
		if n > (1<<62)>>sh {
			return 0, fmt.Errorf("%q is too large", s)
		}
		n <<= sh
	}
	return Size(n), nil
}

func (s Size) String() string {
	switch {
	case s == 0:
		return "0"
	case s%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", s>>30)
	case s%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", s>>20)
	}
	return strconv.FormatInt(int64(s), 10)
}

// Defaults.
const (
	DefaultBoard    = "x86_64"
	DefaultName     = "ballast"
	DefaultOutput   = "out"
	DefaultMirror   = "http://deb.debian.org/debian"
	DefaultSuite    = "trixie"
	DefaultSlotSize = Size(512 << 20)
)

// BasePackages is the userland every image gets: a shell and the everyday
// tools, OpenSSH, the netfilter tools the runtime drives, e2fsprogs for the
// data partition, CA certificates.
var BasePackages = []string{
	"base-files", "bash", "dash", "coreutils", "util-linux", "mount", "findutils", "grep", "sed",
	"mawk", "gzip", "tar", "less", "procps", "iproute2", "iputils-ping", "iptables",
	"kmod", "e2fsprogs", "openssh-server", "openssh-sftp-server", "ca-certificates",
	"netbase", "ncurses-base", "hostname", "curl",
}

// DefaultExcludePackages only serve dpkg and maintainer scripts, which never
// run in a ballast image, or init systems ballast replaces.
var DefaultExcludePackages = []string{
	"debconf", "ucf", "adduser", "dpkg", "init-system-helpers", "runit-helper",
	"perl-base", "systemd", "systemd-sysv", "libsystemd-shared", "libpam-runtime", "debian-archive-keyring",
	"sensible-utils", "libdebconfclient0",
}

// FillDefaults sets every unset field to its default.
func (s *Spec) FillDefaults() {
	if s.Board == "" {
		s.Board = DefaultBoard
	}
	if s.Name == "" {
		s.Name = DefaultName
	}
	if s.Output == "" {
		s.Output = DefaultOutput
	}
	if s.Debian.Mirror == "" {
		s.Debian.Mirror = DefaultMirror
	}
	if s.Debian.Suite == "" {
		s.Debian.Suite = DefaultSuite
	}
	if len(s.Debian.Components) == 0 {
		s.Debian.Components = []string{"main", "non-free-firmware"}
	}
	if s.ExcludePackages == nil {
		s.ExcludePackages = append([]string(nil), DefaultExcludePackages...)
	}
	if s.Runtime.Kind == "" {
		s.Runtime.Kind = RuntimeBallast
	}
	if s.Image.SlotSize == 0 {
		s.Image.SlotSize = DefaultSlotSize
	}
	if s.Image.Compression == "" {
		s.Image.Compression = "zstd"
	}
	if s.Lock == "" {
		if s.File != "" {
			s.Lock = strings.TrimSuffix(filepath.Base(s.File), filepath.Ext(s.File)) + ".lock"
		} else {
			s.Lock = filepath.Join(s.Output, "ballast.lock")
			if s.Board != DefaultBoard {
				// One lock per board: a lock pins one architecture's packages.
				s.Lock = filepath.Join(s.Output, "ballast-"+s.Board+".lock")
			}
		}
	}
	if len(s.Formats) == 0 {
		if b, err := boards.Get(s.Board); err == nil {
			s.Formats = append([]string(nil), b.DefaultFormats...)
		}
	}
}

// Path resolves p relative to the spec's directory.
func (s *Spec) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || s.Dir == "" {
		return p
	}
	return filepath.Join(s.Dir, p)
}

// Board loads the spec's board definition.
// LoadBoard returns the spec's board, its command line extended with what
// the spec asks of the init (image.nocloud).
func (s *Spec) LoadBoard() (*boards.Board, error) {
	b, err := boards.Get(s.Board)
	if err != nil || s.Image.NoCloud == "" || s.Image.NoCloud == "first-boot" {
		return b, err
	}
	c := *b
	c.Cmdline = append(slices.Clone(b.Cmdline), "ballast.nocloud="+s.Image.NoCloud)
	return &c, nil
}
