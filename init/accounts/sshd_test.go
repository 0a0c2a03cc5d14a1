package accounts

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"golang.org/x/crypto/ssh"
)

func TestPrepareSSHD(t *testing.T) {
	root := newRoot(t, true)
	if _, err := PrepareSSHD(root, nil); err == nil || !strings.Contains(err.Error(), "sshd") {
		t.Fatalf("without sshd in the image: %v", err)
	}
	os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/sbin/sshd"), nil, 0o755)

	cfg := &cloudconfig.Config{Ballast: &cloudconfig.Ballast{SSH: &cloudconfig.SSHSettings{Port: 2222, PasswordAuthentication: ptr(true)}}}
	argv, err := PrepareSSHD(root, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"}; !slices.Equal(argv, want) {
		t.Errorf("argv %q, want %q", argv, want)
	}
	conf := read(t, filepath.Join(root, "etc/ssh/sshd_config"))
	lines := strings.Split(conf, "\n")
	for _, l := range []string{
		"Port 2222",
		"HostKey /var/lib/ballast/ssh/ssh_host_ed25519_key",
		"HostKey /var/lib/ballast/ssh/ssh_host_ecdsa_key",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication yes",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"Subsystem sftp /usr/lib/openssh/sftp-server",
		"PidFile /run/sshd.pid",
		"AcceptEnv none",
	} {
		if !slices.Contains(lines, l) {
			t.Errorf("sshd_config lacks %q:\n%s", l, conf)
		}
	}
	if m, u, g := stat(t, filepath.Join(root, "run/sshd")); m != os.ModeDir|0o755 || u != 0 || g != 0 {
		t.Errorf("/run/sshd: %v %d:%d", m, u, g)
	}
	keys := map[string][]byte{}
	for _, name := range []string{"ssh_host_ed25519_key", "ssh_host_ecdsa_key"} {
		p := filepath.Join(root, "var/lib/ballast/ssh", name)
		if m, u, _ := stat(t, p); m != 0o600 || u != 0 {
			t.Errorf("%s: mode %v uid %d", name, m, u)
		}
		b := []byte(read(t, p))
		k, err := ssh.ParsePrivateKey(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(read(t, p+".pub")))
		if err != nil || !bytes.Equal(pub.Marshal(), k.PublicKey().Marshal()) {
			t.Errorf("%s.pub does not match the private key: %v", name, err)
		}
		keys[name] = b
	}
	if keys["ssh_host_ed25519_key"] == nil || !strings.HasPrefix(string(keys["ssh_host_ed25519_key"]), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Error("ed25519 key is not in OpenSSH format")
	}

	// Keys are stable across boots; defaults when the config says nothing.
	if err := Apply(root, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := PrepareSSHD(root, nil); err != nil {
		t.Fatal(err)
	}
	for name, b := range keys {
		if got := read(t, filepath.Join(root, "var/lib/ballast/ssh", name)); got != string(b) {
			t.Errorf("%s changed on the second run", name)
		}
	}
	conf = read(t, filepath.Join(root, "etc/ssh/sshd_config"))
	if !strings.Contains(conf, "\nPort 22\n") || !strings.Contains(conf, "\nPasswordAuthentication no\n") {
		t.Errorf("default sshd_config:\n%s", conf)
	}

	// A torn key file is replaced.
	os.WriteFile(filepath.Join(root, "var/lib/ballast/ssh/ssh_host_ecdsa_key"), []byte("garbage"), 0o600)
	if _, err := PrepareSSHD(root, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ssh.ParsePrivateKey([]byte(read(t, filepath.Join(root, "var/lib/ballast/ssh/ssh_host_ecdsa_key")))); err != nil {
		t.Errorf("torn key not replaced: %v", err)
	}
}
