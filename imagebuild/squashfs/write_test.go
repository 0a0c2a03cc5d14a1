package squashfs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem"
	dsquashfs "github.com/diskfs/go-diskfs/filesystem/squashfs"
	"golang.org/x/sys/unix"
)

var testTime = time.Date(2024, 3, 5, 6, 7, 0, 0, time.UTC)

// pseudoText returns n bytes of compressible, word-like data.
func pseudoText(r *rand.Rand, n int) []byte {
	words := []string{"ballast ", "squashfs ", "kernel ", "module ", "debian\n", "node ", "k3s ", "image "}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testTree builds a tree with every kind of entry and the edge cases the
// format has: empty files, files of exactly one block, multi-block files
// with tails, incompressible data, a directory big enough to need the
// extended inode and many listing headers, setuid/setgid/sticky bits,
// owners, hard links and devices.
func testTree(t testing.TB, hostDir string) *filetree.Tree {
	r := rand.New(rand.NewPCG(1, 2))
	tr := filetree.New(testTime)
	must(t, tr.AddDir("etc", 0o755))
	must(t, tr.AddDir("tmp", 0o777|fs.ModeSticky))
	must(t, tr.Add(filetree.Entry{Path: "var/empty", Kind: filetree.Dir, Mode: 0o700, UID: 100, GID: 101}))
	must(t, tr.AddFile("etc/hostname", 0o644, []byte("ballast\n")))
	must(t, tr.AddFile("etc/empty", 0o600, nil))
	must(t, tr.AddFile("usr/share/block", 0o644, pseudoText(r, 128<<10)))
	must(t, tr.AddFile("usr/share/multi", 0o644, pseudoText(r, 3*128<<10+1234)))
	must(t, tr.AddFile("usr/share/random", 0o644, randomBytes(r, 2*128<<10+77)))
	must(t, tr.AddFile("usr/share/name with space", 0o644, []byte("spaces\n")))
	must(t, tr.Add(filetree.Entry{Path: "usr/bin/su", Kind: filetree.File, Mode: 0o755 | fs.ModeSetuid, Data: filetree.Bytes("su binary")}))
	must(t, tr.Add(filetree.Entry{Path: "usr/bin/wall", Kind: filetree.File, Mode: 0o755 | fs.ModeSetgid, GID: 5, Data: filetree.Bytes("wall binary")}))
	must(t, tr.Add(filetree.Entry{Path: "usr/bin/odd", Kind: filetree.File, Mode: 0o644 | fs.ModeSetuid | fs.ModeSticky, UID: 1000, GID: 1000, Data: filetree.Bytes("odd")}))
	must(t, tr.Add(filetree.Entry{Path: "usr/bin/su-link", Kind: filetree.Hardlink, Target: "usr/bin/su"}))
	must(t, tr.AddSymlink("bin", "usr/bin"))
	must(t, tr.AddSymlink("etc/abs", "/usr/share/multi"))
	must(t, tr.Add(filetree.Entry{Path: "dev/console", Kind: filetree.CharDevice, Mode: 0o600, Major: 5, Minor: 1}))
	must(t, tr.Add(filetree.Entry{Path: "dev/null", Kind: filetree.CharDevice, Mode: 0o666, Major: 1, Minor: 3}))
	must(t, tr.Add(filetree.Entry{Path: "dev/nvme0n1p300", Kind: filetree.BlockDevice, Mode: 0o660, GID: 6, Major: 259, Minor: 300}))
	must(t, tr.Add(filetree.Entry{Path: "run/initctl", Kind: filetree.FIFO, Mode: 0o600}))

	host := filepath.Join(hostDir, "host-file")
	// Written once per directory: rewriting would change its mtime, which
	// Digest rightly notices.
	hostData := pseudoText(r, 200<<10)
	if _, err := os.Stat(host); err != nil {
		must(t, os.WriteFile(host, hostData, 0o644))
	}
	hf, err := filetree.NewHostFile(host)
	must(t, err)
	must(t, tr.Add(filetree.Entry{Path: "usr/lib/host", Kind: filetree.File, Mode: 0o644, Data: hf}))

	for i := range 3000 {
		name := fmt.Sprintf("usr/share/many/entry-%05d-with-a-long-name", i)
		var data []byte
		if i%3 != 0 {
			data = pseudoText(r, r.IntN(3000))
		}
		must(t, tr.AddFile(name, 0o644, data))
	}
	return tr
}

func writeTemp(t testing.TB, tr *filetree.Tree, opts Options) (string, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.squashfs")
	n, err := WriteFile(context.Background(), tr, p, opts)
	must(t, err)
	b, err := os.ReadFile(p)
	must(t, err)
	if int64(len(b)) != n {
		t.Fatalf("WriteFile returned size %d, file has %d bytes", n, len(b))
	}
	if n%4096 != 0 {
		t.Errorf("image size %d is not a multiple of 4096", n)
	}
	return p, b
}

func TestDeterministic(t *testing.T) {
	hostDir := t.TempDir()
	tr := testTree(t, hostDir)
	_, a := writeTemp(t, tr, Options{Workers: 1})
	_, b := writeTemp(t, tr, Options{Workers: 4})
	ha, hb := sha256.Sum256(a), sha256.Sum256(b)
	if ha != hb {
		t.Fatalf("two writes of the same tree differ: %x vs %x", ha, hb)
	}
	// The same tree built again from scratch, too.
	_, c := writeTemp(t, testTree(t, hostDir), Options{Workers: 2})
	if hc := sha256.Sum256(c); hc != ha {
		t.Fatalf("a rebuilt identical tree gives a different image: %x vs %x", hc, ha)
	}
}

func TestReadBackDiskfs(t *testing.T) {
	for _, c := range []Compression{Zstd, XZ} {
		t.Run(c.String(), func(t *testing.T) {
			hostDir := t.TempDir()
			tr := testTree(t, hostDir)
			p, _ := writeTemp(t, tr, Options{Compression: c})
			checkWithDiskfs(t, tr, p)
		})
	}
}

func checkWithDiskfs(t *testing.T, tr *filetree.Tree, p string) {
	st, err := os.Stat(p)
	must(t, err)
	be, err := file.OpenFromPath(p, true)
	must(t, err)
	defer be.Close()
	sq, err := dsquashfs.Read(be, st.Size(), 0, 0)
	must(t, err)

	// Read every directory once: go-diskfs's Stat and ReadFile re-read the
	// parent directory on each call, which is quadratic in a big one.
	listed := map[string]fs.DirEntry{}
	for _, e := range tr.Entries() {
		if e.Kind != filetree.Dir {
			continue
		}
		dir := e.Path
		if dir == "" {
			dir = "."
		}
		des, err := sq.ReadDir(dir)
		if err != nil {
			t.Errorf("%s: %v", dir, err)
			continue
		}
		if want := len(tr.Children(e.Path)); len(des) != want {
			t.Errorf("%s: %d entries, want %d", dir, len(des), want)
		}
		for _, de := range des {
			listed[path.Join(e.Path, de.Name())] = de
		}
	}
	inodes := map[string]uint32{}
	for _, e := range tr.Entries() {
		if e.Path == "" {
			continue
		}
		de, ok := listed[e.Path]
		if !ok {
			t.Errorf("%s: not listed", e.Path)
			continue
		}
		fi, err := de.Info()
		must(t, err)
		want := e
		if e.Kind == filetree.Hardlink {
			want = tr.Get(e.Target)
		}
		sys := fi.Sys().(*dsquashfs.StatT)
		if sys.UID != uint32(want.UID) || sys.GID != uint32(want.GID) {
			t.Errorf("%s: owner %d:%d, want %d:%d", e.Path, sys.UID, sys.GID, want.UID, want.GID)
		}
		if !fi.ModTime().Equal(testTime) {
			t.Errorf("%s: mtime %v, want %v", e.Path, fi.ModTime(), testTime)
		}
		if fi.Mode().Perm() != want.Mode.Perm() {
			t.Errorf("%s: permissions %v, want %v", e.Path, fi.Mode().Perm(), want.Mode.Perm())
		}
		inodes[e.Path] = sys.Inode
		wantType := map[filetree.Kind]fs.FileMode{
			filetree.File: 0, filetree.Hardlink: 0, filetree.Dir: fs.ModeDir, filetree.Symlink: fs.ModeSymlink,
			filetree.CharDevice: fs.ModeDevice | fs.ModeCharDevice, filetree.BlockDevice: fs.ModeDevice,
			filetree.FIFO: fs.ModeNamedPipe,
		}[e.Kind]
		if fi.Mode().Type() != wantType {
			t.Errorf("%s: type %v, want %v", e.Path, fi.Mode().Type(), wantType)
		}
		switch e.Kind {
		case filetree.Symlink:
			if sys.LinkTarget != e.Target {
				t.Errorf("%s: link target %q, want %q", e.Path, sys.LinkTarget, e.Target)
			}
		case filetree.File, filetree.Hardlink:
			f, err := de.(interface {
				Open() (filesystem.File, error)
			}).Open()
			if err != nil {
				t.Errorf("%s: %v", e.Path, err)
				continue
			}
			got, err := io.ReadAll(f)
			if err != nil {
				t.Errorf("%s: %v", e.Path, err)
				continue
			}
			if !bytes.Equal(got, contents(t, want)) {
				t.Errorf("%s: contents differ (%d bytes read, %d expected)", e.Path, len(got), want.Size())
			}
		}
	}
	// The big directory's listing exceeds 64 KiB and needs the extended
	// inode; a hard-linked file needs one for its link count.
	for p, want := range map[string]string{"usr/share/many": "extended-directory", "usr/bin/su": "extended-file", "etc/hostname": "basic-file"} {
		if de, ok := listed[p]; ok {
			fi, _ := de.Info()
			if got := fi.Sys().(*dsquashfs.StatT).InodeType; got != want {
				t.Errorf("%s: inode type %s, want %s", p, got, want)
			}
		}
	}
	if inodes["usr/bin/su"] != inodes["usr/bin/su-link"] {
		t.Errorf("hard link has inode %d, its target %d", inodes["usr/bin/su-link"], inodes["usr/bin/su"])
	}
}

func contents(t testing.TB, e *filetree.Entry) []byte {
	rc, err := e.Data.Open()
	must(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	must(t, err)
	return b
}

// lsMode renders a mode the way ls and unsquashfs -lls do.
func lsMode(k filetree.Kind, m fs.FileMode) string {
	b := []byte("?rwxrwxrwx")
	b[0] = map[filetree.Kind]byte{filetree.File: '-', filetree.Hardlink: '-', filetree.Dir: 'd',
		filetree.Symlink: 'l', filetree.CharDevice: 'c', filetree.BlockDevice: 'b', filetree.FIFO: 'p'}[k]
	for i := range 9 {
		if m&(1<<(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	special := func(i int, set bool, on, off byte) {
		if set {
			if b[i] == '-' {
				b[i] = off
			} else {
				b[i] = on
			}
		}
	}
	special(3, m&fs.ModeSetuid != 0, 's', 'S')
	special(6, m&fs.ModeSetgid != 0, 's', 'S')
	special(9, m&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}

// unsquashfs finds Debian's unsquashfs, installing squashfs-tools when it
// is missing and we may; without it the test fails rather than skips.
func unsquashfs(t *testing.T) string {
	if p, err := exec.LookPath("unsquashfs"); err == nil {
		return p
	}
	if os.Geteuid() == 0 {
		if out, err := exec.Command("apt-get", "install", "-y", "squashfs-tools").CombinedOutput(); err != nil {
			t.Logf("apt-get install squashfs-tools: %v\n%s", err, out)
		}
		if p, err := exec.LookPath("unsquashfs"); err == nil {
			return p
		}
	}
	t.Fatal("unsquashfs not found; install squashfs-tools")
	return ""
}

var llnLine = regexp.MustCompile(`^(\S{10}) (\d+)/(\d+) +(\d+|\d+, *\d+) (\d{4}-\d\d-\d\d \d\d:\d\d) squashfs-root(.*)$`)

func TestReadBackUnsquashfs(t *testing.T) {
	tool := unsquashfs(t)
	for _, c := range []Compression{Zstd, XZ} {
		t.Run(c.String(), func(t *testing.T) {
			hostDir := t.TempDir()
			tr := testTree(t, hostDir)
			p, _ := writeTemp(t, tr, Options{Compression: c})
			cmd := exec.Command(tool, "-lln", p)
			cmd.Env = append(os.Environ(), "TZ=UTC")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("unsquashfs -lln: %v\n%s", err, out)
			}
			seen := map[string]bool{}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				line := sc.Text()
				m := llnLine.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				name, target, _ := strings.Cut(strings.TrimPrefix(m[6], "/"), " -> ")
				seen[name] = true
				e := tr.Get(name)
				if e == nil {
					t.Errorf("unsquashfs lists %q, not in the tree", name)
					continue
				}
				want := e
				if e.Kind == filetree.Hardlink {
					want = tr.Get(e.Target)
				}
				if got, w := m[1], lsMode(e.Kind, want.Mode); got != w {
					t.Errorf("%s: mode %s, want %s", name, got, w)
				}
				if m[2] != strconv.Itoa(want.UID) || m[3] != strconv.Itoa(want.GID) {
					t.Errorf("%s: owner %s/%s, want %d/%d", name, m[2], m[3], want.UID, want.GID)
				}
				if m[5] != testTime.Format("2006-01-02 15:04") {
					t.Errorf("%s: time %s, want %s", name, m[5], testTime.Format("2006-01-02 15:04"))
				}
				switch e.Kind {
				case filetree.Symlink:
					if target != e.Target {
						t.Errorf("%s: target %q, want %q", name, target, e.Target)
					}
				case filetree.CharDevice, filetree.BlockDevice:
					// unsquashfs 4.5 lists rdev>>8, rdev&0xff, which is
					// right only for minors below 256; larger ones are
					// checked by extracting the node (TestDeviceNodes).
					if e.Minor > 255 {
						break
					}
					if w := fmt.Sprintf("%d,%d", e.Major, e.Minor); strings.ReplaceAll(m[4], " ", "") != w {
						t.Errorf("%s: device %s, want %s", name, m[4], w)
					}
				case filetree.File, filetree.Hardlink:
					if m[4] != strconv.FormatInt(want.Size(), 10) {
						t.Errorf("%s: size %s, want %d", name, m[4], want.Size())
					}
				}
			}
			for _, e := range tr.Entries() {
				if !seen[e.Path] {
					t.Errorf("%q missing from unsquashfs listing", e.Path)
				}
			}

			// Extract the regular files and compare contents.
			var list bytes.Buffer
			for _, e := range tr.Entries() {
				if e.Kind == filetree.File || e.Kind == filetree.Hardlink {
					fmt.Fprintln(&list, e.Path)
				}
			}
			dir := t.TempDir()
			ef := filepath.Join(dir, "extract-list")
			must(t, os.WriteFile(ef, list.Bytes(), 0o644))
			dest := filepath.Join(dir, "root")
			if out, err := exec.Command(tool, "-no-xattrs", "-d", dest, "-ef", ef, p).CombinedOutput(); err != nil {
				t.Fatalf("unsquashfs extract: %v\n%s", err, out)
			}
			for _, e := range tr.Entries() {
				want := e
				if e.Kind == filetree.Hardlink {
					want = tr.Get(e.Target)
				} else if e.Kind != filetree.File {
					continue
				}
				got, err := os.ReadFile(filepath.Join(dest, filepath.FromSlash(e.Path)))
				if err != nil {
					t.Errorf("%s: %v", e.Path, err)
					continue
				}
				if !bytes.Equal(got, contents(t, want)) {
					t.Errorf("%s: extracted contents differ", e.Path)
				}
			}
		})
	}
}

func TestEmptyTree(t *testing.T) {
	tr := filetree.New(testTime)
	p, _ := writeTemp(t, tr, Options{})
	checkWithDiskfs(t, tr, p)
	out, err := exec.Command(unsquashfs(t), "-lln", p).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
}

func TestShortSourceLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "short")
	must(t, os.WriteFile(host, []byte("abc"), 0o644))
	tr := filetree.New(testTime)
	must(t, tr.Add(filetree.Entry{Path: "f", Kind: filetree.File, Mode: 0o644, Data: filetree.HostFile{Path: host, Len: 10}}))
	out := filepath.Join(dir, "out", "image.squashfs")
	must(t, os.Mkdir(filepath.Dir(out), 0o755))
	_, err := WriteFile(context.Background(), tr, out, Options{})
	if err == nil || !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "shorter") {
		t.Fatalf("want an error naming %s as short, got %v", host, err)
	}
	left, _ := os.ReadDir(filepath.Dir(out))
	if len(left) != 0 {
		t.Fatalf("failed write left %v behind", left)
	}

	// A source longer than recorded is refused too.
	tr2 := filetree.New(testTime)
	must(t, tr2.Add(filetree.Entry{Path: "f", Kind: filetree.File, Mode: 0o644, Data: filetree.HostFile{Path: host, Len: 2}}))
	if _, err := WriteFile(context.Background(), tr2, out, Options{}); err == nil || !strings.Contains(err.Error(), "longer") {
		t.Fatalf("want a 'longer' error, got %v", err)
	}
}

func TestBadHardlink(t *testing.T) {
	tr := filetree.New(testTime)
	must(t, tr.AddDir("d", 0o755))
	must(t, tr.Add(filetree.Entry{Path: "l", Kind: filetree.Hardlink, Target: "d"}))
	must(t, tr.Add(filetree.Entry{Path: "m", Kind: filetree.Hardlink, Target: "missing"}))
	_, err := Write(context.Background(), tr, &memWriterAt{}, Options{})
	if err == nil || !strings.Contains(err.Error(), `"d" is a dir`) {
		t.Fatalf("want an error about the link to a directory, got %v", err)
	}
}

func TestDigest(t *testing.T) {
	hostDir := t.TempDir()
	tr := testTree(t, hostDir)
	d1, err := Digest(tr, Options{})
	must(t, err)
	d2, err := Digest(testTree(t, hostDir), Options{Workers: 7})
	must(t, err)
	if d1 != d2 {
		t.Fatalf("digest of identical trees differs: %s vs %s", d1, d2)
	}
	changes := map[string]func(*filetree.Tree) Options{
		"content": func(tr *filetree.Tree) Options {
			must(t, tr.AddFile("etc/hostname", 0o644, []byte("other\n")))
			return Options{}
		},
		"mode": func(tr *filetree.Tree) Options {
			tr.Get("usr/bin/su").Mode &^= fs.ModeSetuid
			return Options{}
		},
		"owner": func(tr *filetree.Tree) Options {
			tr.Get("etc/hostname").GID = 4
			return Options{}
		},
		"time": func(tr *filetree.Tree) Options {
			tr.ModTime = tr.ModTime.Add(time.Second)
			return Options{}
		},
		"link":        func(tr *filetree.Tree) Options { must(t, tr.AddSymlink("bin", "usr/sbin")); return Options{} },
		"compression": func(*filetree.Tree) Options { return Options{Compression: XZ} },
		"level":       func(*filetree.Tree) Options { return Options{Level: 19} },
		"removed":     func(tr *filetree.Tree) Options { tr.Remove("run/initctl"); return Options{} },
	}
	for name, change := range changes {
		tr := testTree(t, hostDir)
		opts := change(tr)
		d, err := Digest(tr, opts)
		must(t, err)
		if d == d1 {
			t.Errorf("%s: digest did not change", name)
		}
	}
	// A host file touched on disk changes the digest.
	e := tr.Get("usr/lib/host")
	hp := e.Data.(filetree.HostFile).Path
	must(t, os.Chtimes(hp, time.Now(), time.Now().Add(time.Hour)))
	d3, err := Digest(tr, Options{})
	must(t, err)
	if d3 == d1 {
		t.Error("touching a host file did not change the digest")
	}
	if _, err := hex.DecodeString(d1); err != nil || len(d1) != 64 {
		t.Errorf("digest %q is not hex SHA-256", d1)
	}
}

type memWriterAt struct{ b []byte }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}

