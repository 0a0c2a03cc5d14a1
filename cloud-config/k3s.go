package cloudconfig

import (
	"bytes"
	"fmt"
	"github.com/robfig/cron/v3"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// k3sFlags are the long flag names of `k3s server` and `k3s agent`, which
// are the keys of /etc/rancher/k3s/config.yaml, with their kind: 'b' a
// boolean, 'l' a list (repeatable flag), 's' a string. They come from the
// runtime's flag table (k3s_keys.go). k3s only warns about keys it does not
// know, so unknown keys are warnings here too.
var k3sFlags = func() map[string]byte {
	m := make(map[string]byte, len(k3sKeys))
	for _, k := range k3sKeys {
		m[k.Name] = k.Kind
	}
	return m
}()

// k3sFlagAliases are the one-letter flags of k3s, which k3OS configs use.
var k3sFlagAliases = k3sKeyAliases

var k3sFlagNames = func() []string {
	names := make([]string, 0, len(k3sFlags))
	for k := range k3sFlags {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}()

// checkK3s validates what can be known before k3s starts: key names (a
// warning, as in k3s), value shapes, and node labels and taints, which
// make the kubelet refuse to start.
func checkK3s(c *checker, p string, m map[string]any) {
	for _, key := range sortedKeys(m) {
		kp := joinKey(p, key)
		v := m[key]
		kind, known := k3sFlags[key]
		switch {
		case strings.HasPrefix(key, "-"):
			c.keyWarnf(kp, "k3s config keys are written without dashes: %q; k3s ignores this one", strings.TrimLeft(key, "-"))
		case !known:
			c.keyWarnf(kp, "%s; k3s ignores it", unknownKeyMessage("k3s option", key, k3sFlagNames))
		}
		values, ok := k3sValueStrings(v)
		if !ok {
			c.errorf(kp, "a k3s option's value is a string, number, boolean, or a list of those; got %s", goDescribe(v))
			continue
		}
		if v == nil {
			c.errorf(kp, "no value: give one, or remove the key")
			continue
		}
		if len(values) == 0 {
			continue // an empty list: nothing for k3s to see
		}
		if kind == 'b' {
			if _, isList := v.([]any); isList {
				c.errorf(kp, "%s is a true/false option, not a list", key)
				continue
			} else if _, err := strconv.ParseBool(values[0]); err != nil {
				c.errorf(kp, "%s is a true/false option; %q would stop k3s from starting", key, clip(values[0]))
				continue
			}
		}
		checkK3sSupport(c, kp, key, "", values, func(i int) string { return listItemPath(kp, v, i) })
		switch key {
		case "node-label":
			for i, s := range values {
				for _, label := range strings.Split(s, ",") {
					if err := checkNodeLabel(label); err != nil {
						c.errorf(listItemPath(kp, v, i), "%v", err)
					}
				}
			}
		case "node-taint":
			for i, s := range values {
				if err := checkNodeTaint(s); err != nil {
					c.errorf(listItemPath(kp, v, i), "%v", err)
				}
			}
		case "server":
			if err := checkServerURL(values[len(values)-1]); err != nil {
				c.errorf(kp, "%v", err)
			}
		case "token", "agent-token":
			if err := checkToken(values[len(values)-1]); err != nil {
				c.errorf(kp, "%v", err)
			}
		case "etcd-snapshot-schedule-cron":
			if _, err := cron.ParseStandard(values[len(values)-1]); err != nil {
				c.errorf(kp, "not a cron schedule (five fields, e.g. \"0 */12 * * *\"): %v", err)
			}
		case "etcd-arg":
			for i, s := range values {
				if k, _, ok := strings.Cut(strings.TrimLeft(s, "-"), "="); !ok || k == "" {
					c.errorf(listItemPath(kp, v, i), "etcd-arg %q: want key=value (an etcd config key, e.g. quota-backend-bytes=8589934592)", clip(s))
				}
			}
		}
	}
	checkK3sCombinations(c, p, m)
}

// checkK3sCombinations refuses options that k3s refuses together.
func checkK3sCombinations(c *checker, p string, m map[string]any) {
	set := func(key string) bool {
		values, ok := k3sValueStrings(m[key])
		if !ok || len(values) == 0 {
			return false
		}
		if k3sFlags[key] == 'b' {
			b, err := strconv.ParseBool(values[len(values)-1])
			return err == nil && b
		}
		return values[len(values)-1] != ""
	}
	if set("cluster-init") && set("datastore-endpoint") {
		c.errorf(joinKey(p, "cluster-init"), "cluster-init (embedded etcd) cannot be used with datastore-endpoint (an external datastore): k3s refuses to start; remove one")
	}
	if set("cluster-reset-restore-path") && !set("cluster-reset") {
		c.errorf(joinKey(p, "cluster-reset-restore-path"), "cluster-reset-restore-path needs cluster-reset: true (restoring a snapshot resets the cluster to this one server)")
	}
	if set("cluster-init") && set("server") {
		c.keyWarnf(joinKey(p, "cluster-init"), "cluster-init is ignored on a server that joins another with server: (it joins that server's etcd cluster)")
	}
}

// checkServerURL: an agent (or joining server) needs the https URL of a
// server's supervisor port; k3s fails at start on anything else.
func checkServerURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case !strings.HasPrefix(s, "https://"):
		return fmt.Errorf("server %q: want https://HOST:6443 (the server's https-listen-port)", clip(s))
	case err != nil:
		return fmt.Errorf("server %q is not a URL: %v", clip(s), err)
	case u.Hostname() == "":
		return fmt.Errorf("server %q has no host: want https://HOST:6443", clip(s))
	case u.Path != "" && u.Path != "/":
		return fmt.Errorf("server %q: give the server's address only, without a path", clip(s))
	}
	return nil
}

