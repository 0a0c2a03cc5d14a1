package k3s

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ballast-os/ballast/runtime/config"
)

// eachFlag calls f for every flag of a k3s sub-command's args, in order:
// --name=value, --name value or -n value. A name in bools takes no
// separate value (--force, or --force=false; val is then "" or what
// follows "="); arg is the flag as given, for messages. The arguments
// that are not flags ("-" included) are returned.
func eachFlag(args []string, bools []string, f func(name, val, arg string) error) ([]string, error) {
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			positional = append(positional, arg)
			continue
		}
		name, val, has := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if has && val == "" && slices.Contains(bools, name) {
			return nil, fmt.Errorf("%w: %s: want true or false", config.ErrUsage, arg)
		}
		if !has && !slices.Contains(bools, name) {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%w: %s needs a value", config.ErrUsage, arg)
			}
			i++
			val = args[i]
		}
		if err := f(name, val, arg); err != nil {
			return nil, err
		}
	}
	return positional, nil
}

// flagBool is a boolean flag's value from eachFlag: "" (the flag alone)
// is true.
func flagBool(val, arg string) (bool, error) {
	if val == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(val)
	if err != nil {
		return false, fmt.Errorf("%w: %s: want true or false", config.ErrUsage, arg)
	}
	return b, nil
}

// serverDefaults are the server URL and token a command that asks a
// server's join API starts from, as k3s's CLI does: $K3S_URL (else the
// local server, https://127.0.0.1:6443) and $K3S_TOKEN; --server and
// --token override them.
func (a *app) serverDefaults() (server, tok string) {
	server = "https://127.0.0.1:6443"
	if v, ok := a.lookupEnv("K3S_URL"); ok && v != "" {
		server = v
	}
	if v, ok := a.lookupEnv("K3S_TOKEN"); ok && v != "" {
		tok = v
	}
	return server, tok
}

// noPositional refuses arguments that are not flags.
func noPositional(positional []string, err error) error {
	if err == nil && len(positional) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", config.ErrUsage, positional[0])
	}
	return err
}
