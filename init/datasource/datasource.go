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
	"github.com/ballast-os/ballast/init/writefiles"
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
	// SavedNoCloudPath keeps the NoCloud document read at the first boot
	// (ballast.nocloud=first-boot), on the data partition.
	SavedNoCloudPath = "/var/lib/ballast/nocloud-user-data"
	BootPartName     = "BALLAST_BOOT"
	// BootFATLabel finds the boot partition on an MBR disk (Raspberry
	// Pi), which has no partition names.
	BootFATLabel = "BALLASTBOOT"
	UserDataFile = "user-data"
)

// NoCloudKey is the command-line key that says when a NoCloud (CIDATA)
// volume is read, one of the NoCloud* values; the image spec's
// image.nocloud sets it.
const NoCloudKey = "ballast.nocloud"

// When a CIDATA volume is read. A volume on any disk is merged above the
// image's own config, so reading one at every boot lets whoever plugs in a
// USB stick and reboots the node take it: by default it is read until the
// node recorded its first config, and a copy kept on the data partition
// stands in for it at later boots.
const (
	NoCloudFirstBoot = "first-boot"
	NoCloudAlways    = "always"
	NoCloudOff       = "off"
)

// NoCloudPolicy returns the cmdline's NoCloud policy, or an error naming
// a value that is not one (the default, first-boot, then applies).
func NoCloudPolicy(cmdline map[string]string) (string, error) {
	switch v := cmdline[NoCloudKey]; v {
	case "":
		return NoCloudFirstBoot, nil
	case NoCloudFirstBoot, NoCloudAlways, NoCloudOff:
		return v, nil
	default:
		return NoCloudFirstBoot, fmt.Errorf("%s=%s: want %s, %s or %s; using %s", NoCloudKey, v, NoCloudFirstBoot, NoCloudAlways, NoCloudOff, NoCloudFirstBoot)
	}
}

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
	// Disk is the root's disk ("vda"): the boot partition is read from it
	// alone. "" (tests, live boots) takes the first found.
	Disk string
	// LiveMedia, when set, is the directory where the live ISO is mounted:
	// its user-data stands in for the boot partition's.
	LiveMedia string
	// NoCloud is when a CIDATA volume is read (NoCloud*; "" is
	// first-boot). FirstBoot says no config was recorded on this node
	// yet: under first-boot the volume is read (and kept at
	// SavedNoCloudPath) only then.
	NoCloud   string
	FirstBoot bool
	// Warn is told about a CIDATA volume left unread; may be nil.
	Warn func(msg string)
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
	if s, ok := noCloudByPolicy(env, devs, scanErr); ok {
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
		// On the root's disk only: another disk's boot partition (a USB
		// stick with a ballast image) must not configure this node.
		if env.Disk != "" && d.Disk != env.Disk {
			continue
		}
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

// noCloudByPolicy reads the NoCloud document as env.NoCloud says: the
// volume (always, or first-boot at the first boot, keeping a copy), the
// copy (first-boot, later boots), or nothing (off).
func noCloudByPolicy(env Env, devs []probed, scanErr error) (Source, bool) {
	warn := func(msg string) {
		if env.Warn != nil {
			env.Warn(msg)
		}
	}
	switch env.NoCloud {
	case NoCloudOff:
		if dev := findNoCloud(devs); dev != nil {
			warn(fmt.Sprintf("CIDATA volume %s not read: %s=%s", dev.path, NoCloudKey, NoCloudOff))
		}
		return Source{}, false
	case NoCloudAlways:
		return noCloud(env, devs, scanErr)
	}
	if !env.FirstBoot {
		if dev := findNoCloud(devs); dev != nil {
			warn(fmt.Sprintf("CIDATA volume %s not read: this node recorded its first config already, and NoCloud is read at the first boot only (%s=%s); the copy kept from then applies", dev.path, NoCloudKey, NoCloudFirstBoot))
		}
		return readFileSource(NameNoCloud, env.path(SavedNoCloudPath), SavedNoCloudPath)
	}
	src, ok := noCloud(env, devs, scanErr)
	if ok && src.Err == nil {
		p := env.path(SavedNoCloudPath)
		err := os.MkdirAll(filepath.Dir(p), 0o755)
		if err == nil {
			err = writefiles.WriteDurable(p, src.Data, 0o600)
		}
		if err != nil {
			src.Err, src.Data = fmt.Errorf("keeping a copy of the first boot's NoCloud document: %w", err), nil
		}
	}
	return src, ok
}

// findNoCloud returns the first volume with a NoCloud label.
func findNoCloud(devs []probed) *probed {
	for _, l := range noCloudLabels {
		for i := range devs {
			if devs[i].fstype != "" && devs[i].label == l {
				return &devs[i]
			}
		}
	}
	return nil
}

func noCloud(env Env, devs []probed, scanErr error) (Source, bool) {
	if scanErr != nil {
		return Source{Name: NameNoCloud, Err: fmt.Errorf("looking for a CIDATA volume: %w", scanErr)}, true
	}
	dev := findNoCloud(devs)
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
