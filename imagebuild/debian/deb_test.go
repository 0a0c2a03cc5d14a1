package debian

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestArReader(t *testing.T) {
	data := buildAr([]arMember{{"debian-binary", []byte("2.0\n")}, {"odd/", []byte("abc")}, {"even", []byte("de")}})
	ar, err := NewArReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		h, err := ar.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(ar)
		if err != nil || int64(len(b)) != h.Size {
			t.Fatalf("%s: %q, %v", h.Name, b, err)
		}
		got = append(got, h.Name+"="+strings.TrimSpace(string(b)))
	}
	// The odd-sized member's padding byte is skipped; GNU's trailing '/' dropped.
	if want := "debian-binary=2.0 odd=abc even=de"; strings.Join(got, " ") != want {
		t.Fatalf("members %q, want %q", strings.Join(got, " "), want)
	}
	if _, err := NewArReader(strings.NewReader("!<arch>")); err == nil {
		t.Error("short magic accepted")
	}
	trunc := data[:len(data)-3]
	ar, _ = NewArReader(bytes.NewReader(trunc))
	var lastErr error
	for lastErr == nil {
		if _, lastErr = ar.Next(); lastErr == nil {
			_, lastErr = io.ReadAll(ar)
		}
	}
	if lastErr == io.EOF {
		t.Error("truncated archive read without error")
	}
}

func TestWalkDebNeedsAllMembers(t *testing.T) {
	d := buildAr([]arMember{{"debian-binary", []byte("2.0\n")}})
	if _, err := unpackTo(bytes.NewReader(d), t.TempDir()); err == nil || !strings.Contains(err.Error(), "control.tar") {
		t.Fatalf("err = %v, want a missing control.tar", err)
	}
	d = buildAr([]arMember{{"debian-binary", []byte("3.0\n")}})
	if _, err := unpackTo(bytes.NewReader(d), t.TempDir()); err == nil || !strings.Contains(err.Error(), "unsupported format") {
		t.Fatalf("err = %v, want an unsupported format", err)
	}
}

func TestProgressBar(t *testing.T) {
	var out bytes.Buffer
	p := &progress{w: &out, tty: true}
	done := p.start("bash 5.2", 2048)
	p.add(1024)
	done()
	s := out.String()
	if !strings.Contains(s, "\r") || !strings.Contains(s, "1.0 KiB / 2.0 KiB  bash 5.2") || !strings.HasSuffix(s, "\n") {
		t.Fatalf("bar output %q", s)
	}
	// Not a terminal: one quiet line per download, no bar.
	out.Reset()
	p = newProgress(&out)
	p.start("bash 5.2", 2048)()
	if out.String() != "debian: fetching bash 5.2 (2.0 KiB)\n" {
		t.Fatalf("line output %q", out.String())
	}
	newProgress(nil).start("x", 1)() // quiet
}
