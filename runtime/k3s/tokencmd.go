package k3s

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ballast-os/ballast/runtime/agent"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/kubeapi"
	"github.com/ballast-os/ballast/runtime/token"
)

// tokenFlags are the flags of k3s token's subcommands.
type tokenFlags struct {
	dataDir, configFile, kubeconfig, description, output string
	token, newToken, server                              string
	groups, usages                                       []string
	ttl                                                  time.Duration
	args                                                 []string
}

func (a *app) parseTokenFlags(args []string) (*tokenFlags, error) {
	f := &tokenFlags{output: "text", ttl: 24 * time.Hour,
		groups: []string{"system:bootstrappers:k3s:default-node-token"}, usages: []string{"signing", "authentication"}}
	if v, ok := a.lookupEnv("KUBECONFIG"); ok && v != "" {
		f.kubeconfig = v
	}
	f.server, f.token = a.serverDefaults()
	positional, err := eachFlag(args, nil, func(name, val, arg string) error {
		switch name {
		case "data-dir", "d":
			f.dataDir = val
		case "config", "c":
			f.configFile = val
		case "kubeconfig":
			f.kubeconfig = val
		case "token", "t":
			f.token = val
		case "new-token":
			f.newToken = val
		case "server", "s":
			f.server = val
		case "description":
			f.description = val
		case "groups":
			f.groups = strings.Split(val, ",")
		case "usages":
			f.usages = strings.Split(val, ",")
		case "output", "o":
			if val != "text" && val != "json" {
				return fmt.Errorf("%w: --output %q: want text or json", config.ErrUsage, val)
			}
			f.output = val
		case "ttl":
			d, err := time.ParseDuration(val)
			if err != nil || d < 0 {
				return fmt.Errorf("%w: --ttl %q: want a duration such as 24h, or 0 for no expiry", config.ErrUsage, val)
			}
			f.ttl = d
		default:
			return fmt.Errorf("%w: unknown flag %s", config.ErrUsage, arg)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	f.args = positional
	dataDir, err := a.resolveDataDir(f.dataDir, f.configFile)
	if err != nil {
		return nil, err
	}
	f.dataDir = dataDir
	return f, nil
}

func (f *tokenFlags) client() (*kubeapi.Client, error) {
	kc := f.kubeconfig
	if kc == "" {
		kc = DefaultKubeconfig
	}
	return kubeapi.FromKubeconfig(kc)
}

// token is `k3s token generate|create|list|delete`: bootstrap tokens,
// stored as bootstrap.kubernetes.io/token secrets that the API server
// authenticates and the controller-manager's tokencleaner deletes when
// they expire; agents join with K10<CA hash>::<id>.<secret>. `rotate`
// changes the server token itself.
func (a *app) token(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: k3s token needs a subcommand: generate, create, list, delete, rotate", config.ErrUsage)
	}
	f, err := a.parseTokenFlags(args[1:])
	if err != nil {
		return err
	}
	switch args[0] {
	case "generate":
		t, err := token.GenerateBootstrap()
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, t)
		return nil
	case "create":
		return a.tokenCreate(ctx, f)
	case "list":
		return a.tokenList(ctx, f)
	case "delete":
		return a.tokenDelete(ctx, f)
	case "rotate":
		return a.tokenRotate(ctx, f)
	}
	return fmt.Errorf("%w: unknown token subcommand %q", config.ErrUsage, args[0])
}

func (a *app) tokenCreate(ctx context.Context, f *tokenFlags) error {
	var raw string
	switch len(f.args) {
	case 0:
		var err error
		if raw, err = token.GenerateBootstrap(); err != nil {
			return err
		}
	case 1:
		raw = f.args[0]
		if !token.IsBootstrap(raw) {
			return fmt.Errorf("%w: token %q: want [a-z0-9]{6}.[a-z0-9]{16} (see k3s token generate)", config.ErrUsage, raw)
		}
	default:
		return fmt.Errorf("%w: k3s token create takes at most one token", config.ErrUsage)
	}
	ca, err := os.ReadFile(filepath.Join(datadir.Layout{Root: f.dataDir}.TLS(), "server-ca.crt"))
	if err != nil {
		return fmt.Errorf("the cluster CA hash: %w (run on a server, or set --data-dir)", err)
	}
	id, secret, _ := strings.Cut(raw, ".")
	data := map[string]string{"token-id": id, "token-secret": secret, "auth-extra-groups": strings.Join(f.groups, ",")}
	for _, u := range f.usages {
		data["usage-bootstrap-"+strings.TrimSpace(u)] = "true"
	}
	if f.description != "" {
		data["description"] = f.description
	}
	if f.ttl > 0 {
		data["expiration"] = time.Now().Add(f.ttl).UTC().Format(time.RFC3339)
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	s := kubeapi.Secret{APIVersion: "v1", Kind: "Secret", Type: "bootstrap.kubernetes.io/token",
		Metadata: kubeapi.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: "kube-system"}, StringData: data}
	if err := c.Do(ctx, http.MethodPost, "/api/v1/namespaces/kube-system/secrets", "application/json", s, nil); err != nil {
		return fmt.Errorf("creating the token: %w", err)
	}
	fmt.Fprintln(a.stdout, token.Token{CAHash: token.CAHash(ca), Password: raw}.String())
	return nil
}

// bootstrapSecrets lists the bootstrap token secrets.
func bootstrapSecrets(ctx context.Context, c *kubeapi.Client) ([]kubeapi.Secret, error) {
	var list struct{ Items []kubeapi.Secret }
	q := url.Values{"fieldSelector": {"type=bootstrap.kubernetes.io/token"}}
	if err := c.Do(ctx, http.MethodGet, "/api/v1/namespaces/kube-system/secrets?"+q.Encode(), "", nil, &list); err != nil {
		return nil, err
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Metadata.Name < list.Items[j].Metadata.Name })
	return list.Items, nil
}

