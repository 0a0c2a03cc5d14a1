package ociimage

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

func sample() Image {
	return Image{
		Ref:          "docker.io/library/example:1.0",
		Architecture: "arm64",
		Config: Config{
			Entrypoint: []string{"/app"},
			Cmd:        []string{"--flag"},
			Env:        []string{"PATH=/usr/bin:/bin"},
			User:       "65532:65532",
			WorkingDir: "/",
			StopSignal: "SIGQUIT",
		},
		Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Entries: []Entry{
			{Path: "app", Type: File, Mode: 0o755, Data: []byte("\x7fELF pretend"),
				Xattrs: map[string]string{XattrCapability: FileCapabilities(10)}},
			{Path: "tmp", Type: Dir, Mode: 0o777 | fs.ModeSticky},
			{Path: "bin/sh", Type: Symlink, Target: "busybox"},
			{Path: "etc/passwd", Type: File, Mode: 0o644, Data: []byte("root:x:0:0::/:/bin/sh\n")},
			{Path: "/home/user/.keep", Type: File, Mode: 0o600, UID: 1000, GID: 1000},
		},
	}
}

func write(t *testing.T, img Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteRead(t *testing.T) {
	img := sample()
	data := write(t, img)
	a, err := Read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if a.Ref != img.Ref || a.Tag != "1.0" {
		t.Errorf("annotations: ref %q tag %q", a.Ref, a.Tag)
	}
	if a.Config.Architecture != "arm64" || a.Config.OS != "linux" {
		t.Errorf("platform %s/%s", a.Config.OS, a.Config.Architecture)
	}
	if p := a.Index.Manifests[0].Platform; p == nil || p.Architecture != "arm64" {
		t.Errorf("index platform %+v", p)
	}
	c := a.Config.Config
	if !reflect.DeepEqual(c.Entrypoint, img.Config.Entrypoint) || !reflect.DeepEqual(c.Cmd, img.Config.Cmd) ||
		!reflect.DeepEqual(c.Env, img.Config.Env) || c.User != img.Config.User || c.WorkingDir != "/" || c.StopSignal != "SIGQUIT" {
		t.Errorf("config %+v", c)
	}
	if a.Config.Created == nil || !a.Config.Created.Equal(img.Created) {
		t.Errorf("created %v", a.Config.Created)
	}
	if len(a.Manifest.Layers) != 1 || a.Manifest.Layers[0].MediaType != v1.MediaTypeImageLayerGzip {
		t.Fatalf("layers %+v", a.Manifest.Layers)
	}

	var paths []string
	for _, f := range a.Files {
		paths = append(paths, f.Path)
	}
	want := []string{"app", "bin", "bin/sh", "etc", "etc/passwd", "home", "home/user", "home/user/.keep", "tmp"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("layer paths %q, want %q", paths, want)
	}
	app, _ := a.File("/app")
	if app.Type != File || app.Mode != 0o755 || string(app.Data) != "\x7fELF pretend" ||
		app.Xattrs[XattrCapability] != FileCapabilities(10) {
		t.Errorf("app %+v", app)
	}
	if tmp, _ := a.File("tmp"); tmp.Type != Dir || tmp.Mode != 0o777|fs.ModeSticky {
		t.Errorf("tmp %+v, mode %v", tmp, tmp.Mode)
	}
	if sh, _ := a.File("bin/sh"); sh.Type != Symlink || sh.Target != "busybox" {
		t.Errorf("bin/sh %+v", sh)
	}
	if bin, _ := a.File("bin"); bin.Type != Dir || bin.Mode != 0o755 || bin.UID != 0 {
		t.Errorf("implicit parent bin %+v", bin)
	}
	if k, _ := a.File("home/user/.keep"); k.UID != 1000 || k.GID != 1000 || k.Mode != 0o600 {
		t.Errorf(".keep %+v", k)
	}
}

// TestZstdLayer writes the layer with zstd: Read gives back what the gzip
// archive holds, and the zstd and tar commands, independently, unpack the
// blob to the same paths.
func TestZstdLayer(t *testing.T) {
	img := sample()
	img.Compression = Zstd
	data := write(t, img)
	if !bytes.Equal(data, write(t, img)) {
		t.Fatal("two writes of the same zstd image differ")
	}
	a, err := Read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Manifest.Layers) != 1 || a.Manifest.Layers[0].MediaType != v1.MediaTypeImageLayerZstd {
		t.Fatalf("layers %+v", a.Manifest.Layers)
	}
	g, err := Read(bytes.NewReader(write(t, sample())))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Files, g.Files) {
		t.Errorf("zstd layer files %+v\ngzip layer files %+v", a.Files, g.Files)
	}
	// The diff ID is the uncompressed tar's, the same whatever the compression.
	if !reflect.DeepEqual(a.Config.RootFS, g.Config.RootFS) {
		t.Errorf("rootfs %+v, gzip %+v", a.Config.RootFS, g.Config.RootFS)
	}

	zstdCmd, err := exec.LookPath("zstd")
	if err != nil {
		t.Fatal("zstd not found: install it with `apt-get install zstd` (this test checks the layer with it)")
	}
	blob := filepath.Join(t.TempDir(), "layer.tar.zst")
	if err := os.WriteFile(blob, a.Blobs[a.Manifest.Layers[0].Digest], 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", `"$0" -dc "$1" | tar -t`, zstdCmd, blob).CombinedOutput()
	if err != nil {
		t.Fatalf("zstd -dc | tar -t: %v\n%s", err, out)
	}
	want := "app\nbin/\nbin/sh\netc/\netc/passwd\nhome/\nhome/user/\nhome/user/.keep\ntmp/\n"
	if string(out) != want {
		t.Errorf("zstd -dc | tar -t:\n%s\nwant\n%s", out, want)
	}
}

