// Package token reads and writes k3s join tokens:
//
//	K10<sha256 hex of the server CA bundle>::<user>:<password>
//
// A bare password (anything not starting with K10) is also accepted; it
// skips the CA check on join.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

const prefix = "K10"

// Token is a parsed join token.
type Token struct {
	CAHash   string // hex sha256 of the server CA bundle; empty for a bare password
	Username string // "server" or "node" in full tokens; empty for a bare password or a bootstrap token
	Password string // the password, or the bootstrap token (id.secret)
}

// Bootstrap reports a bootstrap token (`k3s token create`): it joins with
// bearer authentication, the others with basic authentication.
func (t Token) Bootstrap() bool { return t.Username == "" && IsBootstrap(t.Password) }

// ErrFormat is returned for a K10 token that does not have the right shape.
var ErrFormat = errors.New("invalid token format: want K10<sha256 hex>::<user>:<password>, K10<sha256 hex>::<bootstrap token>, or a bare password")

// ErrCAHash is returned when the server's CA bundle does not match the token.
var ErrCAHash = errors.New("the server's CA certificates do not match the token's hash")

// ErrTokenChanged is returned when --token is not the token the server
// already has.
var ErrTokenChanged = errors.New("not this server's token: a server's token is changed with `k3s token rotate`, and the config's token must then be the new one")

var hexHash = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Parse reads a token as k3s does.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("token is empty")
	}
	if !strings.HasPrefix(s, prefix) {
		return Token{Password: s}, nil
	}
	hash, creds, ok := strings.Cut(strings.TrimPrefix(s, prefix), "::")
	if !ok || !hexHash.MatchString(hash) {
		return Token{}, ErrFormat
	}
	if IsBootstrap(creds) {
		return Token{CAHash: hash, Password: creds}, nil
	}
	user, pass, ok := strings.Cut(creds, ":")
	if !ok || user == "" || pass == "" {
		return Token{}, ErrFormat
	}
	return Token{CAHash: hash, Username: user, Password: pass}, nil
}

// String formats a full token, or the bare password when there is no hash.
func (t Token) String() string {
	switch {
	case t.CAHash == "":
		return t.Password
	case t.Username == "":
		return prefix + t.CAHash + "::" + t.Password
	}
	return prefix + t.CAHash + "::" + t.Username + ":" + t.Password
}

// CAHash is the hex sha256 of the CA bundle as served by /cacerts.
func CAHash(caBundle []byte) string {
	sum := sha256.Sum256(caBundle)
	return hex.EncodeToString(sum[:])
}

// VerifyCA checks a CA bundle fetched from /cacerts against the token.
// Bare passwords carry no hash and verify any bundle.
func (t Token) VerifyCA(caBundle []byte) error {
	if t.CAHash == "" {
		return nil
	}
	if got := CAHash(caBundle); got != t.CAHash {
		return fmt.Errorf("%w: token has %s, server sent %s", ErrCAHash, t.CAHash, got)
	}
	return nil
}

// RandomPassword returns 16 random bytes in hex, as k3s generates.
func RandomPassword() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Files are the server's token files.
type Files struct {
	Token      string // server/token
	NodeToken  string // server/node-token (a symlink to token)
	AgentToken string // server/agent-token
	Passwd     string // server/cred/passwd
}

// ServerTokens is what EnsureServer wrote.
type ServerTokens struct {
	Server Token // user "server": joins servers and agents
	Agent  Token // user "node": joins agents only
}

// EnsureServer writes the server's token files. The password comes from
// --token (full or bare), then from an existing token file, then is
// generated; the agent password from --agent-token, an existing file, or
// the server password. A --token whose hash does not match caBundle is an
// error, as when a server is restored with the wrong CA.
func EnsureServer(f Files, caBundle []byte, serverToken, agentToken string) (ServerTokens, error) {
	hash := CAHash(caBundle)
	pw, err := password(serverToken, f.Token, hash)
	if err != nil {
		return ServerTokens{}, fmt.Errorf("token: --token: %w", err)
	}
	if serverToken != "" {
		// As k3s (whose datastore is encrypted with the token): a server's
		// token changes only through k3s token rotate, never by editing
		// the config, which would lock out every node that has it.
		if current, err := password("", f.Token, hash); err != nil {
			return ServerTokens{}, fmt.Errorf("token: %s: %w", f.Token, err)
		} else if current != "" && current != pw {
			return ServerTokens{}, fmt.Errorf("token: --token: %w (%s)", ErrTokenChanged, f.Token)
		}
	}
	if pw == "" {
		if pw, err = RandomPassword(); err != nil {
			return ServerTokens{}, err
		}
	}
	apw, err := password(agentToken, f.AgentToken, hash)
	if err != nil {
		return ServerTokens{}, fmt.Errorf("token: --agent-token: %w", err)
	}
	agentFromServer := apw == ""
	if agentFromServer {
		apw = pw
	}
	out := ServerTokens{
		Server: Token{CAHash: hash, Username: "server", Password: pw},
		Agent:  Token{CAHash: hash, Username: "node", Password: apw},
	}
	if err := writeFile(f.Token, out.Server.String()+"\n"); err != nil {
		return out, err
	}
	if f.NodeToken != "" {
		if err := os.Remove(f.NodeToken); err != nil && !os.IsNotExist(err) {
			return out, fmt.Errorf("token: %w", err)
		}
		if err := os.Symlink(filepath.Base(f.Token), f.NodeToken); err != nil {
			return out, fmt.Errorf("token: %w", err)
		}
	}
	if !agentFromServer && f.AgentToken != "" {
		if err := writeFile(f.AgentToken, out.Agent.String()+"\n"); err != nil {
			return out, err
		}
	}
	if f.Passwd != "" {
		passwd := passwdText(pw, apw)
		if err := writeFile(f.Passwd, passwd); err != nil {
			return out, err
		}
	}
	return out, nil
}