var (
	k10Hash        = regexp.MustCompile(`^[0-9a-f]{64}$`)
	bootstrapToken = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
)

// checkToken checks a join token's shape as k3s parses it: a K10 token
// (K10<sha256 hex>::<user>:<password> or K10<sha256 hex>::<bootstrap
// token>) or a bare password. The value is never printed.
func checkToken(s string) error {
	s = strings.TrimSpace(s)
	if s == "" {
		return fmt.Errorf("the token is empty")
	}
	rest, ok := strings.CutPrefix(s, "K10")
	if !ok {
		return nil // a bare password
	}
	hash, creds, ok := strings.Cut(rest, "::")
	if !ok || !k10Hash.MatchString(hash) {
		return fmt.Errorf("the token starts with K10 but is not K10<64 lower-case hex digits>::<credentials> (copy it whole from the server's /var/lib/rancher/k3s/server/node-token)")
	}
	if bootstrapToken.MatchString(creds) {
		return nil
	}
	if user, pass, ok := strings.Cut(creds, ":"); !ok || user == "" || pass == "" {
		return fmt.Errorf("the token's credentials after \"::\" are not <user>:<password> or a bootstrap token (copy it whole from the server's /var/lib/rancher/k3s/server/node-token)")
	}
	return nil
}

func listItemPath(p string, v any, i int) string {
	if _, ok := v.([]any); ok {
		return joinIndex(p, i)
	}
	return p
}

// k3sValueStrings gives the text k3s sees for each value of an option.
func k3sValueStrings(v any) ([]string, bool) {
	switch v := v.(type) {
	case nil:
		return nil, true
	case []any:
		out := make([]string, 0, len(v))
		for _, item := range v {
			switch item.(type) {
			case []any, map[string]any, nil:
				return nil, false
			}
			out = append(out, fmt.Sprint(item))
		}
		return out, true
	case map[string]any:
		return nil, false
	}
	return []string{fmt.Sprint(v)}, true
}

func goDescribe(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "a map"
	case []any:
		return "a list that holds lists, maps or nulls"
	default:
		return fmt.Sprintf("%T", v)
	}
}

var (
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelName    = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
)

// kubeletLabels are the kubernetes.io labels a kubelet may set on its own
// node; beyond these, only the kubelet.kubernetes.io and node.kubernetes.io
// namespaces (and their subdomains) are allowed. The kubelet exits at start
// on any other kubernetes.io or k8s.io label in --node-labels.
var kubeletLabels = map[string]bool{
	"kubernetes.io/hostname":                   true,
	"kubernetes.io/arch":                       true,
	"kubernetes.io/os":                         true,
	"beta.kubernetes.io/arch":                  true,
	"beta.kubernetes.io/os":                    true,
	"beta.kubernetes.io/instance-type":         true,
	"node.kubernetes.io/instance-type":         true,
	"failure-domain.beta.kubernetes.io/region": true,
	"failure-domain.beta.kubernetes.io/zone":   true,
	"topology.kubernetes.io/region":            true,
	"topology.kubernetes.io/zone":              true,
}

func underDomain(ns, domain string) bool {
	return ns == domain || strings.HasSuffix(ns, "."+domain)
}

// checkLabelKey checks a Kubernetes qualified name: [prefix/]name.
func checkLabelKey(key string) error {
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && (len(prefix) > 253 || !dnsSubdomain.MatchString(prefix)) {
		return fmt.Errorf("%q: the prefix before / must be a lower-case DNS name", clip(key))
	}
	if len(name) > 63 || !labelName.MatchString(name) {
		return fmt.Errorf("%q: the name must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", clip(key))
	}
	return nil
}

func checkLabelValue(key, value string) error {
	if value != "" && (len(value) > 63 || !labelName.MatchString(value)) {
		return fmt.Errorf("%q: the value %q must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", clip(key), clip(value))
	}
	return nil
}

// checkNodeLabel checks one "key=value" node label as the kubelet will.
func checkNodeLabel(label string) error {
	key, value, ok := strings.Cut(label, "=")
	if !ok {
		return fmt.Errorf("node label %q must be key=value", clip(label))
	}
	if err := checkLabelKey(key); err != nil {
		return fmt.Errorf("node label %w", err)
	}
	if err := checkLabelValue(key, value); err != nil {
		return fmt.Errorf("node label %w", err)
	}
	ns, _, hasNS := strings.Cut(key, "/")
	if !hasNS || kubeletLabels[key] {
		return nil
	}
	restricted := underDomain(ns, "kubernetes.io") || underDomain(ns, "k8s.io")
	allowed := underDomain(ns, "kubelet.kubernetes.io") || underDomain(ns, "node.kubernetes.io")
	if restricted && !allowed {
		msg := fmt.Sprintf("node label %q: the kubelet refuses labels under kubernetes.io and k8s.io other than node.kubernetes.io/*, kubelet.kubernetes.io/* and a few well-known ones, so k3s would not start", clip(key))
		if strings.HasPrefix(key, "node-role.kubernetes.io/") {
			msg += "; set roles with kubectl label after the node joined, or use a label of your own (e.g. example.com/role)"
		}
		return fmt.Errorf("%s", msg)
	}
	return nil
}

// checkNodeTaint checks one "key[=value]:Effect" taint. The kubelet puts
// no namespace limit on the taints it registers with (node-role taints are
// common), so only the syntax, which it does check, is checked.
func checkNodeTaint(taint string) error {
	i := strings.LastIndex(taint, ":")
	if i < 0 {
		return fmt.Errorf("node taint %q must be key=value:Effect or key:Effect", clip(taint))
	}
	kv, effect := taint[:i], taint[i+1:]
	switch effect {
	case "NoSchedule", "PreferNoSchedule", "NoExecute":
	default:
		return fmt.Errorf("node taint %q: effect %q is not NoSchedule, PreferNoSchedule or NoExecute", clip(taint), clip(effect))
	}
	key, value, _ := strings.Cut(kv, "=")
	if err := checkLabelKey(key); err != nil {
		return fmt.Errorf("node taint %w", err)
	}
	if err := checkLabelValue(key, value); err != nil {
		return fmt.Errorf("node taint %w", err)
	}
	return nil
}

// argProblem is a k3s_args entry that could not be understood.
type argProblem struct {
	index int
	msg   string
}

// parseK3sArgs turns a k3OS k3s_args list into k3s config keys. The list
// may start with the subcommand ("server" or "agent"); then come
// "--flag=value", "--flag value" and "--flag" (true). Flags that k3s
// repeats (node-label, disable...) and any flag given twice become lists.
func parseK3sArgs(args []string) (role string, keys map[string]any, problems []argProblem) {
	role, keys, _, problems = parseK3sArgsAt(args)
	return role, keys, problems
}

