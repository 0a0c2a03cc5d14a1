package certs

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// KeyPair is a certificate and key on disk, read again when the
// certificate file changes: the servers and clients of the k3s process
// itself keep working across a rotation (RotateDue) without a restart.
type KeyPair struct {
	CertFile, KeyFile string

	mu    sync.Mutex
	cert  *tls.Certificate
	mtime time.Time
	size  int64
}

// LoadKeyPair reads the pair once, so that a missing or broken one is an
// error at start rather than at the first handshake.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	kp := &KeyPair{CertFile: certFile, KeyFile: keyFile}
	if _, err := kp.Get(); err != nil {
		return nil, err
	}
	return kp, nil
}

// Get is the current pair: the one read last unless the certificate
// file's modification time or size changed since. A pair that cannot be
// read (a rotation half written) keeps the last good one.
func (kp *KeyPair) Get() (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	st, err := os.Stat(kp.CertFile)
	if err == nil && kp.cert != nil && st.ModTime().Equal(kp.mtime) && st.Size() == kp.size {
		return kp.cert, nil
	}
	if err == nil {
		var c tls.Certificate
		if c, err = tls.LoadX509KeyPair(kp.CertFile, kp.KeyFile); err == nil {
			kp.cert, kp.mtime, kp.size = &c, st.ModTime(), st.Size()
			return kp.cert, nil
		}
	}
	if kp.cert != nil {
		return kp.cert, nil
	}
	return nil, fmt.Errorf("certs: %s: %w", kp.CertFile, err)
}

// GetCertificate is Get for tls.Config.GetCertificate (a server).
func (kp *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.Get() }

// GetClientCertificate is Get for tls.Config.GetClientCertificate.
func (kp *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return kp.Get()
}
