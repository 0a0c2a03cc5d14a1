package spec

import (
	"errors"
	"strings"
	"testing"
)

func TestParseFullSpec(t *testing.T) {
	s, err := Parse("node.yaml", []byte(`
board: x86_64
formats: [raw]
name: edge
packages: [htop]
cloud_config: node-config.yaml
image:
  size: 4GiB
  slot_size: 768MiB
  compression: xz
`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Board != "x86_64" || len(s.Formats) != 1 || s.Name != "edge" || s.Image.Size != 4<<30 || s.Image.SlotSize != 768<<20 || s.Image.Compression != "xz" {
		t.Fatalf("parsed %+v", s)
	}
	if s.Lock != "node.lock" || s.Debian.Suite != "trixie" || s.Output != "out" {
		t.Fatalf("defaults not filled: %+v", s)
	}
	b, err := s.LoadBoard()
	if err != nil || strings.Contains(b.CmdlineString(), "ballast.nocloud") {
		t.Fatalf("default NoCloud policy on the cmdline: %q %v", b.CmdlineString(), err)
	}
	// image.nocloud goes on the kernel command line, for this spec's board only.
	s.Image.NoCloud = "off"
	if b, err := s.LoadBoard(); err != nil || !strings.HasSuffix(b.CmdlineString(), " ballast.nocloud=off") {
		t.Fatalf("nocloud off: %q %v", b.CmdlineString(), err)
	}
	if b2, _ := Default().LoadBoard(); strings.Contains(b2.CmdlineString(), "nocloud") {
		t.Fatalf("the board's own command line changed: %q", b2.CmdlineString())
	}
}

func TestParseKeepModules(t *testing.T) {
	s, err := Parse("s.yaml", []byte("kernel:\n  keep_modules: [drivers/net/wireless/virtual, net/mac80211]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Kernel.KeepModules, ","); got != "drivers/net/wireless/virtual,net/mac80211" {
		t.Fatalf("keep_modules = %q", got)
	}
}

func TestDefaultSpec(t *testing.T) {
	s := Default()
	if s.Board != "x86_64" || strings.Join(s.Formats, ",") != "raw,iso" || s.Lock != "out/ballast.lock" {
		t.Fatalf("default spec %+v", s)
	}
}

func TestParseErrorsNamePositionAndKey(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"unknown key", "board: x86_64\nfromats: [raw]\n", []string{"s.yaml:2:1: fromats: unknown key \"fromats\" (did you mean \"formats\"?)"}},
		{"nested unknown", "image:\n  sise: 1GiB\n", []string{"s.yaml:2:3: image.sise: unknown key", "did you mean \"size\""}},
		{"wrong type", "formats: raw\n", []string{"s.yaml:1:10: formats: want a list"}},
		{"bad nocloud", "image:\n  nocloud: sometimes\n", []string{"s.yaml:2:12: image.nocloud: \"sometimes\" is not a NoCloud policy (first-boot, always or off)"}},
		{"bad size", "image:\n  size: lots\n", []string{"s.yaml:2:9: image.size: \"lots\" is not a size"}},
		{"bad board", "board: pdp11\n", []string{"s.yaml:1:8: board: unknown board \"pdp11\""}},
		{"bad format", "formats: [raw, floppy]\n", []string{"s.yaml:1:16: formats[1]: unknown format \"floppy\""}},
		{"overlay", "overlays: [nvidia]\n", []string{"s.yaml:1:12: overlays[0]: overlay \"nvidia\" is not available yet"}},
		{"bad package", "packages: [ok-pkg, \"Bad Name\"]\n", []string{"s.yaml:1:20: packages[1]: \"Bad Name\" is not a Debian package name"}},
		{"bad keep_modules", "kernel:\n  keep_modules: [net/wireless, /abs, ../up]\n", []string{"s.yaml:2:32: kernel.keep_modules[1]: \"/abs\" is not a module directory", "kernel.keep_modules[2]"}},
		{"kernel unknown key", "kernel:\n  keep: [x]\n", []string{"s.yaml:2:3: kernel.keep: unknown key"}},
		{"duplicate", "board: x86_64\nboard: x86_64\n", []string{"s.yaml:2:1: board: key given twice"}},
		{"syntax", "board: [\n", []string{"s.yaml: "}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("s.yaml", []byte(c.doc))
			if err == nil {
				t.Fatal("no error")
			}
			if !IsSpecError(err) {
				t.Fatalf("error %v is not an ErrorList", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestAllErrorsReported(t *testing.T) {
	_, err := Parse("s.yaml", []byte("bord: x\nimage: {sise: 1}\n"))
	var l ErrorList
	if !errors.As(err, &l) || len(l) != 2 {
		t.Fatalf("want 2 errors, got %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"512MiB": 512 << 20, "4G": 4 << 30, "1048576": 1 << 20, "2 GiB": 2 << 30, "10KB": 10 << 10} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5G", "12 parsecs", "99999999999999999999T"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"board: x86_64\n", "formats: [raw, iso]\nimage: {size: 4GiB}\n",
		"runtime: {kind: k3s, version: v1.34.3+k3s1, sha256: x}\n", "runtime:\n  images: [testserver, a/b.tar, 3]\n", "image:\n  sise: 1\n", "[", "a: &x [*x]\n", "packages: [a, {b: c}]\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("f.yaml", data)
		if err == nil && s == nil {
			t.Fatal("nil spec without error")
		}
		if err != nil && !IsSpecError(err) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func TestRuntimeDefaultIsBallast(t *testing.T) {
	if k := Default().Runtime.Kind; k != RuntimeBallast {
		t.Fatalf("default runtime kind = %q, want ballast: the default image carries the runtime", k)
	}
	s, err := Parse("s.yaml", []byte("board: rpi4\n"))
	if err != nil || s.Runtime.Kind != RuntimeBallast {
		t.Fatalf("rpi4 spec: %v, kind %q", err, s.Runtime.Kind)
	}
}

func TestParseRuntime(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	cases := []struct {
		name, doc string
		check     func(*Spec) bool
	}{
		{"ballast with images", "runtime:\n  kind: ballast\n  images: [testserver, extra/app.tar]\n",
			func(s *Spec) bool { return s.Runtime.Kind == "ballast" && len(s.Runtime.Images) == 2 }},
		{"k3s download", "runtime:\n  kind: k3s\n  version: v1.34.3+k3s1\n  sha256: " + sum + "\n",
			func(s *Spec) bool { return s.Runtime.Version == "v1.34.3+k3s1" && s.Runtime.SHA256 == sum }},
		{"k3s mirror", "runtime: {kind: k3s, version: v1.34.3+k3s1, sha256: " + sum + ", url: \"https://mirror.example/k3s\"}\n",
			func(s *Spec) bool { return s.Runtime.URL == "https://mirror.example/k3s" }},
		{"k3s file", "runtime: {kind: k3s, file: bin/k3s}\n", func(s *Spec) bool { return s.Runtime.File == "bin/k3s" }},
		{"k3s file with sum and images", "runtime: {kind: k3s, file: bin/k3s, sha256: " + sum + ", images: [coredns]}\n",
			func(s *Spec) bool { return s.Runtime.SHA256 == sum }},
		{"none", "runtime: {kind: none}\n", func(s *Spec) bool { return s.Runtime.Kind == "none" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Parse("s.yaml", []byte(c.doc))
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(s) {
				t.Fatalf("parsed %+v", s.Runtime)
			}
		})
	}
}

func TestParseRuntimeErrors(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"bad kind", "runtime:\n  kind: docker\n", []string{"s.yaml:2:9: runtime.kind: unknown runtime \"docker\" (known: ballast, k3s, none)"}},
		{"download without sha256", "runtime:\n  kind: k3s\n  version: v1.34.3+k3s1\n", []string{"s.yaml:3:12: runtime.version: downloading k3s v1.34.3+k3s1 needs its sha256"}},
		{"k3s without version or file", "runtime:\n  kind: k3s\n", []string{"s.yaml:2:9: runtime.kind: runtime k3s needs a version and sha256"}},
		{"bad sha256", "runtime:\n  kind: k3s\n  version: v1.34.3+k3s1\n  sha256: 1234\n", []string{"s.yaml:4:11: runtime.sha256: \"1234\" is not a SHA-256"}},
		{"bad version", "runtime:\n  kind: k3s\n  version: 1.34\n  sha256: " + sum + "\n", []string{"s.yaml:3:12: runtime.version: \"1.34\" is not a k3s release version"}},
		{"file and url", "runtime:\n  kind: k3s\n  file: k3s\n  url: https://x/k3s\n", []string{"s.yaml:4:8: runtime.url: give either file or url"}},
		{"bad url", "runtime:\n  kind: k3s\n  version: v1.34.3+k3s1\n  sha256: " + sum + "\n  url: ftp://x/k3s\n", []string{"s.yaml:5:8: runtime.url: \"ftp://x/k3s\" is not an http(s) URL"}},
		{"k3s keys on ballast", "runtime:\n  kind: ballast\n  version: v1.34.3+k3s1\n", []string{"s.yaml:3:12: runtime.version: only for runtime kind k3s"}},
		{"k3s keys on the default kind", "runtime:\n  sha256: " + sum + "\n", []string{"s.yaml:2:11: runtime.sha256: only for runtime kind k3s"}},
		{"unknown image", "runtime:\n  images: [testserver, nginx]\n", []string{"s.yaml:2:24: runtime.images[1]: unknown image \"nginx\" (known:", "testserver"}},
		{"compressed archive", "runtime:\n  images: [app.tar.gz]\n", []string{"s.yaml:2:12: runtime.images[0]: \"app.tar.gz\": an image archive must be a .tar"}},
		{"image twice", "runtime:\n  images: [testserver, x/testserver.tar]\n", []string{"s.yaml:2:24: runtime.images[1]: image \"testserver\" given twice"}},
		{"default image again", "runtime:\n  images: [coredns]\n", []string{"s.yaml:2:12: runtime.images[0]: image \"coredns\" is already in every ballast runtime image"}},
		{"archive shadowing a default", "runtime:\n  images: [x/pause.tar]\n", []string{"s.yaml:2:12: runtime.images[0]: \"x/pause.tar\" would replace the default image"}},
		{"images without runtime", "runtime:\n  kind: none\n  images: [testserver]\n", []string{"s.yaml:3:11: runtime.images: runtime kind none runs no pods"}},
		{"unknown runtime key", "runtime:\n  verison: v1\n", []string{"s.yaml:2:3: runtime.verison: unknown key \"verison\" (did you mean \"version\"?)"}},
		{"images not a list", "runtime:\n  images: testserver\n", []string{"s.yaml:2:11: runtime.images: want a list"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("s.yaml", []byte(c.doc))
			if err == nil {
				t.Fatal("no error")
			}
			if !IsSpecError(err) {
				t.Fatalf("error %v is not an ErrorList", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestK3sURL(t *testing.T) {
	if u := K3sURL("v1.34.3+k3s1", "amd64"); u != "https://github.com/k3s-io/k3s/releases/download/v1.34.3+k3s1/k3s" {
		t.Errorf("amd64: %s", u)
	}
	if u := K3sURL("v1.34.3+k3s1", "arm64"); u != "https://github.com/k3s-io/k3s/releases/download/v1.34.3+k3s1/k3s-arm64" {
		t.Errorf("arm64: %s", u)
	}
}
