// Package datasource gathers the raw cloud-config documents of a node from
// every datasource, in merge order (later wins): baked into the image, the
// boot partition's user-data, a NoCloud CIDATA volume, QEMU fw_cfg, and
// the URL given on the kernel command line (fetched separately, once the
// network is up). Parsing and merging are cloudconfig's job.
package datasource

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ballast-os/ballast/init/blockdev"
	"github.com/ballast-os/ballast/init/fsprobe"
	"golang.org/x/sys/unix"
)

// Source names, as reported in agent.ConfigSource.Name.
const (
	NameBaked         = "baked"
	NameBootPartition = "boot-partition"
	NameNoCloud       = "nocloud"
	NameFwCfg         = "fw_cfg"
	NameCmdlineURL    = "cmdline-url"
)

// Paths in the running system.
const (
	DefaultBakedPath = "/run/ballast/baked.yaml"
	BootMount        = "/run/ballast/boot"
	NoCloudMount     = "/run/ballast/cidata"
	FwCfgPath        = "/sys/firmware/qemu_fw_cfg/by_name/opt/ballast/user-data/raw"
	BootPartName     = "BALLAST_BOOT"
	// BootFATLabel finds the boot partition on an MBR disk (Raspberry
	// Pi), which has no partition names.
	BootFATLabel = "BALLASTBOOT"
	UserDataFile = "user-data"
)

// NoCloudLabels are the volume labels of a NoCloud seed, as cloud-init
// accepts them.
var noCloudLabels = []string{"CIDATA", "cidata"}

// MaxSize bounds a user-data document.
const MaxSize = 16 << 20

// Source is one datasource's document. Data is nil when Err is set.
type Source struct {
	Name string
	// Path says where the document came from: a file, "device:/file", or a URL.
	Path string
	Data []byte
	Err  error
}

// Env is where Gather looks and its seams onto the OS.
type Env struct {
	// Root is the file-system root all paths are under; default "/".
	Root string
	// BakedPath is the baked-in cloud-config; default DefaultBakedPath.
	BakedPath string
	// LiveMedia, when set, is the directory where the live ISO is mounted:
	// its user-data stands in for the boot partition's.
	LiveMedia string
	// Mount and Unmount default to mount(2) and umount(2).
	Mount   func(source, target, fstype string, flags uintptr, data string) error
	Unmount func(target string) error
}

func (e Env) root() string {
	if e.Root == "" {
		return "/"
	}
	return e.Root
}

func (e Env) path(p string) string { return filepath.Join(e.root(), p) }

func (e Env) mount(source, target, fstype string, flags uintptr, data string) error {
	if e.Mount != nil {
		return e.Mount(source, target, fstype, flags, data)
	}
	return unix.Mount(source, target, fstype, flags, data)
}

func (e Env) unmount(target string) error {
	if e.Unmount != nil {
		return e.Unmount(target)
	}
	return unix.Unmount(target, 0)
}

// Gather reads every local datasource, in merge order. A datasource that
// is not there is left out; one that is there but cannot be read is
// returned with Err set. The boot partition stays mounted read-only at
// BootMount; a NoCloud volume is unmounted after reading.
func Gather(env Env) []Source {
	var out []Source
	baked := env.BakedPath
	if baked == "" {
		baked = DefaultBakedPath
	}
	if s, ok := readFileSource(NameBaked, env.path(baked), baked); ok {
		out = append(out, s)
	}
	devs, scanErr := scan(env)
	if s, ok := bootPartition(env, devs, scanErr); ok {
		out = append(out, s)
	}
	if s, ok := noCloud(env, devs, scanErr); ok {
		out = append(out, s)
	}
	if s, ok := readFileSource(NameFwCfg, env.path(FwCfgPath), FwCfgPath); ok {
		out = append(out, s)
	}
	return out
}

// readFileSource reads a file; a missing file is no source.
func readFileSource(name, full, shown string) (Source, bool) {
	b, err := readLimited(full)
	if errors.Is(err, fs.ErrNotExist) {
		return Source{}, false
	}
	if err != nil {
		return Source{Name: name, Path: shown, Err: err}, true
	}
	return Source{Name: name, Path: shown, Data: b}, true
}

func readLimited(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, MaxSize)
	}
	return b, nil
}

// probed is a block device with what its superblock says.
type probed struct {
	blockdev.Device
	path          string
	fstype, label string
}

