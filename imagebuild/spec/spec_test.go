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
	for _, s := range []string{"board: x86_64\n", "formats: [raw, iso]\nimage: {size: 4GiB}\n", "image:\n  sise: 1\n", "[", "a: &x [*x]\n", "packages: [a, {b: c}]\n"} {
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
