package accounts

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/init/writefiles"
)

func ptr[T any](v T) *T { return &v }

func newRoot(t *testing.T, withBash bool) string {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	os.WriteFile(filepath.Join(root, "usr/bin/sh"), nil, 0o755)
	if withBash {
		os.WriteFile(filepath.Join(root, "usr/bin/bash"), nil, 0o755)
	}
	return root
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func stat(t *testing.T, p string) (os.FileMode, uint32, uint32) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), st.Uid, st.Gid
}

func testConfig() *cloudconfig.Config {
	return &cloudconfig.Config{
		SSHAuthorizedKeys: []string{"ssh-ed25519 AAAArootkey root@laptop"},
		Users: []cloudconfig.User{
			{Name: "alice", Gecos: "Alice", Groups: []string{"sudo", "ops"}, SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAalice a@x", " ssh-rsa AAAAalice2 a@y "}, PasswdHash: "$6$salt$hash"},
			{Name: "bob", UID: ptr(2000), Shell: "/bin/sh", HomeDir: "/srv/bob", Groups: []string{"ops"}},
			{Name: "carol"},
			{Name: "root", SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAroot2 second"}},
		},
	}
}

func TestApplyFiles(t *testing.T) {
	root := newRoot(t, true)
	if err := Apply(root, testConfig(), Options{}); err != nil {
		t.Fatal(err)
	}
	wantPasswd := `root:x:0:0:root:/root:/bin/bash
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/bash
carol:x:1001:1001::/home/carol:/bin/bash
bob:x:2000:2000::/srv/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`
	if got := read(t, filepath.Join(root, "etc/passwd")); got != wantPasswd {
		t.Errorf("passwd:\n%s\nwant:\n%s", got, wantPasswd)
	}
	wantGroup := `root:x:0:
tty:x:5:
disk:x:6:
sudo:x:27:alice
shadow:x:42:
alice:x:1000:
carol:x:1001:
ops:x:1002:alice,bob
bob:x:2000:
nogroup:x:65534:
`
	if got := read(t, filepath.Join(root, "etc/group")); got != wantGroup {
		t.Errorf("group:\n%s\nwant:\n%s", got, wantGroup)
	}
	shadow := read(t, filepath.Join(root, "etc/shadow"))
	for _, l := range []string{"root:*:::::::\n", "alice:$6$salt$hash:::::::\n", "carol:*:::::::\n", "sshd:*:::::::\n"} {
		if !strings.Contains(shadow, l) {
			t.Errorf("shadow lacks %q:\n%s", l, shadow)
		}
	}
	if gs := read(t, filepath.Join(root, "etc/gshadow")); !strings.Contains(gs, "ops:*::alice,bob\n") {
		t.Errorf("gshadow:\n%s", gs)
	}
	for p, want := range map[string][3]uint32{
		"etc/passwd": {0o644, 0, 0}, "etc/group": {0o644, 0, 0},
		"etc/shadow": {0o640, 0, ShadowGID}, "etc/gshadow": {0o640, 0, ShadowGID},
		"home/alice": {uint32(os.ModeDir | 0o700), 1000, 1000}, "home/alice/.ssh": {uint32(os.ModeDir | 0o700), 1000, 1000},
		"home/alice/.ssh/authorized_keys": {0o600, 1000, 1000},
		"srv/bob":                         {uint32(os.ModeDir | 0o700), 2000, 2000},
		"root":                            {uint32(os.ModeDir | 0o700), 0, 0},
		"root/.ssh/authorized_keys":       {0o600, 0, 0},
		"etc/profile.d/ballast.sh":        {0o644, 0, 0},
	} {
		m, u, g := stat(t, filepath.Join(root, p))
		if uint32(m) != want[0] || u != want[1] || g != want[2] {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", p, m, u, g, os.FileMode(want[0]), want[1], want[2])
		}
	}
	if got, want := read(t, filepath.Join(root, "root/.ssh/authorized_keys")), "ssh-ed25519 AAAArootkey root@laptop\nssh-ed25519 AAAAroot2 second\n"; got != want {
		t.Errorf("root keys %q, want %q", got, want)
	}
	if got, want := read(t, filepath.Join(root, "home/alice/.ssh/authorized_keys")), "ssh-ed25519 AAAAalice a@x\nssh-rsa AAAAalice2 a@y\n"; got != want {
		t.Errorf("alice keys %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(root, "home/carol/.ssh/authorized_keys")); err == nil {
		t.Error("carol has authorized_keys without keys")
	}
	prof := read(t, filepath.Join(root, "etc/profile.d/ballast.sh"))
	for _, l := range []string{"PATH=/usr/local/sbin:/usr/local/bin:", "KUBECONFIG=/etc/rancher/k3s/k3s.yaml\n", "export PATH KUBECONFIG\n"} {
		if !strings.Contains(prof, l) {
			t.Errorf("profile lacks %q", l)
		}
	}
	if got := read(t, filepath.Join(root, "etc/shells")); !strings.Contains(got, "\n/bin/sh\n") || !strings.Contains(got, "\n/bin/bash\n") || strings.Contains(got, "dash") {
		t.Errorf("shells:\n%s", got)
	}

	// The generated files are what writefiles resolves owners against.
	l, err := writefiles.NewPasswdLookup(root)
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid, err := l.Lookup("bob:ops"); err != nil || uid != 2000 || gid != 1002 {
		t.Errorf("bob:ops = %d:%d %v", uid, gid, err)
	}

	// Keys removed from the config stop working at the next Apply.
	cfg := testConfig()
	cfg.Users[0].SSHAuthorizedKeys = nil
	if err := Apply(root, cfg, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "home/alice/.ssh/authorized_keys")); err == nil {
		t.Error("alice's authorized_keys kept after her keys were removed")
	}
}

func TestRootShellWithoutBash(t *testing.T) {
	root := newRoot(t, false)
	if err := Apply(root, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(root, "etc/passwd")); !strings.HasPrefix(got, "root:x:0:0:root:/root:/bin/sh\n") {
		t.Errorf("passwd:\n%s", got)
	}
}

func TestBadUsers(t *testing.T) {
	root := newRoot(t, true)
	cfg := &cloudconfig.Config{Users: []cloudconfig.User{
		{Name: "ok"},
		{Name: "bad:name"},
		{Name: "ok"},
		{Name: "evil", Gecos: "x\nroot2:x:0:0::/:/bin/sh"},
		{Name: "zero", UID: ptr(0)},
	}}
	err := Apply(root, cfg, Options{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"users[1]", "users[2]", "users[3] evil", "users[4] zero"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	passwd := read(t, filepath.Join(root, "etc/passwd"))
	if !strings.Contains(passwd, "\nok:x:1000:1000:") || strings.Contains(passwd, "root2") || strings.Contains(passwd, "zero") {
		t.Errorf("passwd:\n%s", passwd)
	}
}

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"alice", "a-b.c_d", "Bad", "x$", ":", "1abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkName(s) == nil && strings.ContainsAny(s, ":\n,/ ") {
			t.Errorf("checkName accepted %q", s)
		}
	})
}

