package network

import (
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// SetHostname writes <root>/etc/hostname and <root>/etc/hosts and sets the
// kernel's host name. The name must be a valid DNS host name (RFC 1123
// labels); a fully qualified name sets the short name as the kernel's and
// lists both in /etc/hosts.
func SetHostname(root, name string) error {
	return setHostname(root, name, unix.Sethostname)
}

func setHostname(root, name string, set func([]byte) error) error {
	if err := CheckHostname(name); err != nil {
		return err
	}
	short, _, _ := strings.Cut(name, ".")
	if err := writeAtomic(filepath.Join(root, "etc/hostname"), []byte(short+"\n"), 0o644); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if err := writeAtomic(filepath.Join(root, "etc/hosts"), []byte(RenderHosts(name)), 0o644); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if err := set([]byte(short)); err != nil {
		return fmt.Errorf("hostname: sethostname %q: %w", short, err)
	}
	return nil
}

// RenderHosts returns /etc/hosts for the host name, Debian style.
func RenderHosts(name string) string {
	short, _, _ := strings.Cut(name, ".")
	names := short
	if name != short {
		names = name + " " + short
	}
	return "127.0.0.1\tlocalhost\n" +
		"127.0.1.1\t" + names + "\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"ff02::1\tip6-allnodes\n" +
		"ff02::2\tip6-allrouters\n"
}

// CheckHostname accepts RFC 1123 host names of up to 253 characters whose
// first label fits the kernel's 64-byte limit.
func CheckHostname(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("hostname %q: want 1 to 253 characters", name)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("hostname %q: label %q: want 1 to 63 characters", name, label)
		}
		for i, r := range label {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' && i > 0 && i < len(label)-1
			if !ok {
				return fmt.Errorf("hostname %q: character %q not allowed (letters, digits, inner hyphens)", name, r)
			}
		}
	}
	return nil
}
