package token

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n")
	h := CAHash(ca)
	if len(h) != 64 {
		t.Fatalf("hash %q", h)
	}
	s := "K10" + h + "::server:s3cret"
	tok, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != h || tok.Username != "server" || tok.Password != "s3cret" || tok.String() != s {
		t.Errorf("parsed %+v", tok)
	}
	if err := tok.VerifyCA(ca); err != nil {
		t.Error(err)
	}
	if err := tok.VerifyCA([]byte("other")); !errors.Is(err, ErrCAHash) {
		t.Errorf("VerifyCA(other) = %v", err)
	}
	boot, err := Parse("K10" + h + "::abcdef.0123456789abcdef")
	if err != nil || !boot.Bootstrap() || boot.Password != "abcdef.0123456789abcdef" || boot.String() != "K10"+h+"::abcdef.0123456789abcdef" {
		t.Errorf("bootstrap = %+v, %v", boot, err)
	}
	if tok.Bootstrap() {
		t.Errorf("%+v is not a bootstrap token", tok)
	}
	bare, err := Parse("  mypassword\n")
	if err != nil || bare.Password != "mypassword" || bare.CAHash != "" || bare.String() != "mypassword" {
		t.Errorf("bare = %+v, %v", bare, err)
	}
	if err := bare.VerifyCA([]byte("anything")); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"K10abc::server:x", "K10" + h + "::server", "K10" + h + ":server:x", "K10" + strings.ToUpper(h) + "::a:b", ""} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestEnsureServer(t *testing.T) {
	dir := t.TempDir()
	f := Files{Token: filepath.Join(dir, "token"), NodeToken: filepath.Join(dir, "node-token"), AgentToken: filepath.Join(dir, "agent-token"), Passwd: filepath.Join(dir, "passwd")}
	ca := []byte("ca bundle")
	got, err := EnsureServer(f, ca, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Server.Password) != 32 || got.Agent.Password != got.Server.Password || got.Agent.Username != "node" {
		t.Errorf("tokens %+v", got)
	}
	data, _ := os.ReadFile(f.NodeToken) // follows the symlink
	if strings.TrimSpace(string(data)) != got.Server.String() {
		t.Errorf("node-token = %q", data)
	}
	if fi, _ := os.Stat(f.Token); fi.Mode().Perm() != 0o600 {
		t.Errorf("token mode %v", fi.Mode())
	}
	if _, err := os.Stat(f.AgentToken); !os.IsNotExist(err) {
		t.Error("agent-token written without --agent-token")
	}
	// A restart keeps the password.
	again, err := EnsureServer(f, ca, "", "")
	if err != nil || again.Server != got.Server {
		t.Errorf("restart changed token: %+v %v", again, err)
	}
	// A --token that is not the token the server has is refused, as k3s
	// refuses one its datastore was not encrypted with.
	if _, err := EnsureServer(f, ca, "another", ""); !errors.Is(err, ErrTokenChanged) {
		t.Errorf("a changed --token: err = %v", err)
	}
	if _, err := EnsureServer(f, ca, got.Server.Password, ""); err != nil {
		t.Errorf("the same --token, bare: %v", err)
	}
	// --token and --agent-token as bare passwords, on a new server.
	for _, p := range []string{f.Token, f.Passwd} {
		os.Remove(p)
	}
	withFlags, err := EnsureServer(f, ca, "pw1", "pw2")
	if err != nil {
		t.Fatal(err)
	}
	if withFlags.Server.Password != "pw1" || withFlags.Agent.Password != "pw2" {
		t.Errorf("%+v", withFlags)
	}
	at, _ := os.ReadFile(f.AgentToken)
	if strings.TrimSpace(string(at)) != "K10"+CAHash(ca)+"::node:pw2" {
		t.Errorf("agent-token = %q", at)
	}
	pw, _ := os.ReadFile(f.Passwd)
	if string(pw) != "pw1,server,server,k3s:server\npw2,node,node,k3s:agent\n" {
		t.Errorf("passwd = %q", pw)
	}
	// A full token for another CA is refused.
	if _, err := EnsureServer(f, ca, "K10"+CAHash([]byte("x"))+"::server:pw", ""); !errors.Is(err, ErrCAHash) {
		t.Errorf("err = %v", err)
	}
}

func TestBootstrap(t *testing.T) {
	a, err := GenerateBootstrap()
	if err != nil || !IsBootstrap(a) {
		t.Fatalf("%q %v", a, err)
	}
	b, _ := GenerateBootstrap()
	if a == b {
		t.Error("two bootstrap tokens are equal")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("K10" + strings.Repeat("a", 64) + "::server:pw")
	f.Add("bare")
	f.Add("K10::")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(tok.String())
		if err != nil || again != tok {
			t.Fatalf("round trip %q -> %+v -> %+v (%v)", s, tok, again, err)
		}
	})
}

