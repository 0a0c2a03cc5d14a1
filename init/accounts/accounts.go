// Package accounts writes the node's account database (/etc/passwd,
// /etc/group, /etc/shadow, /etc/gshadow), home directories and SSH
// authorized keys from a cloud-config, and prepares the OpenSSH server.
//
// The image ships no /etc/passwd: Debian maintainer scripts never run at
// build time, so the files are generated whole at every boot. The system
// accounts are those the image's own programs need: root, sshd's
// privilege-separation user, and nobody/nogroup. Packages that create
// users in postinst (messagebus, systemd-*, _apt) are not shipped.
package accounts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
)

// Well-known ids. The static gids follow Debian's base-passwd so files
// from .debs and users' expectations (sudo, adm) agree.
const (
	ShadowGID = 42
	SSHDUID   = 100 // Debian allocates sshd dynamically from 100; we pin it
	// TcpdumpID is the uid and gid of tcpdump, to which tcpdump drops
	// its privileges (Debian's postinst makes the system user and group;
	// no postinst runs in a ballast image, so the init does).
	TcpdumpID = 101
	NobodyUID = 65534
	NogroupID = 65534
	// FirstUID is the first uid (and gid) given to cloud-config users.
	FirstUID = 1000
	nologin  = "/usr/sbin/nologin"
)

// Options are the seams where Apply touches the OS.
type Options struct {
	// Chown sets ownership; default os.Lchown.
	Chown func(path string, uid, gid int) error
}

func (o Options) chown(path string, uid, gid int) error {
	if o.Chown != nil {
		return o.Chown(path, uid, gid)
	}
	return os.Lchown(path, uid, gid)
}

// Account is one line of /etc/passwd with its shadow hash.
type Account struct {
	Name    string
	UID     int
	GID     int
	Gecos   string
	Home    string
	Shell   string
	Hash    string // shadow field; "*" for no password
	Keys    []string
	makeDir bool
}

// Group is one line of /etc/group.
type Group struct {
	Name    string
	GID     int
	Members []string
}

// DB is the generated account database.
type DB struct {
	Accounts []Account
	Groups   []Group
}

// staticGroups are created on demand with Debian's fixed gids when a user
// asks to be in them; other groups get gids from FirstUID upwards.
var staticGroups = map[string]int{
	"adm": 4, "tty": 5, "disk": 6, "kmem": 15, "dialout": 20, "cdrom": 24,
	"sudo": 27, "audio": 29, "video": 44, "plugdev": 46, "staff": 50,
	"users": 100, "input": 101,
}