func TestBasePasswdEntriesAdded(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/share/base-passwd"), 0o755)
	os.WriteFile(filepath.Join(root, passwdMaster), []byte("root:*:0:0:root:/root:/bin/sh\ndaemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nbroken:line\n"), 0o644)
	os.WriteFile(filepath.Join(root, groupMaster), []byte("root:*:0:\ndaemon:*:1:\nnogroup:*:65534:\nsudo:*:27:\n"), 0o644)
	db, err := Build(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	var users, groups []string
	for _, a := range db.Accounts {
		users = append(users, fmt.Sprintf("%s:%d", a.Name, a.UID))
	}
	for _, g := range db.Groups {
		groups = append(groups, fmt.Sprintf("%s:%d", g.Name, g.GID))
	}
	u, g := strings.Join(users, ","), strings.Join(groups, ",")
	if !strings.Contains(u, "daemon:1") || strings.Count(u, "root:") != 1 || strings.Contains(u, "broken") {
		t.Errorf("accounts %s", u)
	}
	if !strings.Contains(g, "daemon:1") || !strings.Contains(g, "sudo:27") || strings.Count(g, "nogroup:") != 1 {
		t.Errorf("groups %s", g)
	}
}

// A user's ~/.ssh that is a link (here to root's) is not followed as root:
// root's authorized_keys stays root's, and alice gets an error, not keys
// written through the link.
func TestSSHDirSymlinkNotFollowed(t *testing.T) {
	root := newRoot(t, true)
	if err := Apply(root, testConfig(), Options{}); err != nil {
		t.Fatal(err)
	}
	rootKeys := read(t, filepath.Join(root, "root/.ssh/authorized_keys"))
	aliceSSH := filepath.Join(root, "home/alice/.ssh")
	if err := os.RemoveAll(aliceSSH); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "root/.ssh"), aliceSSH); err != nil {
		t.Fatal(err)
	}
	err := Apply(root, testConfig(), Options{})
	if err == nil || !strings.Contains(err.Error(), "not following it as root") {
		t.Errorf("Apply with ~alice/.ssh a link: %v", err)
	}
	if got := read(t, filepath.Join(root, "root/.ssh/authorized_keys")); got != rootKeys {
		t.Errorf("root's authorized_keys changed through alice's link:\n%s", got)
	}
	if fi, err := os.Stat(filepath.Join(root, "root/.ssh")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("root's .ssh: %v %v", fi, err)
	}
}

// tcpdump drops its privileges to the tcpdump user: an image with
// tcpdump gets the system user and group Debian's postinst would make.
func TestTcpdumpUser(t *testing.T) {
	root := newRoot(t, true)
	if err := Apply(root, nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(read(t, filepath.Join(root, "etc/passwd")), "tcpdump") {
		t.Error("a tcpdump user without tcpdump")
	}
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/bin/tcpdump"), nil, 0o755)
	if err := Apply(root, &cloudconfig.Config{Users: []cloudconfig.User{{Name: "alice"}}}, Options{}); err != nil {
		t.Fatal(err)
	}
	passwd, group := read(t, filepath.Join(root, "etc/passwd")), read(t, filepath.Join(root, "etc/group"))
	if !strings.Contains(passwd, "\ntcpdump:x:101:101::/nonexistent:/usr/sbin/nologin\n") || !strings.Contains(group, "\ntcpdump:x:101:") {
		t.Errorf("passwd:\n%s\ngroup:\n%s", passwd, group)
	}
	if !strings.Contains(passwd, "\nalice:x:1000:1000:") {
		t.Errorf("alice:\n%s", passwd)
	}
	if err := Apply(root, &cloudconfig.Config{Users: []cloudconfig.User{{Name: "tcpdump"}}}, Options{}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("a cloud-config user named tcpdump: %v", err)
	}
}
