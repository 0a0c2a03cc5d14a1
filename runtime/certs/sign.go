package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// CA is a loaded certificate authority that signs joining nodes' requests
// (the supervisor's /v1-k3s/*.crt endpoints).
type CA struct{ c *ca }

// LoadCA reads a CA certificate and its key, e.g. server/tls/client-ca.crt
// and client-ca.key.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certData, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	keyData, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	cert, err := ParseCert(certData)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", certFile, err)
	}
	key, err := decodeKey(keyData)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", keyFile, err)
	}
	return &CA{&ca{cert: cert, key: key, pem: certData}}, nil
}

// Request is what a signed certificate says: subject and names, and
// whether it authenticates a client, a server, or both.
type Request struct {
	CommonName   string
	Organization []string
	Client       bool
	Server       bool
	DNSNames     []string
	IPs          []net.IP
}

func (r Request) usage() usage {
	var u usage
	if r.Client {
		u |= client
	}
	if r.Server {
		u |= server
	}
	return u
}

// Sign signs pub for LeafValidity and returns the PEM chain (the
// certificate, then the CA), as k3s writes certificate files.
func (c *CA) Sign(pub crypto.PublicKey, r Request, now time.Time) ([]byte, error) {
	return signLeaf(c.c, pub, r.CommonName, r.Organization, r.usage(), r.DNSNames, r.IPs, now)
}

// signLeaf is the one place a leaf certificate is made: for the server's
// own files (leaf.issue) and for joining nodes' requests (CA.Sign).
func signLeaf(c *ca, pub crypto.PublicKey, cn string, orgs []string, u usage, dnsNames []string, ips []net.IP, now time.Time) ([]byte, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(LeafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	if u&client != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if u&server != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, err
	}
	// Like k3s, the file holds the leaf followed by its CA.
	return append(certPEM(der), c.pem...), nil
}

// ParseCSR reads a PEM (or DER) certificate request and checks its
// signature, so that a node proves it holds the key it asks a certificate for.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("certs: PEM block %q is not a CERTIFICATE REQUEST", block.Type)
		}
		der = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certs: certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certs: certificate request signature: %w", err)
	}
	return csr, nil
}

// KeyAndCSR loads keyFile, creating it (0600) when missing or unreadable,
// and returns a PEM certificate request for it. A node keeps its keys
// across renewals; only the certificates are fetched again.
func KeyAndCSR(keyFile, commonName string) ([]byte, error) {
	var key crypto.Signer
	if data, err := os.ReadFile(keyFile); err == nil {
		key, _ = decodeKey(data)
	}
	if key == nil {
		k, err := newKey()
		if err != nil {
			return nil, err
		}
		key = k
		keyPEM, err := encodeKey(key)
		if err != nil {
			return nil, err
		}
		if err := writeAtomic(keyFile, keyPEM, 0o600); err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}, key)
	if err != nil {
		return nil, fmt.Errorf("certs: certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ErrRenew says a node's certificate file must be fetched again.
var ErrRenew = errors.New("certificate must be renewed")

// CheckLeaf says whether certFile (with keyFile beside it) is still good:
// signed by caPEM's first certificate, for commonName, with more than
// RenewWithin left. The error wraps ErrRenew with the reason.
func CheckLeaf(certFile, keyFile string, caPEM []byte, commonName string, now time.Time) error {
	caCert, err := ParseCert(caPEM)
	if err != nil {
		return fmt.Errorf("certs: CA: %w", err)
	}
	l := &leaf{cert: certFile, key: keyFile, ca: &ca{cert: caCert}, cn: commonName}
	if why := l.needsIssue(now); why != "" {
		return fmt.Errorf("%s: %w: %s", certFile, ErrRenew, why)
	}
	return nil
}

// WriteFile writes data to path atomically (temporary file, then rename)
// with mode, creating the directory; for certificate and key files.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	if err := writeAtomic(path, data, mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
