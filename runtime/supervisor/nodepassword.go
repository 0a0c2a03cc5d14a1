package supervisor

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/ballast-os/ballast/runtime/kubeapi"
	"golang.org/x/crypto/scrypt"
)

// Node passwords, as k3s keeps them: a joining node sends the password it
// generated once (/etc/rancher/node/password) with its kubelet certificate
// requests; the first request stores a hash of it in the immutable secret
// kube-system/<node>.node-password.k3s, and later requests for the same
// node name must send the same password. Two machines with one hostname
// cannot take over each other's node.

// ErrNodePassword is a node name already held by a node with another password.
var ErrNodePassword = errors.New("node password rejected")

// nodePasswordHint is k3s's advice with the rejection.
const nodePasswordHint = "duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag"

// scrypt parameters (2^15, 8, 1: about 100 ms natively, once per node and
// server start; verified passwords are remembered in memory).
const (
	scryptN, scryptR, scryptP, scryptLen = 1 << 15, 8, 1, 32
	hashPrefix                           = "$scrypt$ln=15,r=8,p=1$"
)

func hashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	sum, err := scrypt.Key([]byte(password), salt, scryptN, scryptR, scryptP, scryptLen)
	if err != nil {
		return "", err
	}
	enc := base64.RawStdEncoding
	return hashPrefix + enc.EncodeToString(salt) + "$" + enc.EncodeToString(sum), nil
}

func verifyPassword(hash, password string) error {
	rest, ok := strings.CutPrefix(hash, hashPrefix)
	saltB64, sumB64, ok2 := strings.Cut(rest, "$")
	if !ok || !ok2 {
		return fmt.Errorf("stored hash has an unknown format")
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(saltB64)
	want, err2 := enc.DecodeString(sumB64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("stored hash is not base64")
	}
	got, err := scrypt.Key([]byte(password), salt, scryptN, scryptR, scryptP, len(want))
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrNodePassword
	}
	return nil
}

// nodePasswords checks and records node passwords in secrets.
type nodePasswords struct {
	api *kubeapi.Client

	mu       sync.Mutex
	verified map[string][32]byte // node -> sha256(password) already checked
}

func secretName(node string) string { return strings.ToLower(node) + ".node-password.k3s" }

// ensure verifies password against the node's secret, creating the secret
// when the node is new. ErrNodePassword when it does not match.
func (n *nodePasswords) ensure(ctx context.Context, node, password string) error {
	sum := sha256.Sum256([]byte(password))
	n.mu.Lock()
	if v, ok := n.verified[node]; ok && v == sum {
		n.mu.Unlock()
		return nil
	}
	n.mu.Unlock()
	path := "/api/v1/namespaces/kube-system/secrets/" + secretName(node)
	for attempt := 0; attempt < 2; attempt++ {
		var s kubeapi.Secret
		err := n.api.Do(ctx, http.MethodGet, path, "", nil, &s)
		if err == nil {
			h, ok := s.Data["hash"]
			if !ok {
				return fmt.Errorf("secret kube-system/%s has no hash", secretName(node))
			}
			if err := verifyPassword(string(h), password); err != nil {
				return err
			}
			n.remember(node, sum)
			return nil
		}
		if !errors.Is(err, kubeapi.ErrNotFound) {
			return err
		}
		h, err := hashPassword(password)
		if err != nil {
			return err
		}
		s = kubeapi.Secret{
			APIVersion: "v1", Kind: "Secret",
			Metadata:  kubeapi.ObjectMeta{Name: secretName(node), Namespace: "kube-system"},
			Immutable: true,
			Data:      map[string][]byte{"hash": []byte(h)},
		}
		err = n.api.Do(ctx, http.MethodPost, "/api/v1/namespaces/kube-system/secrets", "application/json", s, nil)
		if err == nil {
			n.remember(node, sum)
			return nil
		}
		if !errors.Is(err, kubeapi.ErrConflict) {
			return err
		}
		// Another request created it first: verify against that one.
	}
	return fmt.Errorf("secret kube-system/%s: created and gone again", secretName(node))
}

func (n *nodePasswords) remember(node string, sum [32]byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.verified == nil {
		n.verified = map[string][32]byte{}
	}
	n.verified[node] = sum
}
