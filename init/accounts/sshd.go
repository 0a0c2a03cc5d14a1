package accounts

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"golang.org/x/crypto/ssh"
)

// Paths of the OpenSSH server.
const (
	HostKeyDir = "/var/lib/ballast/ssh"
	SSHDConfig = "/etc/ssh/sshd_config"
	SSHDBinary = "/usr/sbin/sshd"
	SFTPServer = "/usr/lib/openssh/sftp-server"
)

// hostKeyTypes are generated at first boot. RSA is left out on purpose:
// generating a 3072-bit key takes many seconds on a Pi or under QEMU TCG,
// and every current client speaks ed25519 or ECDSA.
var hostKeyTypes = []struct {
	file string
	gen  func() (crypto.Signer, error)
}{
	{"ssh_host_ed25519_key", func() (crypto.Signer, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}},
	{"ssh_host_ecdsa_key", func() (crypto.Signer, error) {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}},
}

// PrepareSSHD makes sure host keys exist under HostKeyDir (generated
// once, kept across boots on the data partition), writes sshd_config and
// creates sshd's privilege-separation directory /run/sshd. It returns the
// argv to supervise. It does not look at ballast.ssh.enabled: the caller
// decides whether to run sshd at all.
func PrepareSSHD(root string, cfg *cloudconfig.Config) (argv []string, err error) {
	if _, err := os.Stat(filepath.Join(root, SSHDBinary)); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	keys, err := ensureHostKeys(root)
	if err != nil {
		return nil, err
	}
	conf := RenderSSHDConfig(cfg, keys)
	if err := writeFile(root, SSHDConfig, []byte(conf), 0o644, 0, 0, Options{}); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	run := filepath.Join(root, "/run/sshd")
	if err := os.MkdirAll(run, 0o755); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	// sshd refuses a privilege-separation directory that others can write.
	if err := os.Chmod(run, 0o755); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	if err := os.Lchown(run, 0, 0); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	return []string{SSHDBinary, "-D", "-e", "-f", SSHDConfig}, nil
}

// ensureHostKeys generates missing host keys and returns the paths (in
// the running system) of all of them.
func ensureHostKeys(root string) ([]string, error) {
	dir := filepath.Join(root, HostKeyDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sshd host keys: %w", err)
	}
	var paths []string
	for _, kt := range hostKeyTypes {
		p := filepath.Join(dir, kt.file)
		paths = append(paths, filepath.Join(HostKeyDir, kt.file))
		if b, err := os.ReadFile(p); err == nil {
			if _, err := ssh.ParsePrivateKey(b); err == nil {
				continue
			}
			// A torn write (power cut at first boot) leaves a key sshd
			// cannot load; make a new one rather than run without.
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("sshd host key %s: %w", p, err)
		}
		k, err := kt.gen()
		if err != nil {
			return nil, fmt.Errorf("sshd host key %s: %w", kt.file, err)
		}
		block, err := ssh.MarshalPrivateKey(k, "root@ballast")
		if err != nil {
			return nil, fmt.Errorf("sshd host key %s: %w", kt.file, err)
		}
		pub, err := ssh.NewPublicKey(k.Public())
		if err != nil {
			return nil, fmt.Errorf("sshd host key %s: %w", kt.file, err)
		}
		rel := filepath.Join(HostKeyDir, kt.file)
		if err := writeFile(root, rel, pem.EncodeToMemory(block), 0o600, 0, 0, Options{}); err != nil {
			return nil, fmt.Errorf("sshd host key: %w", err)
		}
		if err := writeFile(root, rel+".pub", ssh.MarshalAuthorizedKey(pub), 0o644, 0, 0, Options{}); err != nil {
			return nil, fmt.Errorf("sshd host key: %w", err)
		}
	}
	return paths, nil
}

// RenderSSHDConfig returns sshd_config for cfg and the given host keys.
func RenderSSHDConfig(cfg *cloudconfig.Config, hostKeys []string) string {
	port := cfg.SSHPort()
	password := cfg.SSHPasswordAuth()
	yesno := map[bool]string{true: "yes", false: "no"}
	var b strings.Builder
	b.WriteString("# Written by ballast at boot from the cloud-config; edits are lost.\n")
	fmt.Fprintf(&b, "Port %d\n", port)
	for _, k := range hostKeys {
		fmt.Fprintf(&b, "HostKey %s\n", k)
	}
	b.WriteString("PermitRootLogin prohibit-password\n")
	fmt.Fprintf(&b, "PasswordAuthentication %s\n", yesno[password])
	b.WriteString("KbdInteractiveAuthentication no\n")
	// The image has no PAM configuration.
	b.WriteString("UsePAM no\n")
	b.WriteString("AuthorizedKeysFile .ssh/authorized_keys\n")
	b.WriteString("PidFile /run/sshd.pid\n")
	b.WriteString("PrintMotd no\n")
	b.WriteString("AcceptEnv none\n")
	fmt.Fprintf(&b, "Subsystem sftp %s\n", SFTPServer)
	return b.String()
}
