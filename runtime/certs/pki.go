// Package certs lays out a k3s server's PKI under server/tls: three
// self-signed ECDSA P-256 CAs (client, server, request-header) and the etcd
// CAs, the service-account key, a client certificate per component, serving
// certificates, and the kubeconfigs that use them.
//
// Leaf certificates last 365 days; Ensure reissues any that expire within
// 120 days (k3s's window), were signed by another CA, or lack a SAN the
// node now needs. Nothing renews a node that never restarts: callers must
// run Ensure again (restart) before the window closes.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

const (
	// LeafValidity is how long component certificates last.
	LeafValidity = 365 * 24 * time.Hour
	// CAValidity is how long the self-signed CAs last (k3s: 10 years).
	CAValidity = 3650 * 24 * time.Hour
	// RenewWithin is the window before expiry in which Ensure reissues.
	RenewWithin = 120 * 24 * time.Hour
)

// usage of a leaf certificate.
type usage int

const (
	client usage = 1 << iota
	server
)

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// ca is a loaded CA.
type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	}
	return nil, fmt.Errorf("unsupported key type %T", k)
}

func decodeKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported key type %T", k)
		}
		return s, nil
	}
	return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
}

// ParseCert reads the first certificate of a PEM file.
func ParseCert(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no CERTIFICATE PEM block")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, mode)
}

// loadOrCreateCA loads certFile/keyFile or creates a self-signed CA named
// "<name>@<unix time>" as k3s does. created reports a new CA.
//
// A CA that is missing, empty or unreadable on either side is torn (a power
// cut while it was first written, before writes were synced). With nothing
// issued yet (leavesIssued false) it is made afresh: no certificate, token
// or agent can know the old one. Once leaves exist it is never replaced
// silently: they, and every joined node, trust it.
func loadOrCreateCA(certFile, keyFile, name string, now time.Time, leavesIssued bool) (c *ca, created bool, err error) {
	certData, errC := os.ReadFile(certFile)
	keyData, errK := os.ReadFile(keyFile)
	for _, e := range []error{errC, errK} {
		if e != nil && !os.IsNotExist(e) {
			return nil, false, e
		}
	}
	var bad []string
	var oldCert *x509.Certificate
	var oldKey crypto.Signer
	if errC == nil {
		if oldCert, err = ParseCert(certData); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", certFile, err))
		}
	} else {
		bad = append(bad, certFile+" is missing")
	}
	if errK == nil {
		if oldKey, err = decodeKey(keyData); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", keyFile, err))
		}
	} else {
		bad = append(bad, keyFile+" is missing")
	}
	switch {
	case len(bad) == 0:
		return &ca{cert: oldCert, key: oldKey, pem: certData}, false, nil
	case errC != nil && errK != nil:
		// Neither exists: the first start.
	case leavesIssued:
		return nil, false, fmt.Errorf("%s; certificates signed by this CA exist, so it is not replaced: restore both files from a backup (k3s certificate rotate keeps one under server/tls-<time>)", strings.Join(bad, "; "))
	}
	key, err := newKey()
	if err != nil {
		return nil, false, err
	}
	sn, err := serial()
	if err != nil {
		return nil, false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", name, now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, false, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, false, err
	}
	if err := writeAtomic(keyFile, keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	p := certPEM(der)
	if err := writeAtomic(certFile, p, 0o644); err != nil {
		return nil, false, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{cert: cert, key: key, pem: p}, true, nil
}

// leaf describes one certificate signed by a CA.
type leaf struct {
	service  string // the name `k3s certificate rotate --service` uses
	cert     string // path
	key      string // path
	ca       *ca
	cn       string
	orgs     []string
	usage    usage
	dnsNames []string
	ips      []net.IP
}

// needsIssue says why an existing certificate must be reissued ("" if not).
func (l *leaf) needsIssue(now time.Time) string {
	data, err := os.ReadFile(l.cert)
	if err != nil {
		return "missing"
	}
	cert, err := ParseCert(data)
	if err != nil {
		return "unreadable"
	}
	if _, err := os.Stat(l.key); err != nil {
		return "key missing"
	}
	if err := cert.CheckSignatureFrom(l.ca.cert); err != nil {
		return "signed by another CA"
	}
	if cert.NotAfter.Sub(now) < RenewWithin {
		return fmt.Sprintf("expires %s, within %d days", cert.NotAfter.UTC().Format(time.RFC3339), int(RenewWithin.Hours()/24))
	}
	if cert.Subject.CommonName != l.cn {
		return "subject changed"
	}
	have := map[string]bool{}
	for _, d := range cert.DNSNames {
		have[d] = true
	}
	for _, ip := range cert.IPAddresses {
		have[ip.String()] = true
	}
	for _, d := range l.dnsNames {
		if !have[d] {
			return "missing SAN " + d
		}
	}
	for _, ip := range l.ips {
		if !have[ip.String()] {
			return "missing SAN " + ip.String()
		}
	}
	return ""
}

// issue signs a new certificate, reusing the key on disk when readable.
func (l *leaf) issue(now time.Time) error {
	var key crypto.Signer
	if data, err := os.ReadFile(l.key); err == nil {
		key, _ = decodeKey(data)
	}
	if key == nil {
		k, err := newKey()
		if err != nil {
			return err
		}
		key = k
		keyPEM, err := encodeKey(key)
		if err != nil {
			return err
		}
		if err := writeAtomic(l.key, keyPEM, 0o600); err != nil {
			return err
		}
	}
	chain, err := signLeaf(l.ca, key.Public(), l.cn, l.orgs, l.usage, l.dnsNames, l.ips, now)
	if err != nil {
		return err
	}
	return writeAtomic(l.cert, chain, 0o644)
}

// ensureServiceKey creates the RSA service-account signing key.
func ensureServiceKey(keyFile, currentFile string) (bool, error) {
	data, err := os.ReadFile(keyFile)
	created := false
	if os.IsNotExist(err) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return false, err
		}
		data, _ = encodeKey(k)
		if err := writeAtomic(keyFile, data, 0o600); err != nil {
			return false, err
		}
		created = true
	} else if err != nil {
		return false, err
	} else if _, err := decodeKey(data); err != nil {
		return false, fmt.Errorf("%s: %w", keyFile, err)
	}
	// service.current.key is the key that signs; service.key may later
	// hold older public keys too, so that tokens stay valid across rotation.
	if _, err := os.Stat(currentFile); os.IsNotExist(err) || created {
		if err := writeAtomic(currentFile, data, 0o600); err != nil {
			return false, err
		}
	}
	return created, nil
}
