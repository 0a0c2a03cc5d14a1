package agent

import (
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