// password picks the password from a flag value or an existing file.
func password(flag, file, hash string) (string, error) {
	if flag != "" {
		t, err := Parse(flag)
		if err != nil {
			return "", err
		}
		if t.CAHash != "" && t.CAHash != hash {
			return "", fmt.Errorf("%w: token has %s, local CA is %s", ErrCAHash, t.CAHash, hash)
		}
		return t.Password, nil
	}
	if file == "" {
		return "", nil
	}
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w", err)
	}
	t, err := Parse(string(data))
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	return t.Password, nil
}

func writeFile(path, data string) error {
	if err := atomicfile.Write(path, []byte(data), 0o600); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	return nil
}

// Rotate gives the server a new token, as `k3s token rotate` does: the
// server user's password in passwd and the token file (node-token follows
// it) become newPassword, or a random one when it is empty. The agent
// user ("node") changes too when it had the server's password and no
// agent token of its own was configured (agentTokenSet false): agents
// that joined keep working with their certificates; new ones need the new
// token. It returns the new server token.
func Rotate(f Files, caBundle []byte, newPassword string, agentTokenSet bool) (Token, error) {
	return RotateWith(f, caBundle, newPassword, agentTokenSet, nil)
}

// RotateWith is Rotate with before, called with the old server password
// and the new passwd file's contents before anything is written (to put
// them in the cluster's bootstrap record first); its error stops the
// rotation.
func RotateWith(f Files, caBundle []byte, newPassword string, agentTokenSet bool, before func(oldPassword string, t Token, passwd []byte) error) (Token, error) {
	users, err := ReadPasswd(f.Passwd)
	if err != nil {
		return Token{}, err
	}
	old, ok := users["server"]
	if !ok {
		return Token{}, fmt.Errorf("token: %s has no server user", f.Passwd)
	}
	if newPassword == "" {
		if newPassword, err = RandomPassword(); err != nil {
			return Token{}, err
		}
	}
	if err := validPassword(newPassword); err != nil {
		return Token{}, err
	}
	agent := users["node"]
	if agent == "" || (agent == old && !agentTokenSet) {
		agent = newPassword
	}
	t := Token{CAHash: CAHash(caBundle), Username: "server", Password: newPassword}
	passwd := passwdText(newPassword, agent)
	if before != nil {
		if err := before(old, t, []byte(passwd)); err != nil {
			return Token{}, err
		}
	}
	// passwd first: the supervisor answers from it; the token file is
	// what people read the token from.
	if err := writeFile(f.Passwd, passwd); err != nil {
		return Token{}, err
	}
	if err := writeFile(f.Token, t.String()+"\n"); err != nil {
		return Token{}, err
	}
	return t, nil
}

// AdoptPasswd rewrites the token file to the server password passwd has
// (the cluster's, taken from its bootstrap data after a token rotation on
// another server), with caBundle's hash.
func AdoptPasswd(f Files, caBundle []byte) error {
	users, err := ReadPasswd(f.Passwd)
	if err != nil {
		return err
	}
	pw, ok := users["server"]
	if !ok {
		return fmt.Errorf("token: %s has no server user", f.Passwd)
	}
	t := Token{CAHash: CAHash(caBundle), Username: "server", Password: pw}
	return writeFile(f.Token, t.String()+"\n")
}

// passwdText is server/cred/passwd for the server and agent passwords.
func passwdText(server, agent string) string {
	return fmt.Sprintf("%s,server,server,k3s:server\n%s,node,node,k3s:agent\n", server, agent)
}

// validPassword: a password must fit passwd's comma-separated lines and a
// K10 token.
func validPassword(p string) error {
	if strings.ContainsAny(p, ",:") || strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return errors.New("token: the new token may not contain commas, colons, spaces or control characters")
	}
	return nil
}

// ReadPasswd reads server/cred/passwd ("password,user,uid,group" lines)
// into user -> password.
func ReadPasswd(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	users := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 2 || f[0] == "" || f[1] == "" {
			return nil, fmt.Errorf("token: %s:%d: want password,user,uid,group", path, i+1)
		}
		users[f[1]] = f[0]
	}
	return users, nil
}

// GenerateBootstrap makes a kubeadm-style bootstrap token
// ([a-z0-9]{6}.[a-z0-9]{16}), as `k3s token generate` prints.
func GenerateBootstrap() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 22)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	out := make([]byte, 0, 23)
	for i, c := range b {
		if i == 6 {
			out = append(out, '.')
		}
		out = append(out, alphabet[int(c)%len(alphabet)])
	}
	return string(out), nil
}

var bootstrapRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

// IsBootstrap reports whether s has the bootstrap token shape.
func IsBootstrap(s string) bool { return bootstrapRE.MatchString(s) }
