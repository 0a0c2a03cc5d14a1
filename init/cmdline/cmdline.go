// Package cmdline reads the kernel command line the way the kernel splits
// it: words separated by blanks outside double quotes, quotes dropped.
package cmdline

import "strings"

// Fields splits s into its words.
func Fields(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
			}
			cur.Reset()
			have = false
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// Parse maps each key=value word to its value and each bare word to "";
// when a key repeats, the last one wins, as for most kernel parameters.
func Parse(s string) map[string]string {
	out := map[string]string{}
	for _, w := range Fields(s) {
		k, v, _ := strings.Cut(w, "=")
		out[k] = v
	}
	return out
}
