package k3s

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ballast-os/ballast/runtime/agent"
	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/supervisor"
	"github.com/ballast-os/ballast/runtime/token"
)

// rotateCA is `k3s certificate rotate-ca --path DIR [--force]`: the CA
// files under DIR/tls (each optional, named as in server/tls) go to the
// server's join API with the server token, which checks that they chain
// to the current CAs (unless --force) and stages them for its next
// start, as k3s saves them to its datastore. With a new server CA the
// tokens' CA hash changes: the new hash is printed.
func (a *app) rotateCA(args []string) error {
	var path, dataDir, configFile string
	server, tok := a.serverDefaults()
	force := false
	err := noPositional(eachFlag(args, []string{"force"}, func(name, val, arg string) error {
		var err error
		switch name {
		case "force":
			force, err = flagBool(val, arg)
		case "path":
			path = val
		case "server", "s":
			server = val
		case "token", "t":
			tok = val
		case "data-dir", "d":
			dataDir = val
		case "config", "c":
			configFile = val
		default:
			return fmt.Errorf("%w: unknown flag %s (k3s certificate rotate-ca --path DIR [--force] [--server URL] [--token TOKEN] [--data-dir DIR])", config.ErrUsage, arg)
		}
		return err
	}))
	if err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("%w: k3s certificate rotate-ca needs --path: the directory whose tls/ holds the new CA files (server-ca.crt, server-ca.key, client-ca.crt, ...)", config.ErrUsage)
	}
	if dataDir, err = a.resolveDataDir(dataDir, configFile); err != nil {
		return err
	}
	req := supervisor.RotateCARequest{}
	for _, f := range certs.RotateCAFiles {
		p := filepath.Join(path, f.Path)
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(a.stderr, "%s: not there, %s stays as it is\n", p, f.Field)
			continue
		} else if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		req[f.Field] = certs.CAFileData{Timestamp: st.ModTime(), Content: data}
	}
	if len(req) == 0 {
		return fmt.Errorf("no CA files under %s", filepath.Join(path, "tls"))
	}
	t, err := serverToken(tok, dataDir)
	if err != nil {
		return fmt.Errorf("k3s certificate rotate-ca: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sc, err := agent.NewServerClient(ctx, server, t)
	if err != nil {
		return fmt.Errorf("k3s certificate rotate-ca: %w", err)
	}
	if err := sc.RotateCA(ctx, req, force); err != nil {
		return fmt.Errorf("k3s certificate rotate-ca: %w", err)
	}
	fmt.Fprintln(a.stdout, "certificates staged on the server (and, with embedded etcd, in the datastore for the other servers): restart k3s on every server, then on each agent, to use them")
	if ca, ok := req["ServerCA"]; ok {
		fmt.Fprintf(a.stdout, "the server CA changes, and with it the CA hash in tokens (K10<hash>::...), to %s:\n", token.CAHash(ca.Content))
		fmt.Fprintf(a.stdout, "after the restart %s holds the new server token; nodes (the server itself too) configured with a K10 token need the new one, or the bare password\n", datadir.Layout{Root: dataDir}.TokenFile())
	}
	return nil
}