func TestRotate(t *testing.T) {
	ca := []byte("ca bundle")
	for _, tc := range []struct {
		name          string
		agentToken    string
		newPassword   string
		wantAgentSame bool // the agent password follows the server's
	}{
		{"agent token from the server token", "", "newpw", true},
		{"own agent token", "agentpw", "newpw", false},
		{"random", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := Files{Token: filepath.Join(dir, "token"), NodeToken: filepath.Join(dir, "node-token"), AgentToken: filepath.Join(dir, "agent-token"), Passwd: filepath.Join(dir, "passwd")}
			old, err := EnsureServer(f, ca, "oldpw", tc.agentToken)
			if err != nil {
				t.Fatal(err)
			}
			nt, err := Rotate(f, ca, tc.newPassword, tc.agentToken != "")
			if err != nil {
				t.Fatal(err)
			}
			if tc.newPassword != "" && nt.Password != tc.newPassword || nt.Password == "oldpw" || nt.Username != "server" || nt.CAHash != CAHash(ca) {
				t.Errorf("new token %+v", nt)
			}
			data, _ := os.ReadFile(f.NodeToken) // the symlink follows the file
			if strings.TrimSpace(string(data)) != nt.String() {
				t.Errorf("node-token = %q, want %q", data, nt.String())
			}
			users, err := ReadPasswd(f.Passwd)
			if err != nil {
				t.Fatal(err)
			}
			wantAgent := old.Agent.Password
			if tc.wantAgentSame {
				wantAgent = nt.Password
			}
			if users["server"] != nt.Password || users["node"] != wantAgent {
				t.Errorf("passwd users %v; want server %s, node %s", users, nt.Password, wantAgent)
			}
			// The next start with the new token in the config keeps it;
			// with the old one it is refused.
			if _, err := EnsureServer(f, ca, nt.Password, tc.agentToken); err != nil {
				t.Errorf("restart with the new token: %v", err)
			}
			if _, err := EnsureServer(f, ca, "oldpw", tc.agentToken); !errors.Is(err, ErrTokenChanged) {
				t.Errorf("restart with the old token: %v", err)
			}
		})
	}
	if _, err := Rotate(Files{Passwd: filepath.Join(t.TempDir(), "passwd")}, ca, "x", false); err == nil {
		t.Error("Rotate without a passwd file succeeded")
	}
	dir := t.TempDir()
	f := Files{Token: filepath.Join(dir, "token"), Passwd: filepath.Join(dir, "passwd")}
	if _, err := EnsureServer(f, ca, "oldpw", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := Rotate(f, ca, "a,b", false); err == nil {
		t.Error("a password with a comma was accepted")
	}
}

// RotateWith hands the new passwd to its hook before writing anything,
// and its error stops the rotation; AdoptPasswd makes the token file
// follow a passwd taken from the cluster.
func TestRotateWithAndAdopt(t *testing.T) {
	ca := []byte("ca bundle")
	dir := t.TempDir()
	f := Files{Token: filepath.Join(dir, "token"), Passwd: filepath.Join(dir, "passwd")}
	if _, err := EnsureServer(f, ca, "oldpw", ""); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(f.Passwd)
	if _, err := RotateWith(f, ca, "newpw", false, func(old string, nt Token, passwd []byte) error {
		if old != "oldpw" || nt.Password != "newpw" || !strings.HasPrefix(string(passwd), "newpw,server,") {
			t.Errorf("hook got %q %+v %q", old, nt, passwd)
		}
		return errors.New("datastore down")
	}); err == nil || !strings.Contains(err.Error(), "datastore down") {
		t.Fatalf("RotateWith with a failing hook: %v", err)
	}
	if after, _ := os.ReadFile(f.Passwd); string(after) != string(before) {
		t.Error("a stopped rotation wrote passwd")
	}
	// Another server rotated: this one takes its passwd, then its token.
	other := filepath.Join(dir, "other-passwd")
	if err := os.WriteFile(other, []byte(passwdText("rotated", "rotated")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := AdoptPasswd(Files{Token: f.Token, Passwd: other}, ca); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(f.Token); strings.TrimSpace(string(data)) != (Token{CAHash: CAHash(ca), Username: "server", Password: "rotated"}).String() {
		t.Errorf("token after AdoptPasswd: %q", data)
	}
	if _, err := EnsureServer(Files{Token: f.Token, Passwd: other}, ca, "rotated", ""); err != nil {
		t.Errorf("a start with the cluster's new token after AdoptPasswd: %v", err)
	}
}