func scan(env Env) ([]probed, error) {
	devs, err := blockdev.Scan(env.path("/sys/class/block"))
	if err != nil {
		return nil, err
	}
	gptNames := map[string]map[int]string{}
	var out []probed
	for _, d := range devs {
		if d.Sectors == 0 {
			continue // empty CD drive, unused loop device
		}
		p := probed{Device: d, path: d.Path(env.path("/dev"))}
		// An unreadable device is simply not a datasource.
		p.fstype, p.label, _ = fsprobe.ProbeFile(p.path)
		if d.IsPartition() && d.PartName == "" {
			// Older kernels leave PARTNAME out of uevent: read the GPT.
			names, ok := gptNames[d.Disk]
			if !ok {
				names = readGPTNames(env.path("/dev/" + d.Disk))
				gptNames[d.Disk] = names
			}
			p.PartName = names[d.PartNum]
		}
		out = append(out, p)
	}
	return out, nil
}

func readGPTNames(disk string) map[int]string {
	names := map[int]string{}
	f, err := os.Open(disk)
	if err != nil {
		return names
	}
	defer f.Close()
	for _, ss := range []int{512, 4096} {
		parts, err := fsprobe.ReadGPT(f, ss)
		if err != nil {
			continue
		}
		for _, p := range parts {
			names[p.Number] = p.Name
		}
		break
	}
	return names
}

const roFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

func bootPartition(env Env, devs []probed, scanErr error) (Source, bool) {
	if env.LiveMedia != "" {
		return readFileSource(NameBootPartition, env.path(filepath.Join(env.LiveMedia, UserDataFile)), filepath.Join(env.LiveMedia, UserDataFile))
	}
	if scanErr != nil {
		return Source{Name: NameBootPartition, Err: fmt.Errorf("finding %s: %w", BootPartName, scanErr)}, true
	}
	var dev *probed
	for i := range devs {
		d := devs[i]
		if d.IsPartition() && (d.PartName == BootPartName || d.PartName == "" && d.fstype == "vfat" && d.label == BootFATLabel) {
			dev = &devs[i]
			break
		}
	}
	if dev == nil {
		return Source{}, false
	}
	shown := dev.path + ":/" + UserDataFile
	target := env.path(BootMount)
	if err := os.MkdirAll(target, 0o700); err != nil {
		return Source{Name: NameBootPartition, Path: shown, Err: err}, true
	}
	// A second Gather in the same boot finds it mounted already; mounting
	// again would stack a second mount on the first.
	if !isMountpoint(target) {
		// Root only: user-data may hold the k3s token, the Wi-Fi key and
		// password hashes.
		if err := env.mount(dev.path, target, "vfat", roFlags, "umask=0077"); err != nil && !errors.Is(err, unix.EBUSY) {
			return Source{Name: NameBootPartition, Path: shown, Err: fmt.Errorf("mounting %s (%s) on %s: %w", dev.path, BootPartName, BootMount, err)}, true
		}
	}
	s, ok := readFileSource(NameBootPartition, filepath.Join(target, UserDataFile), shown)
	return s, ok
}

func noCloud(env Env, devs []probed, scanErr error) (Source, bool) {
	if scanErr != nil {
		return Source{Name: NameNoCloud, Err: fmt.Errorf("looking for a CIDATA volume: %w", scanErr)}, true
	}
	var dev *probed
	for _, l := range noCloudLabels {
		for i := range devs {
			if devs[i].fstype != "" && devs[i].label == l {
				dev = &devs[i]
				break
			}
		}
		if dev != nil {
			break
		}
	}
	if dev == nil {
		return Source{}, false
	}
	shown := dev.path + ":/" + UserDataFile
	target := env.path(NoCloudMount)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return Source{Name: NameNoCloud, Path: shown, Err: err}, true
	}
	if err := env.mount(dev.path, target, dev.fstype, roFlags, ""); err != nil {
		return Source{Name: NameNoCloud, Path: shown, Err: fmt.Errorf("mounting %s (%s, label %s) on %s: %w", dev.path, dev.fstype, dev.label, NoCloudMount, err)}, true
	}
	b, err := readLimited(filepath.Join(target, UserDataFile))
	if uerr := env.unmount(target); uerr != nil && err == nil {
		err = fmt.Errorf("unmounting %s: %w", NoCloudMount, uerr)
	}
	if errors.Is(err, fs.ErrNotExist) {
		err = fmt.Errorf("NoCloud volume %s has no %s", dev.path, UserDataFile)
	}
	if err != nil {
		return Source{Name: NameNoCloud, Path: shown, Err: err}, true
	}
	return Source{Name: NameNoCloud, Path: shown, Data: b}, true
}

// isMountpoint reports whether dir is on another file system than its
// parent.
func isMountpoint(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}
