package didyoumean

import "testing"

func TestEditDistanceAndSuggest(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		d    int
	}{
		{"hostnme", "hostname", 1},
		{"hsotname", "hostname", 1},
		{"", "abc", 3},
		{"kitten", "sitting", 3},
		{"ca", "abc", 3}, // optimal string alignment, not full Damerau
	} {
		if got := editDistance(tt.a, tt.b); got != tt.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.d)
		}
	}
	known := []string{"hostname", "users", "runcmd", "bootcmd", "write_files"}
	for in, want := range map[string]string{
		"hostnme":     "hostname",
		"user":        "users",
		"runcmds":     "runcmd",
		"write-files": "write_files",
		"WRITE_FILES": "write_files",
		"zzz":         "",
		"u":           "",
	} {
		if got := Suggest(in, known); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}
