package squashfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"golang.org/x/sys/unix"
)

// TestKernelMount loop-mounts the image with the running kernel's squashfs
// driver, the reader that matters at boot, and compares what it sees with
// the tree. It needs root and loop devices.
func TestKernelMount(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a loop device; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("loop-mounting needs root; unsquashfs and go-diskfs check the image without it")
	}
	for _, c := range []Compression{Zstd, XZ} {
		t.Run(c.String(), func(t *testing.T) {
			tr := testTree(t, t.TempDir())
			p, _ := writeTemp(t, tr, Options{Compression: c})
			mnt := t.TempDir()
			if out, err := exec.Command("mount", "-t", "squashfs", "-o", "loop,ro", p, mnt).CombinedOutput(); err != nil {
				t.Skipf("cannot loop-mount here (%v: %s); unsquashfs and go-diskfs check the image", err, bytes.TrimSpace(out))
			}
			defer func() {
				if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
					t.Errorf("umount: %v: %s", err, out)
				}
			}()
			compareMounted(t, tr, mnt)
		})
	}
}

func compareMounted(t *testing.T, tr *filetree.Tree, mnt string) {
	kinds := map[filetree.Kind]uint32{
		filetree.File: unix.S_IFREG, filetree.Hardlink: unix.S_IFREG, filetree.Dir: unix.S_IFDIR,
		filetree.Symlink: unix.S_IFLNK, filetree.CharDevice: unix.S_IFCHR, filetree.BlockDevice: unix.S_IFBLK,
		filetree.FIFO: unix.S_IFIFO,
	}
	for _, e := range tr.Entries() {
		p := filepath.Join(mnt, filepath.FromSlash(e.Path))
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Errorf("%s: %v", e.Path, err)
			continue
		}
		want := e
		nlink := uint64(1)
		if e.Kind == filetree.Hardlink {
			want = tr.Get(e.Target)
		}
		if e.Path == "usr/bin/su" || e.Path == "usr/bin/su-link" {
			nlink = 2
		}
		if st.Mode&unix.S_IFMT != kinds[e.Kind] {
			t.Errorf("%s: type %o, want %o", e.Path, st.Mode&unix.S_IFMT, kinds[e.Kind])
		}
		if e.Kind != filetree.Symlink && st.Mode&0o7777 != want.UnixPerm() {
			t.Errorf("%s: mode %o, want %o", e.Path, st.Mode&0o7777, want.UnixPerm())
		}
		if st.Uid != uint32(want.UID) || st.Gid != uint32(want.GID) {
			t.Errorf("%s: owner %d:%d, want %d:%d", e.Path, st.Uid, st.Gid, want.UID, want.GID)
		}
		if st.Mtim.Sec != testTime.Unix() {
			t.Errorf("%s: mtime %d, want %d", e.Path, st.Mtim.Sec, testTime.Unix())
		}
		switch e.Kind {
		case filetree.Dir:
			subdirs := 0
			for _, c := range tr.Children(e.Path) {
				if c.Kind == filetree.Dir {
					subdirs++
				}
			}
			if st.Nlink != uint64(2+subdirs) {
				t.Errorf("%s: %d links, want %d", e.Path, st.Nlink, 2+subdirs)
			}
			des, err := os.ReadDir(p)
			if err != nil || len(des) != len(tr.Children(e.Path)) {
				t.Errorf("%s: %d entries (%v), want %d", e.Path, len(des), err, len(tr.Children(e.Path)))
			}
		case filetree.File, filetree.Hardlink:
			if st.Nlink != nlink {
				t.Errorf("%s: %d links, want %d", e.Path, st.Nlink, nlink)
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, contents(t, want)) {
				t.Errorf("%s: contents differ (%v)", e.Path, err)
			}
		case filetree.Symlink:
			if got, err := os.Readlink(p); err != nil || got != e.Target {
				t.Errorf("%s: link %q (%v), want %q", e.Path, got, err, e.Target)
			}
		case filetree.CharDevice, filetree.BlockDevice:
			if unix.Major(st.Rdev) != e.Major || unix.Minor(st.Rdev) != e.Minor {
				t.Errorf("%s: device %d:%d, want %d:%d", e.Path, unix.Major(st.Rdev), unix.Minor(st.Rdev), e.Major, e.Minor)
			}
		}
	}
}