// benchTree is about 100 MB: many small and medium files of word-like text
// (compressible, like binaries and docs) and some random data.
func benchTree(b *testing.B) *filetree.Tree {
	r := rand.New(rand.NewPCG(3, 4))
	tr := filetree.New(testTime)
	var total int
	for i := 0; total < 100<<20; i++ {
		n := 1 << (10 + r.IntN(9)) // 1 KiB .. 256 KiB
		n += r.IntN(n)
		var data []byte
		if i%10 == 0 {
			data = randomBytes(r, n)
		} else {
			data = pseudoText(r, n)
		}
		must(b, tr.AddFile(path.Join(fmt.Sprintf("usr/lib/d%03d", i%300), fmt.Sprintf("f%05d", i)), 0o644, data))
		total += n
	}
	return tr
}

func BenchmarkWrite(b *testing.B) {
	tr := benchTree(b)
	for _, c := range []Compression{Zstd, XZ} {
		if c == XZ && testing.Short() {
			continue
		}
		b.Run(c.String(), func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(tr.TotalSize())
			var size int64
			for b.Loop() {
				var err error
				size, err = WriteFile(context.Background(), tr, filepath.Join(dir, "img"), Options{Compression: c})
				must(b, err)
			}
			b.ReportMetric(float64(size)/float64(tr.TotalSize()), "ratio")
		})
	}
}

