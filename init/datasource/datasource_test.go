package datasource

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func tool(t *testing.T, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not installed (dosfstools, genisoimage, gdisk): %v", name, err)
	}
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeRoot lays out sysfs and /dev as the kernel would for devs; each
// device's content is an image file at <root>/dev/<name>.
type fakeDev struct {
	sysPath string // under /sys/devices: "vda" or "vda/vda1"
	uevent  string
	size    string // 512-byte sectors
	part    string // partition number, "" for a disk
	image   func(t *testing.T, p string)
}

func fakeRoot(t *testing.T, devs ...fakeDev) string {
	t.Helper()
	root := t.TempDir()
	class := filepath.Join(root, "sys/class/block")
	os.MkdirAll(class, 0o755)
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	for _, d := range devs {
		dir := filepath.Join(root, "sys/devices", d.sysPath)
		name := filepath.Base(d.sysPath)
		writeFile(t, filepath.Join(dir, "uevent"), "DEVNAME="+name+"\n"+d.uevent)
		writeFile(t, filepath.Join(dir, "size"), d.size+"\n")
		if d.part != "" {
			writeFile(t, filepath.Join(dir, "partition"), d.part+"\n")
		}
		if err := os.Symlink(dir, filepath.Join(class, name)); err != nil {
			t.Fatal(err)
		}
		if d.image != nil {
			d.image(t, filepath.Join(root, "dev", name))
		}
	}
	return root
}

func blank(size int64) func(t *testing.T, p string) {
	return func(t *testing.T, p string) {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(size)
		f.Close()
	}
}

func vfat(label string) func(t *testing.T, p string) {
	return func(t *testing.T, p string) {
		blank(16<<20)(t, p)
		tool(t, "mkfs.vfat", "-n", label, p)
	}
}

func iso(label string, files map[string]string) func(t *testing.T, p string) {
	return func(t *testing.T, p string) {
		src := t.TempDir()
		for n, c := range files {
			writeFile(t, filepath.Join(src, n), c)
		}
		tool(t, "genisoimage", "-quiet", "-o", p, "-V", label, "-J", "-r", src)
	}
}

func gptDisk(t *testing.T, p string) {
	blank(64<<20)(t, p)
	tool(t, "sgdisk", "-n", "1:2048:+16M", "-t", "1:ef00", "-c", "1:BALLAST_BOOT", "-n", "2:0:+16M", "-c", "2:BALLAST_A", p)
}

// fakeMounter "mounts" by copying a prepared directory tree for each
// device onto the target.
type fakeMounter struct {
	root     string
	contents map[string]map[string]string // device name -> file -> content
	mounts   []string
	unmounts []string
	fail     error
}

