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
	data, err := os.ReadFile(path)
	if err == nil {
		if p := strings.TrimSpace(string(data)); p != "" {
			return p, nil
		}
	} else if !os.IsNotExist(err) {
		return "", fmt.Errorf("node password: %w", err)
	}
	p, err := token.RandomPassword()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("node password: %w", err)
	}
	if err := atomicfile.Write(path, []byte(p+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("node password: %w", err)
	}
	return p, nil
}

// NodeIDFile holds the id --with-node-id appends to the node name ("-<id>").
const NodeIDFile = "/etc/rancher/node/id"

// NodeID reads the node's id from path, making one (8 hex digits) on the
// first start, as k3s does for --with-node-id: the name stays the same
// across restarts, and machines with one hostname get distinct nodes.
func NodeID(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(data)); id != "" {
			return id, nil
		}
	} else if !os.IsNotExist(err) {
		return "", fmt.Errorf("node id: %w", err)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	if err := atomicfile.Write(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	return id, nil
}