// TestDeviceNodes extracts the device nodes with unsquashfs, which decodes
// them as the kernel does, and checks their numbers. Creating device nodes
// needs root.
func TestDeviceNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating device nodes needs root; TestReadBackUnsquashfs checks minors below 256 without it")
	}
	tool := unsquashfs(t)
	tr := testTree(t, t.TempDir())
	p, _ := writeTemp(t, tr, Options{})
	dest := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command(tool, "-no-xattrs", "-d", dest, p, "dev").CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	n := 0
	for _, e := range tr.Entries() {
		if e.Kind != filetree.CharDevice && e.Kind != filetree.BlockDevice {
			continue
		}
		n++
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(dest, e.Path), &st))
		if unix.Major(st.Rdev) != e.Major || unix.Minor(st.Rdev) != e.Minor {
			t.Errorf("%s: device %d:%d, want %d:%d", e.Path, unix.Major(st.Rdev), unix.Minor(st.Rdev), e.Major, e.Minor)
		}
		wantType := uint32(unix.S_IFCHR)
		if e.Kind == filetree.BlockDevice {
			wantType = unix.S_IFBLK
		}
		if st.Mode&unix.S_IFMT != wantType || st.Mode&0o7777 != e.UnixPerm() {
			t.Errorf("%s: mode %o", e.Path, st.Mode)
		}
	}
	if n != 3 {
		t.Fatalf("checked %d device nodes, want 3", n)
	}
}
