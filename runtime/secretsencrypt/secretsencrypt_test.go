package secretsencrypt

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
)

func TestEnsureAndStatus(t *testing.T) {
	p := filepath.Join(t.TempDir(), "encryption-config.json")
	var out bytes.Buffer
	status := func() error {
		// A server with no agent: the stage lives in the state file only.
		c := &Controller{ConfigPath: p, StatePath: filepath.Join(filepath.Dir(p), "encryption-state.json")}
		st, err := c.Status(context.Background())
		if err != nil {
			return err
		}
		return WriteStatus(&out, st)
	}
	if err := status(); err != nil || out.String() != "Encryption Status: Disabled, no configuration file found\n" {
		t.Errorf("no config: %v %q", err, out.String())
	}
	wrote, err := Ensure(p, "aescbc")
	if err != nil || !wrote {
		t.Fatalf("Ensure: %v %v", wrote, err)
	}
	first, _ := os.ReadFile(p)
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v: the key file must be the owner's only", st.Mode().Perm())
	}
	c, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	ps := c.Resources[0].Providers
	if c.Resources[0].Resources[0] != "secrets" || ps[0].AESCBC == nil || ps[0].AESCBC.Keys[0].Name != "aescbckey" || ps[1].Identity == nil {
		t.Errorf("config %+v", c)
	}
	if key, err := base64.StdEncoding.DecodeString(ps[0].AESCBC.Keys[0].Secret); err != nil || len(key) != 32 {
		t.Errorf("key: %d bytes, %v", len(key), err)
	}
	// Kept as it is on the next start (or as a joining server received it).
	if wrote, err := Ensure(p, "secretbox"); err != nil || wrote {
		t.Errorf("second Ensure: %v %v", wrote, err)
	}
	if again, _ := os.ReadFile(p); !bytes.Equal(again, first) {
		t.Error("the config changed on the second start: Secrets written with the first key would be lost")
	}
	out.Reset()
	if err := status(); err != nil {
		t.Fatal(err)
	}
	want := `Encryption Status: Enabled
Current Rotation Stage: start
Server Encryption Hashes: All hashes match

Active  Key Type  Name
------  --------  ----
 *      AES-CBC   aescbckey
`
	if out.String() != want {
		t.Errorf("status:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestSecretboxAndBadInput(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sb.json")
	if _, err := Ensure(p, "secretbox"); err != nil {
		t.Fatal(err)
	}
	if c, err := Read(p); err != nil || c.Resources[0].Providers[0].Secretbox == nil || c.Resources[0].Providers[0].Secretbox.Keys[0].Name != "secretboxkey" {
		t.Errorf("secretbox config: %+v %v", c, err)
	}
	if _, err := Ensure(filepath.Join(dir, "x.json"), "kms"); err == nil {
		t.Error("provider kms accepted")
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"kind":"Other"}`), 0o600)
	if _, err := Ensure(bad, "aescbc"); err == nil {
		t.Error("a broken existing config was accepted at start")
	}
}
