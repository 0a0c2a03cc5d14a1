package k3s

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/ballast-os/ballast/runtime/agent"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/secretsencrypt"
)

// secretsEncryptUsage lists k3s's subcommands and their flags.
const secretsEncryptUsage = `usage: k3s secrets-encrypt COMMAND [--data-dir DIR] [--config FILE] [--token T] [--server URL]
  status [--output text|json]
  enable | disable
  prepare [--force] | rotate [--force] | reencrypt [--force] [--skip]
  rotate-keys`

// secretsEncrypt is `k3s secrets-encrypt`: each command asks the server
// (--server, default https://127.0.0.1:6443, $K3S_URL) with its token
// (--token, $K3S_TOKEN, else <data-dir>/server/token, the data dir found
// as resolveDataDir finds it), as k3s's CLI does.
func (a *app) secretsEncrypt(ctx context.Context, args []string) error {
	if len(args) == 0 || !slices.Contains([]string{"status", "enable", "disable", "prepare", "rotate", "reencrypt", "rotate-keys"}, args[0]) {
		return fmt.Errorf("%w: %s", config.ErrUsage, secretsEncryptUsage)
	}
	cmd := args[0]
	var dataDir, configFile string
	server, tok := a.serverDefaults()
	output := "text"
	var force, skip bool
	boolean := func(allowed bool, val, arg string) (bool, error) {
		if !allowed {
			return false, fmt.Errorf("%w: k3s secrets-encrypt %s takes no %s", config.ErrUsage, cmd, arg)
		}
		return flagBool(val, arg)
	}
	err := noPositional(eachFlag(args[1:], []string{"force", "f", "skip"}, func(name, val, arg string) error {
		var err error
		switch name {
		case "force", "f":
			force, err = boolean(cmd == "prepare" || cmd == "rotate" || cmd == "reencrypt", val, arg)
		case "skip":
			skip, err = boolean(cmd == "reencrypt", val, arg)
		case "data-dir", "d":
			dataDir = val
		case "config", "c":
			configFile = val
		case "token", "t":
			tok = val
		case "server", "s":
			server = val
		case "output", "o":
			if cmd != "status" || (val != "text" && val != "json") {
				return fmt.Errorf("%w: k3s secrets-encrypt %s --output %q: only status takes it, as text or json", config.ErrUsage, cmd, val)
			}
			output = val
		default:
			return fmt.Errorf("%w: unknown flag %s (%s)", config.ErrUsage, arg, secretsEncryptUsage)
		}
		return err
	}))
	if err != nil {
		return err
	}
	if tok == "" {
		var err error
		if dataDir, err = a.resolveDataDir(dataDir, configFile); err != nil {
			return err
		}
	}
	t, err := serverToken(tok, dataDir)
	if err != nil {
		return fmt.Errorf("k3s secrets-encrypt: %w", err)
	}
	sc, err := agent.NewServerClient(ctx, server, t)
	if err != nil {
		return fmt.Errorf("k3s secrets-encrypt %s: %w", cmd, err)
	}
	if cmd == "status" {
		var st secretsencrypt.StatusInfo
		if err := sc.EncryptStatus(ctx, &st); err != nil {
			return fmt.Errorf("k3s secrets-encrypt status: %w", err)
		}
		if output == "json" {
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		return secretsencrypt.WriteStatus(a.stdout, st)
	}
	req := secretsencrypt.Request{Force: force, Skip: skip}
	switch cmd {
	case "enable", "disable":
		on := cmd == "enable"
		req.Enable = &on
	default:
		stage := map[string]string{
			"prepare": secretsencrypt.StagePrepare, "rotate": secretsencrypt.StageRotate,
			"reencrypt": secretsencrypt.StageReencryptActive, "rotate-keys": secretsencrypt.StageRotateKeys,
		}[cmd]
		req.Stage = &stage
	}
	msg, err := sc.EncryptConfig(ctx, req)
	if err != nil {
		return fmt.Errorf("k3s secrets-encrypt %s: %w", cmd, err)
	}
	fmt.Fprintln(a.stdout, msg)
	return nil
}