func (m *fakeMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	m.mounts = append(m.mounts, filepath.Base(source)+" "+strings.TrimPrefix(target, m.root)+" "+fstype)
	if m.fail != nil {
		return m.fail
	}
	for n, c := range m.contents[filepath.Base(source)] {
		if err := os.WriteFile(filepath.Join(target, n), []byte(c), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (m *fakeMounter) Unmount(target string) error {
	m.unmounts = append(m.unmounts, strings.TrimPrefix(target, m.root))
	ents, _ := os.ReadDir(target)
	for _, e := range ents {
		os.Remove(filepath.Join(target, e.Name()))
	}
	return nil
}

// env is a fresh node's: NoCloud is read (first-boot policy).
func env(root string, m *fakeMounter) Env {
	return Env{Root: root, Mount: m.Mount, Unmount: m.Unmount, FirstBoot: true}
}

func TestGatherAll(t *testing.T) {
	root := fakeRoot(t,
		// No PARTNAME in uevent: the GPT of vda is read instead.
		fakeDev{sysPath: "vda", size: "131072", image: gptDisk},
		fakeDev{sysPath: "vda/vda1", size: "32768", part: "1", image: vfat("BALLASTBOOT")},
		fakeDev{sysPath: "vda/vda2", size: "32768", part: "2", image: blank(1 << 20)},
		fakeDev{sysPath: "sr0", size: "0"},
		fakeDev{sysPath: "sr1", size: "1000", image: iso("cidata", map[string]string{"user-data": "x", "meta-data": "y"})},
	)
	writeFile(t, filepath.Join(root, "run/ballast/baked.yaml"), "#cloud-config\nhostname: baked\n")
	writeFile(t, filepath.Join(root, FwCfgPath), "#cloud-config\nhostname: fwcfg\n")
	m := &fakeMounter{root: root, contents: map[string]map[string]string{
		"vda1": {"user-data": "#cloud-config\nhostname: boot\n"},
		"sr1":  {"user-data": "#cloud-config\nhostname: nocloud\n", "meta-data": "instance-id: x\n"},
	}}
	got := Gather(env(root, m))
	want := []Source{
		{Name: "baked", Path: "/run/ballast/baked.yaml", Data: []byte("#cloud-config\nhostname: baked\n")},
		{Name: "boot-partition", Path: root + "/dev/vda1:/user-data", Data: []byte("#cloud-config\nhostname: boot\n")},
		{Name: "nocloud", Path: root + "/dev/sr1:/user-data", Data: []byte("#cloud-config\nhostname: nocloud\n")},
		{Name: "fw_cfg", Path: FwCfgPath, Data: []byte("#cloud-config\nhostname: fwcfg\n")},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sources: %+v", len(got), got)
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].Path != want[i].Path || string(got[i].Data) != string(want[i].Data) || got[i].Err != nil {
			t.Errorf("source %d = %s %s %q %v, want %s %s %q", i, got[i].Name, got[i].Path, got[i].Data, got[i].Err, want[i].Name, want[i].Path, want[i].Data)
		}
	}
	if want := []string{"vda1 /run/ballast/boot vfat", "sr1 /run/ballast/cidata iso9660"}; strings.Join(m.mounts, "|") != strings.Join(want, "|") {
		t.Errorf("mounts %q, want %q", m.mounts, want)
	}
	if len(m.unmounts) != 1 || m.unmounts[0] != "/run/ballast/cidata" {
		t.Errorf("unmounts %q: the NoCloud volume must be unmounted, the boot partition kept", m.unmounts)
	}
}

func TestGatherNothing(t *testing.T) {
	root := fakeRoot(t, fakeDev{sysPath: "vda", size: "2048", image: blank(1 << 20)})
	m := &fakeMounter{root: root}
	if got := Gather(env(root, m)); len(got) != 0 {
		t.Errorf("sources %+v from an empty machine", got)
	}
	if len(m.mounts) != 0 {
		t.Errorf("mounted %q", m.mounts)
	}
}

func TestGatherLive(t *testing.T) {
	root := fakeRoot(t, fakeDev{sysPath: "vda", uevent: "PARTNAME=BALLAST_BOOT\n", size: "2048", part: "1", image: blank(1 << 20)})
	writeFile(t, filepath.Join(root, "run/ballast/live/user-data"), "live\n")
	m := &fakeMounter{root: root}
	e := env(root, m)
	e.LiveMedia = "/run/ballast/live"
	got := Gather(e)
	if len(got) != 1 || got[0].Name != "boot-partition" || string(got[0].Data) != "live\n" || got[0].Path != "/run/ballast/live/user-data" {
		t.Errorf("live sources %+v", got)
	}
	if len(m.mounts) != 0 {
		t.Errorf("live boot mounted a partition: %q", m.mounts)
	}
}

func TestGatherErrors(t *testing.T) {
	root := fakeRoot(t,
		fakeDev{sysPath: "vda", size: "131072", image: blank(1 << 20)},
		fakeDev{sysPath: "vda/vda1", uevent: "PARTNAME=BALLAST_BOOT\n", size: "32768", part: "1", image: blank(1 << 20)},
		fakeDev{sysPath: "vdb", size: "32768", image: vfat("CIDATA")},
	)
	// A directory where the baked file should be: present but unreadable.
	os.MkdirAll(filepath.Join(root, "run/ballast/baked.yaml"), 0o755)
	m := &fakeMounter{root: root, fail: errors.New("no vfat driver")}
	got := Gather(env(root, m))
	if len(got) != 3 {
		t.Fatalf("sources %+v", got)
	}
	for i, w := range []struct{ name, msg string }{
		{"baked", "baked.yaml"},
		{"boot-partition", "mounting " + root + "/dev/vda1 (BALLAST_BOOT) on /run/ballast/boot: no vfat driver"},
		{"nocloud", "label CIDATA"},
	} {
		if got[i].Name != w.name || got[i].Err == nil || !strings.Contains(got[i].Err.Error(), w.msg) || got[i].Data != nil {
			t.Errorf("source %d = %+v, want %s with an error mentioning %q", i, got[i], w.name, w.msg)
		}
	}

	// A NoCloud volume without user-data is reported, not ignored.
	m = &fakeMounter{root: root, contents: map[string]map[string]string{"vdb": {"meta-data": "x"}}}
	got = Gather(env(root, m))
	if n := got[len(got)-1]; n.Name != "nocloud" || n.Err == nil || !strings.Contains(n.Err.Error(), "has no user-data") {
		t.Errorf("nocloud without user-data: %+v", n)
	}
	// The boot partition without user-data is simply no source.
	for _, s := range got {
		if s.Name == "boot-partition" {
			t.Errorf("boot partition without user-data returned %+v", s)
		}
	}

	// No sysfs at all: both block-device sources say why.
	got = Gather(Env{Root: t.TempDir(), Mount: m.Mount, Unmount: m.Unmount, FirstBoot: true})
	if len(got) != 2 || got[0].Err == nil || got[1].Err == nil {
		t.Errorf("without sysfs: %+v", got)
	}
}

func TestIsMountpoint(t *testing.T) {
	if isMountpoint(t.TempDir()) {
		t.Error("a fresh temporary directory is a mount point")
	}
	// /proc is a mount point wherever these tests run.
	if !isMountpoint("/proc") {
		t.Error("/proc is not a mount point")
	}
}

// A CIDATA volume is read at a fresh node's first boot and a copy kept;
// later boots apply the copy and leave a new volume (a USB stick plugged
// in later) unread; off reads none; always reads it every boot.
func TestNoCloudPolicy(t *testing.T) {
	root := fakeRoot(t, fakeDev{sysPath: "sdb", size: "1000", image: vfat("CIDATA")})
	os.MkdirAll(filepath.Join(root, "var/lib/ballast"), 0o755)
	m := &fakeMounter{root: root, contents: map[string]map[string]string{
		"sdb": {"user-data": "#cloud-config\nhostname: first\n"},
	}}
	var warned []string
	gather := func(policy string, first bool) []Source {
		e := env(root, m)
		e.NoCloud, e.FirstBoot = policy, first
		e.Warn = func(msg string) { warned = append(warned, msg) }
		return Gather(e)
	}
	got := gather("", true)
	if len(got) != 1 || string(got[0].Data) != "#cloud-config\nhostname: first\n" || got[0].Err != nil {
		t.Fatalf("first boot: %+v", got)
	}
	if b, err := os.ReadFile(filepath.Join(root, SavedNoCloudPath)); err != nil || string(b) != "#cloud-config\nhostname: first\n" {
		t.Fatalf("kept copy %q %v", b, err)
	}

	// A stranger's stick at a later boot.
	m.contents["sdb"] = map[string]string{"user-data": "#cloud-config\nhostname: taken\n"}
	got = gather(NoCloudFirstBoot, false)
	if len(got) != 1 || string(got[0].Data) != "#cloud-config\nhostname: first\n" || got[0].Path != SavedNoCloudPath {
		t.Fatalf("later boot: %+v", got)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "not read") {
		t.Errorf("warnings %q", warned)
	}
	if got := gather(NoCloudOff, true); len(got) != 0 || len(warned) != 2 {
		t.Errorf("off: %+v, warnings %q", got, warned)
	}
	if got := gather(NoCloudAlways, false); len(got) != 1 || string(got[0].Data) != "#cloud-config\nhostname: taken\n" {
		t.Errorf("always: %+v", got)
	}

	for v, ok := range map[string]bool{"": true, "off": true, "always": true, "first-boot": true, "sometimes": false} {
		p, err := NoCloudPolicy(map[string]string{NoCloudKey: v})
		if (err == nil) != ok || p == "" {
			t.Errorf("NoCloudPolicy(%q) = %q, %v", v, p, err)
		}
	}
}

// The boot partition is read from the root's disk alone: a stick with a
// ballast image of its own (sda, found first) does not configure the node.
func TestBootPartitionOnRootDisk(t *testing.T) {
	root := fakeRoot(t,
		fakeDev{sysPath: "sda", size: "131072", image: blank(1 << 20)},
		fakeDev{sysPath: "sda/sda1", uevent: "PARTNAME=BALLAST_BOOT\n", size: "32768", part: "1", image: vfat("BALLASTBOOT")},
		fakeDev{sysPath: "vda", size: "131072", image: blank(1 << 20)},
		fakeDev{sysPath: "vda/vda1", uevent: "PARTNAME=BALLAST_BOOT\n", size: "32768", part: "1", image: vfat("BALLASTBOOT")},
	)
	m := &fakeMounter{root: root, contents: map[string]map[string]string{
		"sda1": {"user-data": "#cloud-config\nhostname: stranger\n"},
		"vda1": {"user-data": "#cloud-config\nhostname: node\n"},
	}}
	e := env(root, m)
	e.Disk = "vda"
	got := Gather(e)
	if len(got) != 1 || string(got[0].Data) != "#cloud-config\nhostname: node\n" {
		t.Fatalf("sources %+v", got)
	}
}
