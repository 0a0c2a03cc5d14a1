package kmod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModaliases(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		p = filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pci0000:00/0000:00:03.0/modalias", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n")
	write("pci0000:00/0000:00:03.0/virtio0/modalias", "virtio:d00000001v00001AF4\n")
	write("pci0000:00/0000:00:04.0/modalias", "virtio:d00000001v00001AF4\n") // duplicate
	write("platform/serial8250/modalias", "\n")                              // empty
	write("platform/serial8250/uevent", "DRIVER=serial8250\n")
	got, err := Modaliases(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00,virtio:d00000001v00001AF4"
	if strings.Join(got, ",") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}
