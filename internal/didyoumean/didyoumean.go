// Package didyoumean picks, for a misspelt key, the known key it most
// likely meant: the "did you mean" of every strict parser in ballast.
package didyoumean

import "strings"

// editDistance is the optimal-string-alignment distance (Levenshtein plus
// transposition of neighbours): "hostnme" -> "hostname" is 1, and so is
// "hsotname".
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// Three rows suffice: the transposition looks two rows back.
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// Suggest returns the known name closest to key, or "" when none is close
// enough to be a likely typo. "_" and "-" are interchangeable and case is
// ignored when comparing, since cloud-init spells with "_" and k3s with "-".
func Suggest(key string, known []string) string {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "-")) }
	nk := norm(key)
	best, bestD := "", 0
	for _, k := range known {
		d := editDistance(nk, norm(k))
		if best == "" || d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	// One edit for short keys, about a third of the length for long ones.
	limit := max(1, min(len(nk), len(best))/3)
	if bestD > limit {
		return ""
	}
	return best
}
