package kubenode

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeCert(t *testing.T, path string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: filepath.Base(path)}, NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEarliestExpiry(t *testing.T) {
	dir := t.TempDir()
	if e := EarliestExpiry(dir); e.File != "" {
		t.Errorf("empty data dir: %+v", e)
	}
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	writeCert(t, filepath.Join(dir, "server/tls/server-ca.crt"), now.Add(3000*24*time.Hour))
	writeCert(t, filepath.Join(dir, "server/tls/etcd/peer-server-client.crt"), now.Add(20*24*time.Hour))
	writeCert(t, filepath.Join(dir, "agent/client-kubelet.crt"), now.Add(200*24*time.Hour))
	os.WriteFile(filepath.Join(dir, "agent/broken.crt"), []byte("not a certificate"), 0o644)
	e := EarliestExpiry(dir)
	if filepath.Base(e.File) != "peer-server-client.crt" || !e.NotAfter.Equal(now.Add(20*24*time.Hour)) {
		t.Errorf("earliest %+v", e)
	}
}
