package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A disk smaller than the image would cut off its end (the backup GPT,
// the data partition): refused before QEMU starts.
func TestRunRefusesDiskSmallerThanImage(t *testing.T) {
	img := filepath.Join(t.TempDir(), "ballast-x86_64.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 3<<30+1<<20); err != nil {
		t.Fatal(err)
	}
	_, _, err := runCLIStdin(t, "", "run", "--disk-size", "2", img)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "give at least 4") {
		t.Errorf("--disk-size 2 for a 3 GiB image: %v", err)
	}
}
