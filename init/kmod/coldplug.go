package kmod

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Modaliases returns the distinct MODALIAS strings of every device under
// devicesDir (/sys/devices), sorted. There is no udev in a ballast image:
// the init loads the drivers for the hardware present at boot (network
// cards above all) by handing these to modprobe, which matches them
// against modules.alias.
func Modaliases(devicesDir string) ([]string, error) {
	seen := map[string]bool{}
	err := filepath.WalkDir(devicesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// Devices come and go while we walk; a vanished entry is not an error.
			if os.IsNotExist(err) || os.IsPermission(err) {
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() != "modalias" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		if a := strings.TrimSpace(string(b)); a != "" {
			seen[a] = true
		}
		return nil
	})
	out := make([]string, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	sort.Strings(out)
	return out, err
}
