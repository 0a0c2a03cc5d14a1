package mounts

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// UnmountUnder unmounts every mount at or below each prefix, in the
// reverse of mount order (a mount always comes after its parent).
// A busy mount is detached lazily (MNT_DETACH) so its file system is still
// cleanly unmounted once the last user goes away. It returns every error
// met, joined.
func UnmountUnder(mnt Mounter, infos []Info, prefixes ...string) error {
	var targets []string
	for _, in := range infos {
		for _, p := range prefixes {
			if in.Target == p || strings.HasPrefix(in.Target, strings.TrimSuffix(p, "/")+"/") {
				targets = append(targets, in.Target)
				break
			}
		}
	}
	slices.Reverse(targets)
	var errs []error
	for _, t := range targets {
		if err := mnt.Unmount(t, 0); err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				continue // already gone with a parent
			}
			if lerr := mnt.Unmount(t, unix.MNT_DETACH); lerr != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w (lazy: %v)", t, err, lerr))
			}
		}
	}
	return errors.Join(errs...)
}
