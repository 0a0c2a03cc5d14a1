package debian

import (
	"context"
	"fmt"
	"sync"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

// InstallOptions tune Install.
type InstallOptions struct {
	// Exclude, when set, is called with each entry's final tree path
	// ("usr/share/doc/bash/copyright", after merged-/usr resolution); true
	// drops the entry.
	Exclude func(path string) bool
	// Jobs is how many packages are downloaded and unpacked at once; 0
	// means 4 (downloads wait on the network more than on the CPU).
	Jobs int
}

// Install downloads (or finds in the cache), verifies and unpacks pkgs,
// then adds their files to tree in package-name order, the way dpkg would
// lay them out, without running maintainer scripts. Regular files are
// filetree.HostFile sources pointing into the cache; hard links become
// copies of the same host file. Paths below symlinked directories are
// resolved in the tree, so after MergedUsr a package's /bin/sh lands at
// usr/bin/sh.
func (a *Archive) Install(ctx context.Context, tree *filetree.Tree, pkgs []Package, opts InstallOptions) error {
	unpacked, err := a.UnpackAll(ctx, pkgs, opts.Jobs)
	if err != nil {
		return err
	}
	for _, u := range unpacked {
		if err := AddToTree(tree, u, opts.Exclude); err != nil {
			return err
		}
	}
	return nil
}

// UnpackAll is Unpack for many packages at once; the result is in pkgs' order.
func (a *Archive) UnpackAll(ctx context.Context, pkgs []Package, jobs int) ([]*Unpacked, error) {
	if jobs <= 0 {
		jobs = 4
	}
	out := make([]*Unpacked, len(pkgs))
	errs := make([]error, len(pkgs))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(jobs, len(pkgs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				out[i], errs[i] = a.Unpack(ctx, pkgs[i])
			}
		}()
	}
	for i := range pkgs {
		work <- i
	}
	close(work)
	wg.Wait()
	// Report the first failure in package order, so the message is the
	// same from run to run.
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AddToTree adds an unpacked package's entries to tree. exclude may be nil.
func AddToTree(tree *filetree.Tree, u *Unpacked, exclude func(string) bool) error {
	pkg := u.Package.Name
	for _, e := range u.Entries {
		dst, err := tree.Resolve(e.Path)
		if err != nil {
			return fmt.Errorf("debian: package %s: %s: %w", pkg, e.Path, err)
		}
		if dst == "" || (exclude != nil && exclude(dst)) {
			continue
		}
		old := tree.Get(dst)
		if old != nil && old.Kind == filetree.Symlink && e.Kind == filetree.Dir {
			// A directory in the package where the tree has a symlink
			// (lib -> usr/lib): keep the link, as dpkg does; the
			// directory's contents follow it through Resolve.
			continue
		}
		if old != nil && old.Kind == filetree.Dir && e.Kind != filetree.Dir && len(tree.Children(dst)) > 0 {
			return fmt.Errorf("debian: package %s: %s is a %s in the package but a non-empty directory in the tree; replacing it would lose files",
				pkg, dst, e.Kind)
		}
		ent := filetree.Entry{Path: dst, Kind: e.Kind, Mode: e.Mode, UID: e.UID, GID: e.GID, Major: e.Major, Minor: e.Minor}
		switch e.Kind {
		case filetree.File:
			ent.Data = filetree.HostFile{Path: u.HostPath(e.Path), Len: e.Size}
		case filetree.Hardlink:
			// A copy: the link's target may be excluded, moved by
			// Resolve or replaced by a later package.
			ent.Kind = filetree.File
			ent.Data = filetree.HostFile{Path: u.HostPath(e.Target), Len: e.Size}
		case filetree.Symlink:
			ent.Target = e.Target
		}
		if err := tree.Add(ent); err != nil {
			return fmt.Errorf("debian: package %s: %s: %w", pkg, e.Path, err)
		}
	}
	return nil
}

// MergedUsr adds Debian's merged-/usr layout to tree: bin, sbin and lib
// (and lib64 on amd64) as symlinks into usr/. Call it before installing
// packages into a system tree so files from /bin land in /usr/bin.
func MergedUsr(tree *filetree.Tree, arch string) error {
	dirs := []string{"bin", "sbin", "lib"}
	if arch == "amd64" {
		dirs = append(dirs, "lib64")
	}
	for _, d := range dirs {
		target := "usr/" + d
		if old := tree.Get(d); old != nil {
			if old.Kind == filetree.Symlink && old.Target == target {
				continue
			}
			if old.Kind != filetree.Dir || len(tree.Children(d)) > 0 {
				return fmt.Errorf("debian: merged /usr: /%s already exists as a %s; call MergedUsr before installing packages", d, old.Kind)
			}
		}
		if tree.Get(target) == nil {
			if err := tree.AddDir(target, 0o755); err != nil {
				return fmt.Errorf("debian: merged /usr: %w", err)
			}
		}
		if err := tree.AddSymlink(d, target); err != nil {
			return fmt.Errorf("debian: merged /usr: %w", err)
		}
	}
	return nil
}
