package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Default paths and values, as in k3s.
const (
	DefaultConfigFile     = "/etc/rancher/k3s/config.yaml"
	DefaultRegistriesFile = "/etc/rancher/k3s/registries.yaml"
	DefaultDataDir        = "/var/lib/rancher/k3s"
	DefaultKubeconfig     = "/etc/rancher/k3s/k3s.yaml"
	DefaultClusterCIDR    = "10.42.0.0/16"
	DefaultServiceCIDR    = "10.43.0.0/16"
	DefaultClusterDNS     = "10.43.0.10"
	DefaultClusterDomain  = "cluster.local"
	DefaultNodePortRange  = "30000-32767"
	DefaultPauseImage     = "rancher/mirrored-pause:3.6"
)

// Origin says where a flag's value came from.
type Origin int

const (
	FromDefault Origin = iota
	FromEnv
	FromFile
	FromFlag
)

func (o Origin) String() string {
	return [...]string{"default", "environment", "config file", "command line"}[o]
}

// Warning is a problem that k3s would log and skip, not fail on: an unknown
// key in a config file, a key that does not apply to this command, or one
// this runtime ignores (Support). Loaded.Refused holds the same for keys
// it refuses. File is a config file (with Line), or "command line" or
// "environment variable NAME" (Line 0).
type Warning struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (w Warning) String() string {
	if w.Line == 0 {
		return fmt.Sprintf("%s: key %q: %s", w.File, w.Key, w.Msg)
	}
	return fmt.Sprintf("%s:%d: key %q: %s", w.File, w.Line, w.Key, w.Msg)
}

// source is where one value came from: a config file and line, or the
// command line or an environment variable (Line 0).
type source struct {
	File string
	Line int
	// Env is the environment variable the value came from, if any.
	Env string
}

const commandLine = "command line"

// Options say what to load.
type Options struct {
	// Command is "server" or "agent".
	Command string
	// Args are the command-line arguments after the command name.
	Args []string
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Loaded is the merged, untyped result: each flag's values and origin.
type Loaded struct {
	Command string
	// Values holds every flag's values by long name. Scalars have one value.
	Values map[string][]string
	// Origins records where each flag's values came from.
	Origins map[string]Origin
	// Files are the config files read, in order.
	Files []string
	// Warnings are unknown or inapplicable keys found in the files, and
	// keys set that this runtime ignores.
	Warnings []Warning
	// Refused are keys set that this runtime refuses (see Support);
	// Unsupported turns them into the error that stops k3s server and
	// agent.
	Refused []Warning
	// sources holds where each of Values' values came from.
	sources map[string][]source
	// Positional are the command-line arguments that were not flags.
	Positional []string
}

// Get returns a flag's last value ("" if none).
func (l *Loaded) Get(name string) string {
	v := l.Values[name]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// ErrUsage marks errors in the command line itself.
var ErrUsage = errors.New("usage error")

// Load merges defaults, environment, config files and command line.
func Load(o Options) (*Loaded, error) {
	if o.Command != "server" && o.Command != "agent" {
		return nil, fmt.Errorf("config: unknown command %q (want server or agent)", o.Command)
	}
	lookup := o.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	idx := flagIndex()
	cli, positional, err := parseArgs(o.Command, o.Args, idx)
	if err != nil {
		return nil, err
	}
	l := &Loaded{
		Command:    o.Command,
		Values:     map[string][]string{},
		Origins:    map[string]Origin{},
		Positional: positional,
		sources:    map[string][]source{},
	}

	// The config file: K3S_CONFIG_FILE wins over --config, as in k3s.
	configFile, explicit := DefaultConfigFile, false
	if v := lastValue(cli, "config"); v != "" {
		configFile, explicit = v, true
	}
	if v, ok := lookup("K3S_CONFIG_FILE"); ok && v != "" {
		configFile, explicit = v, true
	}
	fileVals, fileSrcs, files, warns, err := readConfigFiles(configFile, explicit, o.Command, idx)
	if err != nil {
		return nil, err
	}
	l.Files, l.Warnings = files, warns
	cliSrcs := func(n int) []source {
		out := make([]source, n)
		for i := range out {
			out[i] = source{File: commandLine}
		}
		return out
	}

	for _, f := range flagTable() {
		if f.Scope == ServerOnly && o.Command == "agent" {
			continue
		}
		if _, done := l.Origins[f.Name]; done {
			continue
		}
		fromCLI, inCLI := cli[f.Name]
		fromFile, inFile := fileVals[f.Name]
		switch {
		case inCLI && f.Kind == List && inFile:
			l.Values[f.Name] = append(append([]string{}, fromFile...), fromCLI...)
			l.sources[f.Name] = append(append([]source{}, fileSrcs[f.Name]...), cliSrcs(len(fromCLI))...)
			l.Origins[f.Name] = FromFlag
		case inCLI:
			l.Values[f.Name] = fromCLI
			l.sources[f.Name] = cliSrcs(len(fromCLI))
			l.Origins[f.Name] = FromFlag
		case inFile:
			l.Values[f.Name] = fromFile
			l.sources[f.Name] = fileSrcs[f.Name]
			l.Origins[f.Name] = FromFile
		default:
			if v, name, ok := envValue(f, lookup); ok {
				l.Values[f.Name] = v
				src := source{File: "environment variable " + name, Env: name}
				for range v {
					l.sources[f.Name] = append(l.sources[f.Name], src)
				}
				l.Origins[f.Name] = FromEnv
			} else if f.Default != "" {
				l.Values[f.Name] = []string{f.Default}
				l.Origins[f.Name] = FromDefault
			}
		}
		if f.Kind != List && len(l.Values[f.Name]) > 1 {
			v, src := l.Values[f.Name], l.sources[f.Name]
			l.Values[f.Name], l.sources[f.Name] = v[len(v)-1:], src[len(src)-1:]
		}
	}
	l.checkSupport()
	return l, nil
}

func envValue(f Flag, lookup func(string) (string, bool)) ([]string, string, bool) {
	for _, name := range f.Env {
		v, ok := lookup(name)
		if !ok || v == "" {
			continue
		}
		if f.Kind == List {
			return strings.Split(v, ","), name, true
		}
		return []string{v}, name, true
	}
	return nil, "", false
}

func lastValue(m map[string][]string, name string) string {
	v := m[name]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// parseArgs reads --name=value, --name value, -a value and boolean
// --name forms. Unknown flags are errors, as in k3s.
func parseArgs(command string, args []string, idx map[string]Flag) (map[string][]string, []string, error) {
	out := map[string][]string{}
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			positional = append(positional, arg)
			continue
		}
		name := strings.TrimLeft(arg, "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		f, ok := idx[name]
		if !ok || (f.Scope == ServerOnly && command == "agent") {
			return nil, nil, fmt.Errorf("%w: flag provided but not defined: %s", ErrUsage, arg)
		}
		if !hasValue {
			if f.Kind == Bool {
				value = "true"
			} else {
				if i+1 >= len(args) {
					return nil, nil, fmt.Errorf("%w: flag needs an argument: %s", ErrUsage, arg)
				}
				i++
				value = args[i]
			}
		}
		out[f.Name] = append(out[f.Name], value)
	}
	return out, positional, nil
}

// dropIns lists file.d/*.yaml and *.yml in lexical order.
func dropIns(file string) ([]string, error) {
	entries, err := os.ReadDir(file + ".d")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: reading drop-in directory: %w", err)
	}
	var out []string
	for _, e := range entries {
		name := strings.ToLower(e.Name())
		if e.IsDir() || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		out = append(out, filepath.Join(file+".d", e.Name()))
	}
	sort.Strings(out)
	return out, nil
}

// readConfigFiles reads the config file and its drop-ins. A missing default
// file is fine; a missing file named by --config or K3S_CONFIG_FILE is an
// error unless drop-ins exist (as in k3s).
func readConfigFiles(file string, explicit bool, command string, idx map[string]Flag) (map[string][]string, map[string][]source, []string, []Warning, error) {
	files, err := dropIns(file)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if _, err := os.Stat(file); err == nil {
		files = append([]string{file}, files...)
	} else if !errors.Is(err, fs.ErrNotExist) || (explicit && len(files) == 0) {
		return nil, nil, nil, nil, fmt.Errorf("config: %w", err)
	}
	values := map[string][]string{}
	sources := map[string][]source{}
	var warns []Warning
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("config: %w", err)
		}
		entries, err := ParseFile(f, data)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		for _, e := range entries {
			fl, ok := idx[e.Key]
			switch {
			case !ok:
				warns = append(warns, Warning{File: f, Line: e.Line, Key: e.Key, Msg: "unknown key, skipped"})
				continue
			case fl.Scope == ServerOnly && command == "agent":
				warns = append(warns, Warning{File: f, Line: e.Line, Key: e.Key, Msg: "applies to k3s server only, skipped by the agent"})
				continue
			}
			if s, _ := SupportOf(fl.Name); s.FileOnly {
				// config: only the command line and environment choose the file.
				warns = append(warns, Warning{File: f, Line: e.Line, Key: e.Key, Msg: s.Msg})
				continue
			}
			src := make([]source, len(e.Values))
			for i := range src {
				src[i] = source{File: f, Line: e.Line}
			}
			if e.Append {
				values[fl.Name] = append(values[fl.Name], e.Values...)
				sources[fl.Name] = append(sources[fl.Name], src...)
			} else {
				values[fl.Name] = append([]string{}, e.Values...)
				sources[fl.Name] = src
			}
		}
	}
	return values, sources, files, warns, nil
}

// Entry is one key of a config file.
type Entry struct {
	Key    string
	Append bool // written as key+:
	Values []string
	Line   int
}

// ParseFile reads one config file: a YAML mapping whose keys are flag
// names, whose values are scalars or lists of scalars. Errors name the
// file and line.
func ParseFile(name string, data []byte) ([]Entry, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config: %s: %w", name, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config: %s:%d: the file must be a mapping of flag names to values", name, root.Line)
	}
	var out []Entry
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("config: %s:%d: keys must be flag names", name, k.Line)
		}
		e := Entry{Key: k.Value, Line: k.Line}
		if strings.HasSuffix(e.Key, "+") {
			e.Key, e.Append = strings.TrimSuffix(e.Key, "+"), true
		}
		vals, err := scalars(v)
		if err != nil {
			return nil, fmt.Errorf("config: %s:%d: key %q: %w", name, v.Line, e.Key, err)
		}
		e.Values = vals
		out = append(out, e)
	}
	return out, nil
}

func scalars(n *yaml.Node) ([]string, error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return []string{""}, nil
		}
		return []string{n.Value}, nil
	case yaml.SequenceNode:
		var out []string
		for _, c := range n.Content {
			if c.Kind == yaml.AliasNode && c.Alias != nil {
				c = c.Alias
			}
			if c.Kind != yaml.ScalarNode {
				return nil, errors.New("list items must be plain values")
			}
			out = append(out, c.Value)
		}
		return out, nil
	default:
		return nil, errors.New("value must be a plain value or a list of them")
	}
}
