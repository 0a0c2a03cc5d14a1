package cloudconfig

import (
	"strconv"
	"strings"
)

//go:generate go run -C ../runtime ./config/cloudconfigkeys -o ../cloud-config/k3s_keys.go

// k3sLevel is what ballast's runtime does with a value of a k3s key
// (runtime/config.Level).
type k3sLevel int

const (
	// k3sActed: the runtime reads the value and does what k3s does.
	k3sActed k3sLevel = iota
	// k3sIgnored: nothing reads it and the node works without it: a warning.
	k3sIgnored
	// k3sRefused: nothing reads it, and a node started anyway would not be
	// what the key asks for; k3s refuses to start: an error.
	k3sRefused
)

// k3sKey is one key of k3sKeys (runtime/config.Flag and Support).
type k3sKey struct {
	Name  string
	Kind  byte // 'b' boolean, 'l' list, 's' anything else
	Level k3sLevel
	Msg   string
	// Values classify particular values before Level; a Value ending in
	// "*" matches as a prefix.
	Values []k3sValue
	// FileOnly: Level and Msg apply to the key in a config file, which is
	// what a cloud-config's k3s: block becomes.
	FileOnly bool
}

type k3sValue struct {
	Value string
	Level k3sLevel
	Msg   string
}

// classify says what the runtime does with one value (one item of a list),
// as runtime/config.Support.Classify does, and whether the answer is
// about this value rather than the key as a whole.
func (k k3sKey) classify(value string) (level k3sLevel, msg string, byValue bool) {
	if k.Kind == 'b' {
		b, err := strconv.ParseBool(value)
		if err != nil {
			return k3sActed, "", false
		}
		value = strconv.FormatBool(b)
	}
	for _, v := range k.Values {
		if v.Value == value || strings.HasSuffix(v.Value, "*") && strings.HasPrefix(value, strings.TrimSuffix(v.Value, "*")) {
			return v.Level, v.Msg, true
		}
	}
	if value == "" || k.Kind == 'b' && value == "false" {
		return k3sActed, "", false
	}
	return k.Level, k.Msg, len(k.Values) > 0
}

var k3sKeyIndex = func() map[string]k3sKey {
	m := make(map[string]k3sKey, len(k3sKeys))
	for _, k := range k3sKeys {
		m[k.Name] = k
	}
	return m
}()

// checkK3sSupport reports the values of a known k3s key that the runtime
// ignores (a warning at the key) or refuses (an error, at the value when
// the value is what is refused). at gives the path of the i-th value;
// prefix starts messages about the key as a whole where kp does not name
// it (a k3s_args item).
func checkK3sSupport(c *checker, kp, key, prefix string, values []string, at func(i int) string) {
	k, ok := k3sKeyIndex[key]
	if !ok {
		return
	}
	said := map[string]bool{}
	for i, v := range values {
		level, msg, byValue := k.classify(v)
		if level == k3sActed || said[msg] {
			continue
		}
		said[msg] = true
		switch {
		case level == k3sIgnored:
			c.keyWarnf(kp, "%s%s", prefix, msg)
		case byValue:
			c.errorf(at(i), "%s %q: %s", key, clip(v), msg)
		default:
			c.keyErrorf(kp, "%s%s", prefix, msg)
		}
	}
}