// parseK3sArgsAt is parseK3sArgs also saying, per key, which argument each
// value came from (for error positions).
func parseK3sArgsAt(args []string) (role string, keys map[string]any, at map[string][]int, problems []argProblem) {
	keys = map[string]any{}
	at = map[string][]int{}
	var i int
	add := func(name string, v any) {
		at[name] = append(at[name], i)
		old, seen := keys[name]
		switch {
		case k3sFlags[name] == 'l' && !seen:
			keys[name] = []any{v}
		case !seen:
			keys[name] = v
		default:
			list, isList := old.([]any)
			if !isList {
				list = []any{old}
			}
			keys[name] = append(list, v)
		}
	}
	for ; i < len(args); i++ {
		arg := args[i]
		if i == 0 && (arg == "server" || arg == "agent") {
			role = arg
			continue
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
			problems = append(problems, argProblem{i, fmt.Sprintf("unexpected argument %q: k3s_args are flags (--name=value or --name value), optionally after server or agent", clip(arg))})
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-"), "=")
		if long, ok := k3sFlagAliases[name]; ok {
			name = long
		}
		if name == "" {
			problems = append(problems, argProblem{i, fmt.Sprintf("%q is not a flag", clip(arg))})
			continue
		}
		kind, known := k3sFlags[name]
		switch {
		case kind == 'b' && hasValue:
			b, err := strconv.ParseBool(value)
			if err != nil {
				problems = append(problems, argProblem{i, fmt.Sprintf("--%s takes true or false, got %q", name, clip(value))})
				continue
			}
			add(name, b)
		case kind == 'b':
			add(name, true)
		case hasValue:
			add(name, value)
		case i+1 < len(args) && !strings.HasPrefix(args[i+1], "-"):
			i++
			add(name, args[i])
		case known:
			problems = append(problems, argProblem{i, fmt.Sprintf("--%s needs a value", name)})
		default:
			// An unknown flag with nothing after it: most likely a boolean.
			add(name, true)
		}
	}
	return role, keys, at, problems
}

// checkK3sArgs validates k3OS k3s_args as checkK3s does the k3s: block,
// pointing at the argument that is wrong.
func checkK3sArgs(c *checker, p string, args []string) {
	_, keys, at, problems := parseK3sArgsAt(args)
	for _, pr := range problems {
		c.errorf(joinIndex(p, pr.index), "%s", pr.msg)
	}
	for _, key := range sortedKeys(keys) {
		if _, known := k3sFlags[key]; !known {
			c.warnf(joinIndex(p, at[key][0]), "%s; k3s ignores it", unknownKeyMessage("k3s option", key, k3sFlagNames))
		}
		values, _ := k3sValueStrings(keys[key])
		checkK3sSupport(c, joinIndex(p, at[key][0]), key, "--"+key+": ", values, func(j int) string { return joinIndex(p, at[key][j]) })
		for j, v := range values {
			var err error
			switch key {
			case "node-label":
				for _, label := range strings.Split(v, ",") {
					if err == nil {
						err = checkNodeLabel(label)
					}
				}
			case "node-taint":
				err = checkNodeTaint(v)
			}
			if err != nil {
				c.errorf(joinIndex(p, at[key][j]), "%v", err)
			}
		}
	}
}

// K3sConfigYAML is the content of /etc/rancher/k3s/config.yaml: the k3s:
// map of the effective config (k3OS settings folded in, see Effective),
// keys sorted, so the same config always gives the same bytes.
func (cfg *Config) K3sConfigYAML() ([]byte, error) {
	k3s := cfg.Effective().K3s
	root := &yaml.Node{Kind: yaml.MappingNode}
	if len(k3s) == 0 {
		root.Style = yaml.FlowStyle
	}
	for _, key := range sortedKeys(k3s) {
		var value yaml.Node
		if err := value.Encode(k3s[key]); err != nil {
			return nil, fmt.Errorf("k3s.%s: %w", key, err)
		}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, &value)
	}
	doc := &yaml.Node{
		Kind:        yaml.DocumentNode,
		HeadComment: "Written by ballast's init from the cloud-config k3s: block; changes here are lost at boot.",
		Content:     []*yaml.Node{root},
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("k3s config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("k3s config: %w", err)
	}
	return buf.Bytes(), nil
}