// TestDescriptors checks every descriptor against the raw archive
// independently of Read's own checks: the blob named by each digest exists
// and has the descriptor's size.
func TestDescriptors(t *testing.T) {
	a, err := Read(bytes.NewReader(write(t, sample())))
	if err != nil {
		t.Fatal(err)
	}
	descs := append([]v1.Descriptor{a.Index.Manifests[0], a.Manifest.Config}, a.Manifest.Layers...)
	for _, d := range descs {
		b, ok := a.Blobs[d.Digest]
		if !ok {
			t.Errorf("%s %s: no blob", d.MediaType, d.Digest)
			continue
		}
		if int64(len(b)) != d.Size {
			t.Errorf("%s: %d bytes, descriptor %d", d.Digest, len(b), d.Size)
		}
		if d.Digest.Algorithm().FromBytes(b) != d.Digest {
			t.Errorf("%s: content digest differs", d.Digest)
		}
	}
	if len(a.Blobs) != 3 {
		t.Errorf("%d blobs, want 3 (manifest, config, layer)", len(a.Blobs))
	}
	var m map[string]any
	if err := json.Unmarshal(a.Blobs[a.Index.Manifests[0].Digest], &m); err != nil || m["schemaVersion"] != 2.0 {
		t.Errorf("manifest JSON %v: %v", m, err)
	}
}

func TestDeterministic(t *testing.T) {
	a, b := write(t, sample()), write(t, sample())
	if !bytes.Equal(a, b) {
		t.Fatal("two writes of the same image differ")
	}
	// Entry order in the input does not matter.
	img := sample()
	for i, j := 0, len(img.Entries)-1; i < j; i, j = i+1, j-1 {
		img.Entries[i], img.Entries[j] = img.Entries[j], img.Entries[i]
	}
	if !bytes.Equal(a, write(t, img)) {
		t.Fatal("reordering entries changed the archive")
	}
	img.Entries[0].Data = []byte("other")
	if bytes.Equal(a, write(t, img)) {
		t.Fatal("changing a file did not change the archive")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Image)
		want string
	}{
		{"no tag", func(i *Image) { i.Ref = "docker.io/library/example" }, "no tag"},
		{"port not tag", func(i *Image) { i.Ref = "localhost:5000/example" }, "no tag"},
		{"digest", func(i *Image) { i.Ref = "example@sha256:00" }, "digest"},
		{"no arch", func(i *Image) { i.Architecture = "" }, "architecture"},
		{"unclean", func(i *Image) { i.Entries[0].Path = "a/../app" }, "not clean"},
		{"root", func(i *Image) { i.Entries[0].Path = "/" }, "root"},
		{"twice", func(i *Image) { i.Entries[1].Path = "/app" }, "twice"},
		{"symlink target", func(i *Image) { i.Entries[2].Target = "" }, "no target"},
		{"inside file", func(i *Image) { i.Entries[1].Path = "app/x" }, "inside"},
		{"compression", func(i *Image) { i.Compression = "xz" }, "compression"},
	} {
		img := sample()
		tc.mod(&img)
		err := Write(&bytes.Buffer{}, img)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestReadRejectsTampering(t *testing.T) {
	data := write(t, sample())
	a, err := Read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte inside the config blob: its name no longer matches.
	cfg := a.Blobs[a.Manifest.Config.Digest]
	i := bytes.Index(data, cfg)
	if i < 0 {
		t.Fatal("config blob not found in the archive bytes")
	}
	bad := bytes.Clone(data)
	bad[i+1] ^= 1
	if _, err := Read(bytes.NewReader(bad)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "digest") {
		t.Errorf("tampered config: %v", err)
	}
	if _, err := Read(bytes.NewReader(data[:len(data)/2])); err == nil {
		t.Error("truncated archive read without error")
	}
}

func TestWriteFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "example.tar")
	if err := WriteFile(name, sample()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, write(t, sample())) {
		t.Error("WriteFile and Write differ")
	}
	entries, _ := os.ReadDir(filepath.Dir(name))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

