package certs

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newIntermediate makes a CA signed by parent (cert, key): a
// cross-signed CA as k3s's rotation scripts make, returned as the bundle
// rotate-ca takes (the new CA, then parent) and its key.
func newIntermediate(t *testing.T, parent *ca, now time.Time) (bundle, keyPEM []byte) {
	t.Helper()
	key, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	sn, _ := serial()
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: "rotated-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.cert, key.Public(), parent.key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ = encodeKey(key)
	return append(certPEM(der), parent.pem...), keyPEM
}

func loadTestCA(t *testing.T, dir, name string) *ca {
	t.Helper()
	c, err := LoadCA(filepath.Join(dir, "server", "tls", name+".crt"), filepath.Join(dir, "server", "tls", name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return c.c
}

func TestRotateCA(t *testing.T) {
	c := &clock{time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	o := opts(t, c)
	if _, err := Ensure(o); err != nil {
		t.Fatal(err)
	}
	serverCA := loadTestCA(t, o.DataDir, "server-ca")
	clientCA := loadTestCA(t, o.DataDir, "client-ca")
	bundle, key := newIntermediate(t, serverCA, c.t)
	unrelated := &ca{}
	{
		k, _ := newKey()
		sn, _ := serial()
		tmpl := &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: "other"}, NotBefore: c.t.Add(-time.Hour), NotAfter: c.t.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		unrelated.cert, _ = x509.ParseCertificate(der)
		unrelated.key, unrelated.pem = k, certPEM(der)
	}
	otherBundle, otherKey := newIntermediate(t, unrelated, c.t)
	_, clientKey := newIntermediate(t, clientCA, c.t)
	oldService, _ := os.ReadFile(filepath.Join(o.DataDir, "server", "tls", "service.key"))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	newService, _ := encodeKey(rsaKey)

	for _, tc := range []struct {
		name  string
		files map[string]CAFileData
		force bool
		want  string // in the error; "" for valid
	}{
		{"cross-signed", map[string]CAFileData{"ServerCA": {Content: bundle}, "ServerCAKey": {Content: key}}, false, ""},
		{"single certificate", map[string]CAFileData{"ServerCA": {Content: unrelated.pem}, "ServerCAKey": {Content: otherKey}}, false, "ServerCA: the new CA bundle holds a single certificate"},
		{"another root", map[string]CAFileData{"ServerCA": {Content: otherBundle}, "ServerCAKey": {Content: otherKey}}, false, "ServerCA: the new CA certificate does not verify against the current CA chain"},
		{"another root, forced", map[string]CAFileData{"ServerCA": {Content: otherBundle}, "ServerCAKey": {Content: otherKey}}, true, ""},
		{"wrong key", map[string]CAFileData{"ServerCA": {Content: bundle}, "ServerCAKey": {Content: clientKey}}, false, "ServerCA: the new CA certificate and key do not match"},
		{"wrong key, forced", map[string]CAFileData{"ServerCA": {Content: otherBundle}, "ServerCAKey": {Content: clientKey}}, true, "ServerCA: the new CA certificate and key do not match"},
		{"key alone", map[string]CAFileData{"ClientCAKey": {Content: clientKey}}, false, "ClientCAKey: the new key does not match the current CA certificate"},
		{"unknown field", map[string]CAFileData{"PasswdFile": {Content: []byte("x")}}, false, "PasswdFile: not a file rotate-ca replaces"},
		{"service key without the current one", map[string]CAFileData{"ServiceKey": {Content: newService}}, true, "ServiceKey: key 1 of the current file is not in the new key file"},
		{"service key with the current one", map[string]CAFileData{"ServiceKey": {Content: append(append([]byte{}, newService...), oldService...)}}, false, ""},
		{"service key with the current one's public half", map[string]CAFileData{"ServiceKey": {Content: append(append([]byte{}, newService...), publicPEM(t, oldService)...)}}, false, ""},
		{"service key starting with a public key", map[string]CAFileData{"ServiceKey": {Content: append(publicPEM(t, oldService), newService...)}}, false, "ServiceKey: the new key file: its first block must be the private key that signs"},
	} {
		err := ValidateCARotation(o.DataDir, tc.files, c.t, tc.force)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v; want %q", tc.name, err, tc.want)
		}
	}

	// Staged, nothing changes until the next start applies it; then the
	// leaves the new CA does not sign are issued again, with the chain.
	files := map[string]CAFileData{"ServerCA": {Content: bundle}, "ServerCAKey": {Content: key},
		"ServiceKey": {Content: append(append([]byte{}, newService...), oldService...)}}
	if err := StageCARotation(o.DataDir, files); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(o.DataDir, "server", "tls", "server-ca.crt")); !bytes.Equal(got, serverCA.pem) {
		t.Error("staging changed server-ca.crt")
	}
	// What the cluster's record gets: the staged files and the signing key.
	staged, err := StagedCAFiles(o.DataDir)
	if err != nil || len(staged) != 4 || !bytes.Equal(staged["server/tls/server-ca.crt"], bundle) || !bytes.Equal(staged["server/tls/service.current.key"], newService) {
		t.Errorf("StagedCAFiles: %d files, %v", len(staged), err)
	}
	c.t = c.t.Add(time.Minute)
	backup, applied, err := ApplyStagedCA(o.DataDir, c.t)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 3 {
		t.Errorf("applied %v; want the 3 staged files", applied)
	}
	if got, _ := os.ReadFile(filepath.Join(backup, "server-ca.crt")); !bytes.Equal(got, serverCA.pem) {
		t.Errorf("backup %s lacks the old server-ca.crt", backup)
	}
	if got, _ := os.ReadFile(filepath.Join(o.DataDir, "server", "tls", "server-ca.crt")); !bytes.Equal(got, bundle) {
		t.Error("server-ca.crt is not the new bundle")
	}
	if cur, _ := os.ReadFile(filepath.Join(o.DataDir, "server", "tls", "service.current.key")); !bytes.Equal(cur, newService) {
		t.Error("service.current.key is not the new file's first key")
	}
	if _, err := os.Stat(stagedDir(o.DataDir)); !os.IsNotExist(err) {
		t.Errorf("staged files left after applying: %v", err)
	}
	if b, a, err := ApplyStagedCA(o.DataDir, c.t); b != "" || a != nil || err != nil {
		t.Errorf("a second apply: %q %v %v; want nothing", b, a, err)
	}
	if staged, err := StagedCAFiles(o.DataDir); staged != nil || err != nil {
		t.Errorf("StagedCAFiles with nothing staged: %v %v", staged, err)
	}
	// A second backup in the same second does not replace the first.
	if again, err := BackupTLS(o.DataDir, c.t); err != nil || again == backup {
		t.Errorf("BackupTLS in the same second: %q %v (first %q)", again, err, backup)
	}
	rep, err := Ensure(o)
	if err != nil {
		t.Fatal(err)
	}
	api := filepath.Join(o.DataDir, "server", "tls", "serving-kube-apiserver.crt")
	if why := rep.Issued[api]; why != "signed by another CA" {
		t.Errorf("serving-kube-apiserver.crt after the rotation: issued %q; want \"signed by another CA\" (issued: %v)", why, rep.Issued)
	}
	leafPEM, _ := os.ReadFile(api)
	chain, err := parseBundle(leafPEM)
	if err != nil || len(chain) != 3 {
		t.Fatalf("the new serving certificate's file: %d certificates (%v); want leaf, new CA, old root", len(chain), err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	inter := x509.NewCertPool()
	inter.AddCert(chain[1])
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: c.t}); err != nil {
		t.Errorf("the new serving certificate does not verify against the old root (clients that trust it): %v", err)
	}
	if c := rep.Issued[filepath.Join(o.DataDir, "server", "tls", "client-admin.crt")]; c != "" {
		t.Errorf("client-admin.crt reissued (%s) though the client CA did not change", c)
	}
}

// publicPEM is the public half of the first key in keyPEM, PEM-encoded.
func publicPEM(t *testing.T, keyPEM []byte) []byte {
	t.Helper()
	k, err := decodeKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
