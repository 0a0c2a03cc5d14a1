package writefiles

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// UserLookup resolves a write_files owner ("user", "user:group", or
// numeric "uid:gid") to numeric ids.
type UserLookup interface {
	Lookup(owner string) (uid, gid int, err error)
}

// PasswdLookup resolves owners against an /etc/passwd and /etc/group pair.
type PasswdLookup struct {
	users  map[string]passwdEntry
	groups map[string]int
}

type passwdEntry struct{ uid, gid int }

// NewPasswdLookup reads <root>/etc/passwd and <root>/etc/group.
func NewPasswdLookup(root string) (*PasswdLookup, error) {
	l := &PasswdLookup{users: map[string]passwdEntry{}, groups: map[string]int{}}
	passwd := filepath.Join(root, "etc/passwd")
	b, err := os.ReadFile(passwd)
	if err != nil {
		return nil, fmt.Errorf("user lookup: %w", err)
	}
	if err := parseColonFile(passwd, b, 7, func(f []string) error {
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("bad uid/gid %q:%q", f[2], f[3])
		}
		l.users[f[0]] = passwdEntry{uid, gid}
		return nil
	}); err != nil {
		return nil, err
	}
	group := filepath.Join(root, "etc/group")
	b, err = os.ReadFile(group)
	if err != nil {
		return nil, fmt.Errorf("user lookup: %w", err)
	}
	if err := parseColonFile(group, b, 4, func(f []string) error {
		gid, err := strconv.Atoi(f[2])
		if err != nil {
			return fmt.Errorf("bad gid %q", f[2])
		}
		l.groups[f[0]] = gid
		return nil
	}); err != nil {
		return nil, err
	}
	return l, nil
}

func parseColonFile(name string, b []byte, fields int, fn func([]string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != fields {
			return fmt.Errorf("%s:%d: want %d fields, got %d", name, n, fields, len(f))
		}
		if err := fn(f); err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
	}
	return sc.Err()
}

// Lookup implements UserLookup. A user without a group gets the user's
// primary group; numeric parts are taken as they are.
func (l *PasswdLookup) Lookup(owner string) (uid, gid int, err error) {
	if owner == "" {
		return 0, 0, nil
	}
	user, group, hasGroup := strings.Cut(owner, ":")
	if n, err := strconv.Atoi(user); err == nil && n >= 0 {
		uid, gid = n, n
	} else if e, ok := l.users[user]; ok {
		uid, gid = e.uid, e.gid
	} else {
		return 0, 0, fmt.Errorf("owner %q: no user %q", owner, user)
	}
	if hasGroup {
		if n, err := strconv.Atoi(group); err == nil && n >= 0 {
			gid = n
		} else if g, ok := l.groups[group]; ok {
			gid = g
		} else {
			return 0, 0, fmt.Errorf("owner %q: no group %q", owner, group)
		}
	}
	return uid, gid, nil
}