// TestUmoci has an independent implementation read the archive: umoci
// unpacks the layout's image into a runtime bundle.
func TestUmoci(t *testing.T) {
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Fatal("umoci not found: install it with `apt-get install umoci` (this test validates the layout with it)")
	}
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	if err := os.Mkdir(layout, 0o755); err != nil {
		t.Fatal(err)
	}
	tarFile := filepath.Join(dir, "image.tar")
	if err := WriteFile(tarFile, sample()); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", tarFile, "-C", layout).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	bundle := filepath.Join(dir, "bundle")
	cmd := exec.Command(umoci, "unpack", "--rootless", "--image", layout+":1.0", bundle)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(bundle, "rootfs", "app"))
	if err != nil || string(got) != "\x7fELF pretend" {
		t.Errorf("rootfs/app: %q %v", got, err)
	}
	capBuf := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(bundle, "rootfs", "app"), XattrCapability, capBuf); err != nil || string(capBuf[:n]) != FileCapabilities(10) {
		t.Errorf("rootfs/app capability %x %v, want %x", capBuf[:max(n, 0)], err, FileCapabilities(10))
	}
	if l, err := os.Readlink(filepath.Join(bundle, "rootfs", "bin", "sh")); err != nil || l != "busybox" {
		t.Errorf("rootfs/bin/sh -> %q %v", l, err)
	}
	var spec struct {
		Process struct {
			Args []string `json:"args"`
			User struct {
				UID int `json:"uid"`
			} `json:"user"`
		} `json:"process"`
	}
	cfg, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err == nil {
		err = json.Unmarshal(cfg, &spec)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(spec.Process.Args, []string{"/app", "--flag"}) {
		t.Errorf("runtime args %q", spec.Process.Args)
	}
}

// TestFileCapabilities compares with what setcap(8) writes.
func TestFileCapabilities(t *testing.T) {
	setcap, err := exec.LookPath("setcap")
	if err != nil {
		t.Fatal("setcap not found: install libcap2-bin")
	}
	for _, tc := range []struct {
		text string
		caps []uint
	}{
		{"cap_net_bind_service=+ep", []uint{10}},
		{"cap_net_bind_service,cap_net_raw=+ep", []uint{10, 13}},
		{"cap_checkpoint_restore=+ep", []uint{40}},
	} {
		f := filepath.Join(t.TempDir(), "bin")
		if err := os.WriteFile(f, nil, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(setcap, tc.text, f).CombinedOutput(); err != nil {
			t.Fatalf("setcap %s: %v\n%s", tc.text, err, out)
		}
		buf := make([]byte, 64)
		n, err := unix.Getxattr(f, XattrCapability, buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := FileCapabilities(tc.caps...); got != string(buf[:n]) {
			t.Errorf("FileCapabilities(%v) = %x, setcap %s wrote %x", tc.caps, got, tc.text, buf[:n])
		}
	}
}

func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	if err := Write(&buf, sample()); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Read(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if len(a.Index.Manifests) != 1 {
			t.Fatalf("accepted %d manifests", len(a.Index.Manifests))
		}
	})
}
