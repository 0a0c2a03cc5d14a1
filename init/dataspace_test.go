package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ballast-os/ballast/init/datapart"
)

// k3s is refused on a data partition too small for its images (the
// default raw image booted as it is had 55 MiB: the kubelet reported
// DiskPressure with the images half imported), and on a first start
// without the room to import them; a full disk on a later boot only
// warns, so the node comes back once space is freed.
func TestDataSpace(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		size, free uint64
		imported   bool
		err, warn  string
	}{
		{55 * mib, 50 * mib, false, "the data partition is 55 MiB; k3s needs at least 672 MiB", ""},
		{55 * mib, 50 * mib, true, "k3s needs at least 672 MiB", ""},
		{2900 * mib, 2800 * mib, false, "", ""},
		{672 * mib, 638 * mib, false, "", ""}, // the smallest, fresh (5% reserved for root)
		{700 * mib, 500 * mib, false, "importing k3s's images needs 544 MiB free", ""},
		{700 * mib, 150 * mib, true, "", ""},
		{2900 * mib, 100 * mib, true, "", "100 MiB free of 2900 MiB"},
		{2900 * mib, 250 * mib, true, "", "DiskPressure"},
		{2900 * mib, 0, true, "", "0 MiB free"},
	} {
		warn, err := dataSpace(tc.size, tc.free, tc.imported)
		switch {
		case tc.err == "" && err != nil, tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("size %d MiB, free %d MiB, imported %v: error %v, want %q", tc.size/mib, tc.free/mib, tc.imported, err, tc.err)
		case tc.warn == "" && warn != "", tc.warn != "" && !strings.Contains(warn, tc.warn):
			t.Errorf("size %d MiB, free %d MiB, imported %v: warning %q, want %q", tc.size/mib, tc.free/mib, tc.imported, warn, tc.warn)
		}
	}
}

// checkDataSpace reads the mounted data partition; a live boot on tmpfs
// is not checked.
func TestCheckDataSpace(t *testing.T) {
	root := t.TempDir()
	s := &system{root: root}
	if _, err := s.checkDataSpace(); err == nil || !strings.Contains(err.Error(), "free space") {
		t.Errorf("no %s: %v", datapart.MountPoint, err)
	}
	if err := os.MkdirAll(filepath.Join(root, datapart.MountPoint), 0o755); err != nil {
		t.Fatal(err)
	}
	// The test's own file system stands in for the data partition: the
	// decision is dataSpace's; here only that it is read.
	if _, err := s.checkDataSpace(); err != nil && !strings.Contains(err.Error(), "data partition") {
		t.Errorf("statfs of %s: %v", datapart.MountPoint, err)
	}
	s.data.TmpFS = true
	if warn, err := s.checkDataSpace(); warn != "" || err != nil {
		t.Errorf("tmpfs: %q, %v", warn, err)
	}
}
