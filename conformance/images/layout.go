package images

import (
	"fmt"
	"io"
	"io/fs"
	"path"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/ballast-os/ballast/imagebuild/ociimage"
)

// defaultPath is the PATH of every image (Docker's default, Alpine's and
// Debian's images set the same).
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// scriptOnly are packages that other packages depend on only to run their
// maintainer scripts, which an image build never runs.
var scriptOnly = []string{"debconf", "debconf-2.0", "cdebconf"}

// Accounts of the base images upstream builds on, so that a test that
// looks a user or a group up, or counts the groups a process gets from
// the image's /etc/group, sees what it would upstream.
const (
	// alpinePasswd and alpineGroup are Alpine's (alpine-baselayout).
	alpinePasswd = `root:x:0:0:root:/root:/bin/sh
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
lp:x:4:7:lp:/var/spool/lpd:/sbin/nologin
sync:x:5:0:sync:/sbin:/bin/sync
shutdown:x:6:0:shutdown:/sbin:/sbin/shutdown
halt:x:7:0:halt:/sbin:/sbin/halt
mail:x:8:12:mail:/var/mail:/sbin/nologin
news:x:9:13:news:/usr/lib/news:/sbin/nologin
uucp:x:10:14:uucp:/var/spool/uucppublic:/sbin/nologin
cron:x:16:16:cron:/var/spool/cron:/sbin/nologin
ftp:x:21:21::/var/lib/ftp:/sbin/nologin
sshd:x:22:22:sshd:/dev/null:/sbin/nologin
games:x:35:35:games:/usr/games:/sbin/nologin
ntp:x:123:123:NTP:/var/empty:/sbin/nologin
guest:x:405:100:guest:/dev/null:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
`
	alpineGroup = `root:x:0:root
bin:x:1:root,bin,daemon
daemon:x:2:root,bin,daemon
sys:x:3:root,bin
adm:x:4:root,daemon
tty:x:5:
disk:x:6:root
lp:x:7:lp
kmem:x:9:
wheel:x:10:root
floppy:x:11:root
mail:x:12:mail
news:x:13:news
uucp:x:14:uucp
cron:x:16:cron
console:x:19:
audio:x:18:
cdrom:x:24:
dialout:x:20:root
ftp:x:21:
sshd:x:22:
input:x:23:
tape:x:26:root
video:x:27:root
netdev:x:28:
kvm:x:34:kvm
games:x:35:
shadow:x:42:
www-data:x:82:
users:x:100:games
ntp:x:123:
abuild:x:300:
utmp:x:406:
ping:x:999:
nogroup:x:65533:
nobody:x:65534:
`
	// busyboxPasswd and busyboxGroup are the Docker library busybox
	// image's (Buildroot's skeleton).
	busyboxPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	busyboxGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`
)

// nsswitch is Debian's /etc/nsswitch.conf (libc-bin's postinst writes it),
// for images whose programs use glibc: /etc/hosts before DNS, as musl does
// on Alpine.
const nsswitch = `passwd:         files
group:          files
shadow:         files
gshadow:        files

hosts:          files dns
networks:       files

protocols:      db files
services:       db files
ethers:         db files
rpc:            db files

netgroup:       nis
`

// addBase adds what every image has besides its programs: /etc/passwd
// and /etc/group, a sticky world-writable /tmp, root's home.
func addBase(t *filetree.Tree, passwd, group string) error {
	for _, e := range []filetree.Entry{
		{Path: "etc/passwd", Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(passwd)},
		{Path: "etc/group", Kind: filetree.File, Mode: 0o644, Data: filetree.Bytes(group)},
		{Path: "tmp", Kind: filetree.Dir, Mode: 0o777 | fs.ModeSticky},
		{Path: "root", Kind: filetree.Dir, Mode: 0o700},
	} {
		if err := t.Add(e); err != nil {
			return err
		}
	}
	return nil
}

// addProgram adds a root-owned executable.
func addProgram(t *filetree.Tree, p string, data []byte) error {
	return t.Add(filetree.Entry{Path: p, Kind: filetree.File, Mode: 0o755, Data: filetree.Bytes(data)})
}

// file returns the contents of a regular file of the tree, following
// symlinks.
func file(t *filetree.Tree, p string) ([]byte, error) {
	for hops := 0; hops < 40; hops++ {
		r, err := t.Resolve(p)
		if err != nil {
			return nil, err
		}
		e := t.Get(r)
		switch {
		case e == nil:
			return nil, fmt.Errorf("/%s: not in the image", p)
		case e.Kind == filetree.Symlink:
			if path.IsAbs(e.Target) {
				p = e.Target
			} else {
				p = path.Join(path.Dir(r), e.Target)
			}
			continue
		case e.Kind == filetree.Hardlink:
			if e, err = t.LinkTarget(e); err != nil {
				return nil, err
			}
		case e.Kind != filetree.File:
			return nil, fmt.Errorf("/%s: a %v, not a file", p, e.Kind)
		}
		rc, err := e.Data.Open()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	return nil, fmt.Errorf("/%s: too many symlinks", p)
}

// entries turns a tree into the layer's entries, reading every file.
func entries(t *filetree.Tree) ([]ociimage.Entry, error) {
	var out []ociimage.Entry
	for _, e := range t.Entries() {
		if e.Path == "" {
			continue
		}
		oe := ociimage.Entry{Path: e.Path, Mode: e.Mode, UID: e.UID, GID: e.GID}
		switch e.Kind {
		case filetree.Dir:
			oe.Type = ociimage.Dir
		case filetree.Symlink:
			oe.Type, oe.Target = ociimage.Symlink, e.Target
		case filetree.File, filetree.Hardlink:
			data, err := file(t, e.Path)
			if err != nil {
				return nil, err
			}
			oe.Type, oe.Data = ociimage.File, data
		default:
			return nil, fmt.Errorf("/%s: a %v has no place in a container image", e.Path, e.Kind)
		}
		out = append(out, oe)
	}
	return out, nil
}

// image is the image of a tree run with cfg, PATH first in its
// environment.
func image(t *filetree.Tree, cfg ociimage.Config) (ociimage.Image, error) {
	ents, err := entries(t)
	if err != nil {
		return ociimage.Image{}, err
	}
	cfg.Env = append([]string{defaultPath}, cfg.Env...)
	return ociimage.Image{Config: cfg, Entries: ents}, nil
}
