package boards

import (
	"errors"
	"strings"
	"testing"
)

func TestEveryBoardLoads(t *testing.T) {
	names := Names()
	if len(names) == 0 {
		t.Fatal("no boards embedded")
	}
	for _, n := range names {
		b, err := Get(n)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if b.Name != n {
			t.Errorf("%s.yaml names itself %q", n, b.Name)
		}
	}
}

func TestX86Board(t *testing.T) {
	b, err := Get("x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if b.Arch != "amd64" || !b.HasBootChain("uefi") || !b.HasBootChain("bios") {
		t.Fatalf("unexpected x86_64 board: %+v", b)
	}
	if !strings.HasSuffix(b.CmdlineString(), "console=ttyS0,115200 panic=10") {
		t.Fatalf("cmdline %q: serial console must be last so it is /dev/console", b.CmdlineString())
	}
}

func TestUnknownBoard(t *testing.T) {
	_, err := Get("pdp11")
	if !errors.Is(err, ErrUnknownBoard) || !strings.Contains(err.Error(), "x86_64") {
		t.Fatalf("err = %v; want ErrUnknownBoard listing known boards", err)
	}
}

func TestParseRejectsUnknownKeysAndBadValues(t *testing.T) {
	_, err := Parse("b.yaml", []byte("name: x\narch: amd64\nkernel_package: k\npartition_scheme: gpt\ncmdlin: [a]\n"))
	if err == nil || !strings.Contains(err.Error(), "cmdlin") || !strings.Contains(err.Error(), "line 5") {
		t.Fatalf("unknown key: err = %v", err)
	}
	_, err = Parse("b.yaml", []byte("name: x\narch: sparc\nkernel_package: k\npartition_scheme: zfs\n"))
	if err == nil || !strings.Contains(err.Error(), "sparc") || !strings.Contains(err.Error(), "zfs") {
		t.Fatalf("bad values: err = %v", err)
	}
}
