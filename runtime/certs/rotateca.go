package certs

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

// CAFile is one file `k3s certificate rotate-ca` may replace: the field
// name k3s's request body gives it, and its path under server/.
type CAFile struct{ Field, Path string }

// RotateCAFiles are the files rotate-ca takes from --path (the same
// relative paths: <path>/tls/server-ca.crt ...), each optional, as k3s
// has them.
var RotateCAFiles = []CAFile{
	{"ServerCA", "tls/server-ca.crt"}, {"ServerCAKey", "tls/server-ca.key"},
	{"ClientCA", "tls/client-ca.crt"}, {"ClientCAKey", "tls/client-ca.key"},
	{"RequestHeaderCA", "tls/request-header-ca.crt"}, {"RequestHeaderCAKey", "tls/request-header-ca.key"},
	{"ETCDServerCA", "tls/etcd/server-ca.crt"}, {"ETCDServerCAKey", "tls/etcd/server-ca.key"},
	{"ETCDPeerCA", "tls/etcd/peer-ca.crt"}, {"ETCDPeerCAKey", "tls/etcd/peer-ca.key"},
	{"ServiceKey", "tls/service.key"},
}

// CAFileData is one file of a rotate-ca request, as k3s sends it: the
// file's modification time and its contents (base64 in JSON).
type CAFileData struct {
	Timestamp time.Time
	Content   []byte
}

// stagedDir is where a validated rotate-ca request waits for the next
// start (server/tls-staged/tls/...); it appears whole, by a rename.
func stagedDir(dataDir string) string { return filepath.Join(dataDir, "server", "tls-staged") }

func rotateFile(field string) (CAFile, bool) {
	for _, f := range RotateCAFiles {
		if f.Field == field {
			return f, true
		}
	}
	return CAFile{}, false
}

// ValidateCARotation checks new CA files against the server's current
// ones under dataDir as k3s does: a new CA certificate must come as a
// bundle (the CA, then the certificates it chains to) whose first
// certificate verifies against the current CA (so that everything that
// trusts the current root goes on trusting what the new CA signs), and
// must match its key (the new one, or the current one when only the
// certificate is given); a new service-account key file must start with
// the key that signs from now on and keep every current key, so that
// issued tokens stay valid (checkServiceKey). Every problem is reported,
// each prefixed with its field.
//
// force skips only the chain check (a CA that replaces the current one
// outright, which every node must then be given); files that do not
// parse or do not match are refused even then.
func ValidateCARotation(dataDir string, files map[string]CAFileData, now time.Time, force bool) error {
	var errs []error
	for field := range files {
		if _, ok := rotateFile(field); !ok {
			errs = append(errs, fmt.Errorf("%s: not a file rotate-ca replaces", field))
		}
	}
	current := func(f CAFile) ([]byte, error) { return os.ReadFile(filepath.Join(dataDir, "server", f.Path)) }
	for _, f := range RotateCAFiles {
		if f.Field == "ServiceKey" {
			if d, ok := files[f.Field]; ok {
				if err := checkServiceKey(current, f, d.Content); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", f.Field, err))
				}
			}
			continue
		}
		if strings.HasSuffix(f.Field, "CAKey") {
			continue // with its certificate
		}
		keyFile, _ := rotateFile(f.Field + "Key")
		newCert, certGiven := files[f.Field]
		newKey, keyGiven := files[keyFile.Field]
		if !certGiven && !keyGiven {
			continue
		}
		oldCert, err := current(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: the current CA: %w", f.Field, err))
			continue
		}
		certPEM, keyPEM := oldCert, newKey.Content
		if certGiven {
			certPEM = newCert.Content
			if err := checkCAChain(oldCert, certPEM, now); err != nil && !(force && errors.Is(err, errNoChain)) {
				errs = append(errs, fmt.Errorf("%s: %w", f.Field, err))
				continue
			}
		}
		if !keyGiven {
			if keyPEM, err = current(keyFile); err != nil {
				errs = append(errs, fmt.Errorf("%s: the current key: %w", keyFile.Field, err))
				continue
			}
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			if certGiven {
				errs = append(errs, fmt.Errorf("%s: the new CA certificate and key do not match: %w", f.Field, err))
			} else {
				errs = append(errs, fmt.Errorf("%s: the new key does not match the current CA certificate (give the new certificate too): %w", keyFile.Field, err))
			}
		}
	}
	return errors.Join(errs...)
}