// Build computes the account database from cfg without touching disk
// except to look for shells under root.
func Build(root string, cfg *cloudconfig.Config) (*DB, error) {
	rootShell := "/bin/sh"
	if exists(root, "/bin/bash") {
		rootShell = "/bin/bash"
	}
	db := &DB{
		Accounts: []Account{
			{Name: "root", UID: 0, GID: 0, Gecos: "root", Home: "/root", Shell: rootShell, Hash: "*", makeDir: true},
			{Name: "sshd", UID: SSHDUID, GID: NogroupID, Home: "/run/sshd", Shell: nologin, Hash: "*"},
			{Name: "nobody", UID: NobodyUID, GID: NogroupID, Gecos: "nobody", Home: "/nonexistent", Shell: nologin, Hash: "*"},
		},
		Groups: []Group{
			{Name: "root", GID: 0}, {Name: "tty", GID: 5}, {Name: "disk", GID: 6},
			{Name: "shadow", GID: ShadowGID}, {Name: "nogroup", GID: NogroupID},
		},
	}
	if exists(root, "/usr/bin/tcpdump") {
		db.Accounts = append(db.Accounts, Account{Name: "tcpdump", UID: TcpdumpID, GID: TcpdumpID, Home: "/nonexistent", Shell: nologin, Hash: "*"})
		db.Groups = append(db.Groups, Group{Name: "tcpdump", GID: TcpdumpID})
	}
	db.addBasePasswd(root)
	if cfg == nil {
		return db, nil
	}
	db.Accounts[0].Keys = cfg.SSHAuthorizedKeys

	usedUID := map[int]bool{}
	usedGID := map[int]bool{}
	for _, a := range db.Accounts {
		usedUID[a.UID] = true
	}
	for _, g := range db.Groups {
		usedGID[g.GID] = true
	}
	for _, u := range cfg.Users {
		if u.UID != nil {
			usedUID[*u.UID] = true
		}
	}
	nextUID := FirstUID
	seen := map[string]bool{}
	var errs []error
	for i, u := range cfg.Users {
		if err := checkName(u.Name); err != nil {
			errs = append(errs, fmt.Errorf("users[%d]: %w", i, err))
			continue
		}
		if err := checkField(u.Gecos, u.Shell, u.HomeDir, u.PasswdHash); err != nil {
			errs = append(errs, fmt.Errorf("users[%d] %s: %w", i, u.Name, err))
			continue
		}
		if u.Name == "root" {
			// Root is always there; the entry adds keys, a password, a shell.
			r := &db.Accounts[0]
			r.Keys = append(slices.Clone(r.Keys), u.SSHAuthorizedKeys...)
			if u.PasswdHash != "" {
				r.Hash = u.PasswdHash
			}
			if u.Shell != "" {
				r.Shell = u.Shell
			}
			continue
		}
		if seen[u.Name] || u.Name == "sshd" || u.Name == "nobody" || u.Name == "tcpdump" {
			errs = append(errs, fmt.Errorf("users[%d]: user %q defined twice or reserved", i, u.Name))
			continue
		}
		seen[u.Name] = true
		var uid int
		if u.UID != nil {
			uid = *u.UID
			if uid < 0 || uid == 0 || uid == SSHDUID || uid == NobodyUID {
				errs = append(errs, fmt.Errorf("users[%d] %s: uid %d is reserved", i, u.Name, uid))
				continue
			}
		} else {
			for usedUID[nextUID] {
				nextUID++
			}
			uid = nextUID
			usedUID[uid] = true
		}
		// The user's private group takes the uid's number when free.
		var gid int
		if gi := groupIndex(db.Groups, u.Name); gi >= 0 {
			gid = db.Groups[gi].GID
		} else {
			for gid = uid; usedGID[gid]; gid++ {
			}
			db.Groups = append(db.Groups, Group{Name: u.Name, GID: gid})
			usedGID[gid] = true
		}
		home := u.HomeDir
		if home == "" {
			home = "/home/" + u.Name
		}
		shell := u.Shell
		if shell == "" {
			shell = rootShell
		}
		hash := u.PasswdHash
		if hash == "" {
			// "*" and not "!": with UsePAM no, sshd treats a "!" prefix as a
			// locked account and refuses even key logins.
			hash = "*"
		}
		db.Accounts = append(db.Accounts, Account{Name: u.Name, UID: uid, GID: gid, Gecos: u.Gecos,
			Home: home, Shell: shell, Hash: hash, Keys: u.SSHAuthorizedKeys, makeDir: true})
	}
	// Supplementary groups, after all users so their private groups exist.
	for _, u := range cfg.Users {
		for _, g := range u.Groups {
			if err := checkName(g); err != nil {
				errs = append(errs, fmt.Errorf("users %s: group: %w", u.Name, err))
				continue
			}
			gi := groupIndex(db.Groups, g)
			if gi < 0 {
				gid, ok := staticGroups[g]
				if !ok || usedGID[gid] {
					gid = FirstUID
					for usedGID[gid] {
						gid++
					}
				}
				usedGID[gid] = true
				db.Groups = append(db.Groups, Group{Name: g, GID: gid})
				gi = len(db.Groups) - 1
			}
			if !slices.Contains(db.Groups[gi].Members, u.Name) {
				db.Groups[gi].Members = append(db.Groups[gi].Members, u.Name)
			}
		}
	}
	sort.SliceStable(db.Accounts, func(i, j int) bool { return db.Accounts[i].UID < db.Accounts[j].UID })
	sort.SliceStable(db.Groups, func(i, j int) bool { return db.Groups[i].GID < db.Groups[j].GID })
	return db, errors.Join(errs...)
}

func groupIndex(gs []Group, name string) int {
	return slices.IndexFunc(gs, func(g Group) bool { return g.Name == name })
}

// checkName accepts the names useradd accepts by default on Debian.
func checkName(n string) error {
	if n == "" || len(n) > 32 {
		return fmt.Errorf("name %q: want 1 to 32 characters", n)
	}
	for i, r := range n {
		ok := r >= 'a' && r <= 'z' || r == '_' || i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.' || r >= 'A' && r <= 'Z') || i == 0 && r >= 'A' && r <= 'Z'
		if !ok && !(i == len(n)-1 && r == '$') {
			return fmt.Errorf("name %q: character %q not allowed", n, r)
		}
	}
	return nil
}

func checkField(fields ...string) error {
	for _, f := range fields {
		if strings.ContainsAny(f, ":\n\r") {
			return fmt.Errorf("field %q contains ':' or a newline", f)
		}
	}
	return nil
}

func exists(root, p string) bool {
	_, err := os.Stat(filepath.Join(root, p))
	return err == nil
}

// Render returns the contents of /etc/passwd, /etc/group, /etc/shadow and
// /etc/gshadow.
func (db *DB) Render() (passwd, group, shadow, gshadow string) {
	var p, g, s, gs strings.Builder
	for _, a := range db.Accounts {
		fmt.Fprintf(&p, "%s:x:%d:%d:%s:%s:%s\n", a.Name, a.UID, a.GID, a.Gecos, a.Home, a.Shell)
		// Empty last-change field: password ageing off (0 would force a change).
		fmt.Fprintf(&s, "%s:%s:::::::\n", a.Name, a.Hash)
	}
	for _, gr := range db.Groups {
		m := strings.Join(gr.Members, ",")
		fmt.Fprintf(&g, "%s:x:%d:%s\n", gr.Name, gr.GID, m)
		fmt.Fprintf(&gs, "%s:*::%s\n", gr.Name, m)
	}
	return p.String(), g.String(), s.String(), gs.String()
}

