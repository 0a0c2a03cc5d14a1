package mounts

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Recorder is a fake Mounter that records calls.
type recorder struct {
	calls []string
	busy  map[string]bool
}

func (r *recorder) Mount(source, target, fstype string, flags uintptr, data string) error {
	r.calls = append(r.calls, fmt.Sprintf("mount %s %s %s %#x %s", source, target, fstype, flags, data))
	return nil
}

func (r *recorder) Unmount(target string, flags int) error {
	r.calls = append(r.calls, fmt.Sprintf("umount %s %d", target, flags))
	if r.busy[target] && flags == 0 {
		return unix.EBUSY
	}
	return nil
}

func TestApplyCreatesTargets(t *testing.T) {
	root := t.TempDir()
	r := &recorder{}
	err := ApplyAll(r, root, []Mount{
		{Source: "proc", Target: "/proc", FSType: "proc"},
		{Source: "tmpfs", Target: "/sysroot/run", FSType: "tmpfs", Data: "mode=0755", Mode: 0o700},
		Bind("/persist/home", "/home"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"proc", "sysroot/run", "home"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s not created: %v", d, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(root, "sysroot/run")); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode = %v", fi.Mode())
	}
	want := []string{
		"mount proc " + root + "/proc proc 0x0 ",
		"mount tmpfs " + root + "/sysroot/run tmpfs 0x0 mode=0755",
		"mount /persist/home " + root + "/home  0x1000 ",
	}
	if !reflect.DeepEqual(r.calls, want) {
		t.Fatalf("calls\n%q\nwant\n%q", r.calls, want)
	}
}

const sampleMountinfo = `22 1 0:21 / /proc rw,nosuid - proc proc rw
23 1 0:5 / /dev rw - devtmpfs devtmpfs rw,size=1000k
30 1 253:4 / /persist rw,relatime - ext4 /dev/vda4 rw
31 1 253:4 /home /home rw - ext4 /dev/vda4 rw
32 30 0:40 / /persist/with\040space rw - tmpfs tmpfs rw
33 1 253:4 /var-log /var/log rw - ext4 /dev/vda4 rw
`

func TestParseMountinfo(t *testing.T) {
	in, err := ParseMountinfo(sampleMountinfo)
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 6 {
		t.Fatalf("len = %d", len(in))
	}
	if in[4].Target != "/persist/with space" || in[2].Source != "/dev/vda4" || in[2].FSType != "ext4" || in[3].Root != "/home" {
		t.Fatalf("parsed %+v", in)
	}
	if m, ok := Find(in, "/persist"); !ok || m.ID != 30 {
		t.Fatalf("Find = %+v %v", m, ok)
	}
	if _, err := ParseMountinfo("garbage line\n"); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestUnmountUnderDeepestFirstLazyFallback(t *testing.T) {
	in, _ := ParseMountinfo(sampleMountinfo)
	r := &recorder{busy: map[string]bool{"/var/log": true}}
	if err := UnmountUnder(r, in, "/persist", "/home", "/var/log"); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(r.calls, "\n")
	want := strings.Join([]string{
		"umount /var/log 0",
		fmt.Sprintf("umount /var/log %d", unix.MNT_DETACH),
		"umount /persist/with space 0",
		"umount /home 0",
		"umount /persist 0",
	}, "\n")
	if got != want {
		t.Fatalf("calls\n%s\nwant\n%s", got, want)
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add(sampleMountinfo)
	f.Add("1 2 3 4 5 6 - a b c\n")
	f.Fuzz(func(t *testing.T, s string) {
		in, err := ParseMountinfo(s)
		if err == nil {
			for _, i := range in {
				_ = i.Target
			}
		}
	})
}