func (a *app) tokenList(ctx context.Context, f *tokenFlags) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	items, err := bootstrapSecrets(ctx, c)
	if err != nil {
		return err
	}
	type row struct {
		Token       string   `json:"token"`
		TTL         string   `json:"ttl"`
		Expires     string   `json:"expires,omitempty"`
		Usages      []string `json:"usages"`
		Description string   `json:"description,omitempty"`
		Groups      []string `json:"groups,omitempty"`
	}
	var rows []row
	for _, s := range items {
		d := func(k string) string { return string(s.Data[k]) }
		r := row{Token: d("token-id") + ".****************", TTL: "<forever>", Expires: d("expiration"), Description: d("description")}
		if e, err := time.Parse(time.RFC3339, r.Expires); err == nil {
			r.TTL = time.Until(e).Round(time.Second).String()
		}
		for k, v := range s.Data {
			if u, ok := strings.CutPrefix(k, "usage-bootstrap-"); ok && string(v) == "true" {
				r.Usages = append(r.Usages, u)
			}
		}
		sort.Strings(r.Usages)
		if g := d("auth-extra-groups"); g != "" {
			r.Groups = strings.Split(g, ",")
		}
		rows = append(rows, r)
	}
	if f.output == "json" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "TOKEN\tTTL\tEXPIRES\tUSAGES\tDESCRIPTION\tEXTRA GROUPS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Token, r.TTL, orDash(r.Expires), strings.Join(r.Usages, ","), orDash(r.Description), strings.Join(r.Groups, ","))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func (a *app) tokenDelete(ctx context.Context, f *tokenFlags) error {
	if len(f.args) == 0 {
		return fmt.Errorf("%w: k3s token delete TOKEN|ID...", config.ErrUsage)
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	for _, arg := range f.args {
		id := arg
		if t, err := token.Parse(arg); err == nil && t.Bootstrap() {
			id = t.Password
		}
		id, _, _ = strings.Cut(id, ".")
		if err := c.Do(ctx, http.MethodDelete, "/api/v1/namespaces/kube-system/secrets/bootstrap-token-"+url.PathEscape(id), "", nil, nil); err != nil {
			return fmt.Errorf("deleting token %s: %w", id, err)
		}
		fmt.Fprintf(a.stdout, "bootstrap token %q deleted\n", id)
	}
	return nil
}

// tokenRotate is `k3s token rotate [--token T] [--new-token N] [--server URL]`:
// the server's token (from --token, else <data-dir>/server/token) proves
// the caller may; the server writes the new one to its token file and
// joins need it from then on. Nodes that joined keep their certificates;
// their config's token must be changed before they next join.
func (a *app) tokenRotate(ctx context.Context, f *tokenFlags) error {
	t, err := serverToken(f.token, f.dataDir)
	if err != nil {
		return fmt.Errorf("k3s token rotate: %w", err)
	}
	fmt.Fprintln(a.stdout, "WARNING: Recommended to keep a record of the old token. If restoring from a snapshot, you must use the token associated with that snapshot.")
	if err := agent.RotateToken(ctx, f.server, t, f.newToken); err != nil {
		return fmt.Errorf("k3s token rotate: %w", err)
	}
	fmt.Fprintln(a.stdout, "Token rotated, restart k3s nodes with new token")
	return nil
}

// serverToken is the token a command that asks the server's join API
// sends: the one given (--token, $K3S_TOKEN), else the server's own from
// <dataDir>/server/token.
func serverToken(given, dataDir string) (token.Token, error) {
	if given == "" {
		data, err := os.ReadFile(datadir.Layout{Root: dataDir}.TokenFile())
		if err != nil {
			return token.Token{}, fmt.Errorf("no --token, and the server's token file: %w", err)
		}
		given = strings.TrimSpace(string(data))
	}
	t, err := token.Parse(given)
	if err != nil {
		return token.Token{}, fmt.Errorf("--token: %w", err)
	}
	return t, nil
}
