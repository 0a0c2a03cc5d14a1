package kubenode

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"time"
)

// Expiry is the certificate of the runtime's data dir that expires first.
type Expiry struct {
	File     string
	NotAfter time.Time
}

// EarliestExpiry reads the certificates k3s keeps in dataDir (server/tls,
// its subdirectories, and agent/) and returns the one that expires first;
// zero when there is none. The runtime renews its leaf certificates by
// itself; what comes close to expiry is a CA, or a renewal that fails.
func EarliestExpiry(dataDir string) Expiry {
	var first Expiry
	consider := func(p string) {
		data, err := os.ReadFile(p)
		if err != nil {
			return
		}
		b, _ := pem.Decode(data)
		if b == nil || b.Type != "CERTIFICATE" {
			return
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return
		}
		if first.File == "" || c.NotAfter.Before(first.NotAfter) {
			first = Expiry{File: p, NotAfter: c.NotAfter}
		}
	}
	for _, pattern := range []string{"server/tls/*.crt", "server/tls/*/*.crt", "agent/*.crt"} {
		ms, _ := filepath.Glob(filepath.Join(dataDir, pattern))
		for _, p := range ms {
			consider(p)
		}
	}
	return first
}
