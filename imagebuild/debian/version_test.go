package debian

import "testing"

func TestCompareVersions(t *testing.T) {
	// Expected orderings from dpkg's own test suite and Debian policy 5.6.12.
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0},
		{"1.0", "1.1", -1},
		{"1.10", "1.9", 1},
		{"1.0", "1.0-0", 0}, // an absent revision equals "0"
		{"1.0-1", "1.0", 1},
		{"1:1.0", "2.0", 1}, // epoch wins
		{"0:1.0", "1.0", 0},
		{"1.0~rc1", "1.0", -1}, // tilde sorts before the end
		{"1.0~rc1", "1.0~rc2", -1},
		{"1.0~~", "1.0~", -1},
		{"1.0~~a", "1.0~~", 1},
		{"1.0~", "1.0", -1},
		{"1.0a", "1.0", 1},   // letters after the end
		{"1.0a", "1.0+", -1}, // letters before other symbols
		{"1.0+", "1.0.", -1},
		{"1.0-1", "1.0-1.1", -1},
		{"1.0-1~bpo1", "1.0-1", -1},
		{"2.36-9+deb12u4", "2.36-9+deb12u10", -1},
		{"007", "7", 0}, // leading zeros
		{"1.002", "1.2", 0},
		{"1a", "1b", -1},
		{"1.2.3-1ubuntu1", "1.2.3-1", 1},
		{"5.2.37-2", "5.2.37-2+b1", -1},
		{"1:2.41-12", "2.41-12", 1},
		{"9", "10", -1},
		{"1.0-a", "1.0-~", 1},
		{"a", "", 1},
		{"", "", 0},
	}
	for _, tt := range tests {
		if got := CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareVersions(tt.b, tt.a); got != -tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	good := map[string]Version{
		"1.0":              {Upstream: "1.0"},
		"2:1.0-3":          {Epoch: 2, Upstream: "1.0", Revision: "3"},
		"1.0-2-3":          {Upstream: "1.0-2", Revision: "3"},
		"1:2.3:4-5~bpo":    {Epoch: 1, Upstream: "2.3:4", Revision: "5~bpo"},
		"2.41-12+deb13u1":  {Upstream: "2.41", Revision: "12+deb13u1"},
		"0.0~git2024+ds-1": {Upstream: "0.0~git2024+ds", Revision: "1"},
	}
	for s, want := range good {
		got, err := ParseVersion(s)
		if err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %+v, %v; want %+v", s, got, err, want)
		}
		if got.String() != s && "0:"+got.String() != s {
			t.Errorf("ParseVersion(%q).String() = %q", s, got.String())
		}
	}
	for _, s := range []string{"", "a1.0", ":1.0", "x:1.0", "1.0-", "1.0 2", "1.0-a_b", "1:"} {
		if _, err := ParseVersion(s); err == nil {
			t.Errorf("ParseVersion(%q) succeeded, want an error", s)
		}
	}
}

func FuzzVersionCompare(f *testing.F) {
	for _, s := range [][3]string{
		{"1.0", "1.0~rc1", "1:0.9"},
		{"2.36-9+deb12u4", "2.36-9+deb12u10", "2.36-9"},
		{"1.0a", "1.0+", "1.0."},
		{"007", "7", "1.2.3"},
		{"", "~", "~~"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		ab, ba := CompareVersions(a, b), CompareVersions(b, a)
		if ab != -ba {
			t.Fatalf("not antisymmetric: cmp(%q,%q)=%d, cmp(%q,%q)=%d", a, b, ab, b, a, ba)
		}
		if CompareVersions(a, a) != 0 {
			t.Fatalf("cmp(%q,%q) != 0", a, a)
		}
		bc, ac := CompareVersions(b, c), CompareVersions(a, c)
		if ab <= 0 && bc <= 0 && ac > 0 {
			t.Fatalf("not transitive: %q <= %q <= %q but %q > %q", a, b, c, a, c)
		}
		if v, err := ParseVersion(a); err == nil {
			if CompareVersions(v.String(), a) != 0 {
				t.Fatalf("ParseVersion(%q).String() = %q compares unequal", a, v.String())
			}
		}
	})
}
