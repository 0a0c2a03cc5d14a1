package cmdline

import (
	"reflect"
	"testing"
)

func TestFieldsAndParse(t *testing.T) {
	s := "BOOT_IMAGE=/ballast/vmlinuz  console=ttyS0,115200\tquiet ballast.config_url=\"http://h/a b\" x=1 x=2\n"
	want := []string{"BOOT_IMAGE=/ballast/vmlinuz", "console=ttyS0,115200", "quiet", "ballast.config_url=http://h/a b", "x=1", "x=2"}
	if got := Fields(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("Fields = %q", got)
	}
	m := Parse(s)
	if m["ballast.config_url"] != "http://h/a b" || m["quiet"] != "" || m["x"] != "2" || len(m) != 5 {
		t.Fatalf("Parse = %q", m)
	}
	if _, ok := m["quiet"]; !ok {
		t.Fatal("bare word missing")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`a=b "c d"=e f="g h" "unterminated`)
	f.Fuzz(func(t *testing.T, s string) {
		for _, w := range Fields(s) {
			if w == "" && len(s) > 0 && s[0] != '"' {
				// An empty word only comes from a pair of quotes.
				continue
			}
		}
		Parse(s)
	})
}
