package debian

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a parsed Debian package version, [epoch:]upstream[-revision].
type Version struct {
	Epoch    uint64
	Upstream string
	Revision string
}

func (v Version) String() string {
	s := v.Upstream
	if v.Epoch != 0 {
		s = strconv.FormatUint(v.Epoch, 10) + ":" + s
	}
	if v.Revision != "" {
		s += "-" + v.Revision
	}
	return s
}

// ParseVersion parses s strictly, the way dpkg validates a version field.
func ParseVersion(s string) (Version, error) {
	v := splitVersion(s)
	if s == "" {
		return v, fmt.Errorf("version is empty")
	}
	if i := strings.IndexByte(s, ':'); i >= 0 {
		e := s[:i]
		if e == "" {
			return v, fmt.Errorf("version %q: empty epoch", s)
		}
		n, err := strconv.ParseUint(e, 10, 32)
		if err != nil {
			return v, fmt.Errorf("version %q: epoch %q is not a number", s, e)
		}
		v.Epoch = n
	}
	if v.Upstream == "" {
		return v, fmt.Errorf("version %q: empty upstream version", s)
	}
	if !isDigit(v.Upstream[0]) {
		return v, fmt.Errorf("version %q: upstream version must start with a digit", s)
	}
	for i := 0; i < len(v.Upstream); i++ {
		if c := v.Upstream[i]; !isAlnum(c) && !strings.ContainsRune(".+-~:", rune(c)) {
			return v, fmt.Errorf("version %q: invalid character %q in upstream version", s, c)
		}
	}
	if strings.HasSuffix(s, "-") {
		return v, fmt.Errorf("version %q: empty revision", s)
	}
	for i := 0; i < len(v.Revision); i++ {
		if c := v.Revision[i]; !isAlnum(c) && !strings.ContainsRune(".+~", rune(c)) {
			return v, fmt.Errorf("version %q: invalid character %q in revision", s, c)
		}
	}
	return v, nil
}

// splitVersion splits without validating: the epoch is everything before the
// first colon when that is a number, the revision everything after the last
// hyphen.
func splitVersion(s string) Version {
	var v Version
	if i := strings.IndexByte(s, ':'); i >= 0 {
		if n, err := strconv.ParseUint(s[:i], 10, 64); err == nil {
			v.Epoch = n
			s = s[i+1:]
		}
	}
	if i := strings.LastIndexByte(s, '-'); i >= 0 {
		v.Revision = s[i+1:]
		s = s[:i]
	}
	v.Upstream = s
	return v
}

// Compare returns -1, 0 or +1 as v sorts before, equal to or after w.
func (v Version) Compare(w Version) int {
	switch {
	case v.Epoch < w.Epoch:
		return -1
	case v.Epoch > w.Epoch:
		return 1
	}
	if c := compareFragment(v.Upstream, w.Upstream); c != 0 {
		return c
	}
	return compareFragment(v.Revision, w.Revision)
}

// CompareVersions compares two version strings with dpkg's ordering. It does
// not validate them; archive data that fails ParseVersion still orders
// consistently.
func CompareVersions(a, b string) int {
	return splitVersion(a).Compare(splitVersion(b))
}

// order is dpkg's weight of a non-digit character: '~' sorts before
// everything, even the end of the string; letters sort before other symbols.
func order(c byte) int {
	switch {
	case c == '~':
		return -1
	case isDigit(c):
		return 0
	case isAlpha(c):
		return int(c)
	default:
		return int(c) + 256
	}
}

// compareFragment is dpkg's verrevcmp: alternate non-digit runs compared by
// order() and digit runs compared numerically.
func compareFragment(a, b string) int {
	i, j := 0, 0
	at := func(s string, k int) (byte, bool) {
		if k < len(s) {
			return s[k], true
		}
		return 0, false
	}
	for i < len(a) || j < len(b) {
		for {
			ca, oka := at(a, i)
			cb, okb := at(b, j)
			if !(oka && !isDigit(ca)) && !(okb && !isDigit(cb)) {
				break
			}
			oa, ob := 0, 0
			if oka {
				oa = order(ca)
			}
			if okb {
				ob = order(cb)
			}
			if oa != ob {
				return sign(oa - ob)
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		firstDiff := 0
		for i < len(a) && j < len(b) && isDigit(a[i]) && isDigit(b[j]) {
			if firstDiff == 0 {
				firstDiff = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if firstDiff != 0 {
			return sign(firstDiff)
		}
	}
	return 0
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }
