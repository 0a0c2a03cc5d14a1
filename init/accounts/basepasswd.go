package accounts

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Debian's base-passwd ships the system users and groups every Debian
// package may expect (daemon, bin, adm, sudo, www-data, ...) as master
// files; its postinst copies them to /etc. No maintainer script runs in a
// ballast image, so the init adds them itself, after its own entries.
const (
	passwdMaster = "usr/share/base-passwd/passwd.master"
	groupMaster  = "usr/share/base-passwd/group.master"
)

// addBasePasswd appends the master files' entries whose name and id are
// both still free. Absent or unreadable files add nothing.
func (db *DB) addBasePasswd(root string) {
	names, ids := map[string]bool{}, map[int]bool{}
	for _, a := range db.Accounts {
		names[a.Name], ids[a.UID] = true, true
	}
	for _, f := range masterLines(root, passwdMaster, 7) {
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || names[f[0]] || ids[uid] {
			continue
		}
		names[f[0]], ids[uid] = true, true
		db.Accounts = append(db.Accounts, Account{Name: f[0], UID: uid, GID: gid, Gecos: f[4], Home: f[5], Shell: f[6], Hash: "*"})
	}
	gnames, gids := map[string]bool{}, map[int]bool{}
	for _, g := range db.Groups {
		gnames[g.Name], gids[g.GID] = true, true
	}
	for _, f := range masterLines(root, groupMaster, 4) {
		gid, err := strconv.Atoi(f[2])
		if err != nil || gnames[f[0]] || gids[gid] {
			continue
		}
		gnames[f[0]], gids[gid] = true, true
		db.Groups = append(db.Groups, Group{Name: f[0], GID: gid})
	}
}

// masterLines returns the colon-separated fields of each line with
// exactly n fields.
func masterLines(root, rel string, n int) [][]string {
	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return nil
	}
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if f := strings.Split(sc.Text(), ":"); len(f) == n {
			out = append(out, f)
		}
	}
	return out
}
