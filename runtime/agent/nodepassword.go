package agent

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ballast-os/ballast/runtime/atomicfile"
	"github.com/ballast-os/ballast/runtime/token"
)

// NodePasswordFile is where k3s keeps the node's password: the server
// stores its hash at the first join and wants the same one ever after.
const NodePasswordFile = "/etc/rancher/node/password"

// NodePassword reads the node's password from path, making one (random,
// 0600) on the first start.
func NodePassword(path string) (string, error) {
	return readOrMake(path, "node password", 0o600, token.RandomPassword)
}

// NodeIDFile holds the id --with-node-id appends to the node name ("-<id>").
const NodeIDFile = "/etc/rancher/node/id"

// NodeID reads the node's id from path, making one (8 hex digits) on the
// first start, as k3s does for --with-node-id: the name stays the same
// across restarts, and machines with one hostname get distinct nodes.
func NodeID(path string) (string, error) {
	return readOrMake(path, "node id", 0o644, func() (string, error) {
		b := make([]byte, 4)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		return hex.EncodeToString(b), nil
	})
}

// readOrMake reads a one-line value kept in path, or makes it and writes
// it (durably, mode perm) when the file is missing or empty.
func readOrMake(path, what string, perm os.FileMode, generate func() (string, error)) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		if v := strings.TrimSpace(string(data)); v != "" {
			return v, nil
		}
	} else if !os.IsNotExist(err) {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	v, err := generate()
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if err := atomicfile.Write(path, []byte(v+"\n"), perm); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}