var errNoChain = errors.New("the new CA certificate does not verify against the current CA chain")

// checkCAChain: newPEM holds more than one certificate, and its first
// verifies against the current bundle oldPEM (its self-signed or
// key-id-less certificates as roots, the others and newPEM's later
// certificates as intermediates).
func checkCAChain(oldPEM, newPEM []byte, now time.Time) error {
	newCerts, err := parseBundle(newPEM)
	if err != nil {
		return fmt.Errorf("the new CA bundle: %w", err)
	}
	if len(newCerts) == 1 {
		return errors.New("the new CA bundle holds a single certificate: it must also hold the root or intermediate CA certificates it chains to (a cross-signed CA, or the current CA)")
	}
	oldCerts, err := parseBundle(oldPEM)
	if err != nil {
		return fmt.Errorf("the current CA bundle: %w", err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range oldCerts {
		if len(c.AuthorityKeyId) == 0 || bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId) {
			roots.AddCert(c)
		} else {
			inter.AddCert(c)
		}
	}
	for _, c := range newCerts[1:] {
		if len(c.AuthorityKeyId) > 0 {
			inter.AddCert(c)
		}
	}
	if !newCerts[0].IsCA {
		return errors.New("the new bundle's first certificate is not a CA")
	}
	if _, err := newCerts[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%w (use --force to replace it anyway; every node must then be given the new CA): %w", errNoChain, err)
	}
	return nil
}

func parseBundle(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// checkServiceKey: the new file starts with a private RSA or ECDSA key
// (the one that signs from now on), and every key of the current file is
// among its keys (private, or public as "PUBLIC KEY" blocks), so that
// every token issued so far stays valid.
func checkServiceKey(current func(CAFile) ([]byte, error), f CAFile, newPEM []byte) error {
	oldPEM, err := current(f)
	if err != nil {
		return fmt.Errorf("the current key: %w", err)
	}
	oldKeys, err := publicKeys(oldPEM)
	if err != nil {
		return fmt.Errorf("the current key file: %w", err)
	}
	if _, err := signingKey(newPEM); err != nil {
		return fmt.Errorf("the new key file: %w", err)
	}
	newKeys, err := publicKeys(newPEM)
	if err != nil {
		return fmt.Errorf("the new key file: %w", err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	for i, old := range oldKeys {
		if !slices.ContainsFunc(newKeys, func(k crypto.PublicKey) bool { return old.(equaler).Equal(k) }) {
			return fmt.Errorf("key %d of the current file is not in the new key file: append the current file to it (cat service.key >> new), or every service-account token it signed stops working", i+1)
		}
	}
	return nil
}

// signingKey is the first PEM block of a service key file, which must be
// an RSA or ECDSA private key, encoded alone (service.current.key).
func signingKey(data []byte) ([]byte, error) {
	k, err := decodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("its first block must be the private key that signs: %w", err)
	}
	encoded, err := encodeKey(k)
	if err != nil {
		return nil, fmt.Errorf("its first key: %w (kube-apiserver signs with RSA or ECDSA)", err)
	}
	return encoded, nil
}

// publicKeys reads the public half of every key in a PEM file: private
// keys and "PUBLIC KEY" blocks, in order.
func publicKeys(data []byte) ([]crypto.PublicKey, error) {
	var out []crypto.PublicKey
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			out = append(out, k)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			k, err := decodeKey(pem.EncodeToMemory(b))
			if err != nil {
				return nil, err
			}
			out = append(out, k.Public())
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM key")
	}
	return out, nil
}

// StageCARotation writes validated rotate-ca files under
// server/tls-staged, whole or not at all (written aside, then renamed
// into place); the next start applies them (ApplyStagedCA). A second
// request before that start replaces the first.
func StageCARotation(dataDir string, files map[string]CAFileData) error {
	dir := stagedDir(dataDir)
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	for field, d := range files {
		f, ok := rotateFile(field)
		if !ok {
			return fmt.Errorf("certs: %s is not a file rotate-ca replaces", field)
		}
		if err := writeAtomic(filepath.Join(tmp, f.Path), d.Content, 0o600); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(dir))
}

// UnstageCARotation drops what StageCARotation staged.
func UnstageCARotation(dataDir string) error {
	if err := os.RemoveAll(stagedDir(dataDir)); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(stagedDir(dataDir)))
}

// StagedCAFiles is what ApplyStagedCA will write, by path relative to
// the data dir (server/tls/...): the staged files, and a staged
// service.key's first key as service.current.key. Nothing staged: nil.
func StagedCAFiles(dataDir string) (map[string][]byte, error) {
	dir := stagedDir(dataDir)
	out := map[string][]byte{}
	for _, f := range RotateCAFiles {
		data, err := os.ReadFile(filepath.Join(dir, f.Path))
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			return nil, err
		}
		out[filepath.Join("server", f.Path)] = data
		if f.Field == "ServiceKey" {
			signer, err := signingKey(data)
			if err != nil {
				return nil, fmt.Errorf("certs: staged service.key: %w", err)
			}
			out["server/tls/service.current.key"] = signer
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// ApplyStagedCA moves files a rotate-ca request staged into server/tls,
// after backing server/tls up to server/tls-<unix time>: the certificates
// the new CAs do not sign are then issued again by Ensure. A new
// service.key also makes its first key the signing key
// (service.current.key). Nothing staged: nothing done. Safe to repeat
// after a crash: the staged files go only once all are in place.
func ApplyStagedCA(dataDir string, now time.Time) (backup string, applied []string, err error) {
	dir := stagedDir(dataDir)
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return "", nil, nil
	} else if err != nil {
		return "", nil, err
	}
	tlsDir := filepath.Join(dataDir, "server", "tls")
	// The signing key first: a file that cannot sign changes nothing.
	var signer []byte
	if data, err := os.ReadFile(filepath.Join(dir, "tls", "service.key")); err == nil {
		if signer, err = signingKey(data); err != nil {
			return "", nil, fmt.Errorf("certs: staged service.key: %w (remove %s to start with the current CAs)", err, dir)
		}
	} else if !os.IsNotExist(err) {
		return "", nil, err
	}
	// The backup is made once, whole (written aside, synced, renamed),
	// and named in the staged directory: a start that stopped halfway
	// through reuses it rather than backing up a half-replaced tls.
	record := filepath.Join(dir, "backup")
	if data, err := os.ReadFile(record); err == nil {
		backup = strings.TrimSpace(string(data))
	} else {
		if backup, err = BackupTLS(dataDir, now); err != nil {
			return "", nil, err
		}
		if err := atomicfile.Write(record, []byte(backup+"\n"), 0o600); err != nil {
			return "", nil, err
		}
	}
	for _, f := range RotateCAFiles {
		data, err := os.ReadFile(filepath.Join(dir, f.Path))
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			return backup, applied, err
		}
		mode := os.FileMode(0o600)
		if strings.HasSuffix(f.Path, ".crt") {
			mode = 0o644
		}
		target := filepath.Join(dataDir, "server", f.Path)
		if err := writeAtomic(target, data, mode); err != nil {
			return backup, applied, err
		}
		applied = append(applied, target)
	}
	if signer != nil {
		if err := writeAtomic(filepath.Join(tlsDir, "service.current.key"), signer, 0o600); err != nil {
			return backup, applied, err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return backup, applied, err
	}
	return backup, applied, atomicfile.SyncDir(filepath.Dir(dir))
}

// BackupTLS copies server/tls whole to server/tls-<unix time> (written
// aside, synced, renamed) and returns the copy's path; a second backup in
// the same second gets a suffix.
func BackupTLS(dataDir string, now time.Time) (string, error) {
	tlsDir := filepath.Join(dataDir, "server", "tls")
	backup := filepath.Join(dataDir, "server", "tls-"+strconv.FormatInt(now.Unix(), 10))
	for i := 1; ; i++ {
		if _, err := os.Stat(backup); os.IsNotExist(err) {
			break
		}
		backup = filepath.Join(dataDir, "server", "tls-"+strconv.FormatInt(now.Unix(), 10)+"-"+strconv.Itoa(i))
	}
	tmp := backup + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := atomicfile.CopyTree(tlsDir, tmp); err != nil {
		return "", fmt.Errorf("certs: backing up %s: %w", tlsDir, err)
	}
	if err := syncTree(tmp); err != nil {
		return "", fmt.Errorf("certs: backing up %s: %w", tlsDir, err)
	}
	if err := os.Rename(tmp, backup); err != nil {
		return "", err
	}
	return backup, atomicfile.SyncDir(filepath.Dir(backup))
}

// syncTree fsyncs every file and directory under dir.
func syncTree(dir string) error {
	return filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}