// Apply writes the account files under root, creates home directories,
// writes authorized_keys, /etc/shells and /etc/profile.d/ballast.sh. It
// carries on past a bad user and returns every error joined.
func Apply(root string, cfg *cloudconfig.Config, opts Options) error {
	db, buildErr := Build(root, cfg)
	errs := []error{buildErr}
	passwd, group, shadow, gshadow := db.Render()
	for _, f := range []struct {
		path string
		data string
		mode fs.FileMode
		gid  int
	}{
		{"/etc/passwd", passwd, 0o644, 0},
		{"/etc/group", group, 0o644, 0},
		{"/etc/shadow", shadow, 0o640, ShadowGID},
		{"/etc/gshadow", gshadow, 0o640, ShadowGID},
		{"/etc/shells", renderShells(root), 0o644, 0},
		{"/etc/profile.d/ballast.sh", profile, 0o644, 0},
	} {
		if err := writeFile(root, f.path, []byte(f.data), f.mode, 0, f.gid, opts); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range db.Accounts {
		if !a.makeDir {
			continue
		}
		if err := setupHome(root, a, opts); err != nil {
			errs = append(errs, fmt.Errorf("user %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// profile is sourced by login shells (Debian's /etc/profile reads
// /etc/profile.d/*.sh).
const profile = `# Written by ballast at boot.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
KUBECONFIG=/etc/rancher/k3s/k3s.yaml
export PATH KUBECONFIG
`

func renderShells(root string) string {
	var b strings.Builder
	b.WriteString("# /etc/shells: valid login shells (written by ballast)\n")
	for _, s := range []string{"/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash", "/bin/dash", "/usr/bin/dash"} {
		if s == "/bin/sh" || exists(root, s) {
			b.WriteString(s + "\n")
		}
	}
	return b.String()
}

// setupHome creates the home directory (0700, owned by the user) if
// absent, fixes the ownership of an existing one, and writes
// ~/.ssh/authorized_keys from the config: the config is the source of
// truth, so keys removed from it stop working at the next boot.
func setupHome(root string, a Account, opts Options) error {
	home := filepath.Join(root, a.Home)
	if err := os.MkdirAll(filepath.Dir(home), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(home, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	} else if err == nil {
		if err := os.Chmod(home, 0o700); err != nil {
			return err
		}
	}
	if err := opts.chown(home, a.UID, a.GID); err != nil {
		return err
	}
	// The home directory is the user's: ~/.ssh and what is in it may be
	// links they made. Everything below goes through an os.Root on the
	// home, which refuses to follow a link out of it, and ~/.ssh must be a
	// real directory: as root, following ~/.ssh -> /root/.ssh would hand
	// the user root's authorized_keys.
	r, err := os.OpenRoot(home)
	if err != nil {
		return err
	}
	defer r.Close()
	if len(a.Keys) == 0 {
		// Remove keys we wrote for a config that no longer has any.
		if err := r.Remove(".ssh/authorized_keys"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := r.Mkdir(".ssh", 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if fi, err := r.Lstat(".ssh"); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s/.ssh is not a directory (%s): not following it as root; authorized_keys not written", a.Home, fi.Mode().Type())
	}
	if err := r.Chmod(".ssh", 0o700); err != nil {
		return err
	}
	if opts.Chown != nil {
		err = opts.Chown(filepath.Join(home, ".ssh"), a.UID, a.GID)
	} else {
		err = r.Lchown(".ssh", a.UID, a.GID)
	}
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, k := range a.Keys {
		k = strings.TrimSpace(k)
		if k == "" || strings.ContainsAny(k, "\n\r") {
			return fmt.Errorf("ssh key %q: empty or more than one line", k)
		}
		b.WriteString(k + "\n")
	}
	tmp := fmt.Sprintf(".ssh/.authorized_keys.%d.tmp", os.Getpid())
	f, err := r.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer r.Remove(tmp)
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil && opts.Chown != nil {
		err = opts.Chown(filepath.Join(home, tmp), a.UID, a.GID)
	} else if err == nil {
		err = f.Chown(a.UID, a.GID)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Rename(tmp, ".ssh/authorized_keys")
	}
	if err != nil {
		return fmt.Errorf("%s/.ssh/authorized_keys: %w", a.Home, err)
	}
	return nil
}

// writeFile writes root+p atomically with the given mode and owner.
func writeFile(root, p string, data []byte, mode fs.FileMode, uid, gid int, opts Options) error {
	dst := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := opts.chown(tmp.Name(), uid, gid); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
