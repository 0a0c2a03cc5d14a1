package imageimport

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestArchiveNames(t *testing.T) {
	for name, want := range map[string]bool{
		"pause.tar": true, "x.tar.gz": true, "x.tgz": true, "x.tar.zst": true, "x.tzst": true,
		"x.txt": false, "x.tar.bak": false, "tar": false,
	} {
		if Archive(name) != want {
			t.Errorf("Archive(%q) = %v", name, !want)
		}
	}
}

// scan finds new and changed archives (through symlinks, as the init
// links the image's archives in) and skips what was imported unchanged.
func TestScanAndState(t *testing.T) {
	dir := t.TempDir()
	shipped := filepath.Join(t.TempDir(), "coredns.tar")
	os.WriteFile(shipped, []byte("archive"), 0o644)
	os.Symlink(shipped, filepath.Join(dir, "coredns.tar"))
	os.WriteFile(filepath.Join(dir, "pause.tar"), []byte("p"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("n"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub.tar"), 0o755)

	got := scan(dir, map[string]stamp{})
	want := []string{filepath.Join(dir, "coredns.tar"), filepath.Join(dir, "pause.tar")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("scan = %q; want %q", got, want)
	}
	seen := map[string]stamp{}
	for _, p := range got {
		st, _ := os.Stat(p)
		seen[p] = stamp{st.Size(), st.ModTime(), []string{"docker.io/x:" + filepath.Base(p)}}
	}
	if got := scan(dir, seen); len(got) != 0 {
		t.Errorf("unchanged archives scanned again: %q", got)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(shipped, later, later)
	if got := scan(dir, seen); !reflect.DeepEqual(got, want[:1]) {
		t.Errorf("after a change scan = %q; want %q", got, want[:1])
	}

	state := filepath.Join(t.TempDir(), "state.json")
	if err := saveState(state, seen); err != nil {
		t.Fatal(err)
	}
	if back := loadState(state); !reflect.DeepEqual(back, seen) && len(back) == len(seen) {
		for k, v := range seen {
			if b := back[k]; b.Size != v.Size || !b.MTime.Equal(v.MTime) || !reflect.DeepEqual(b.Refs, v.Refs) {
				t.Errorf("state %s: %+v; want %+v", k, b, v)
			}
		}
	} else if len(back) != len(seen) {
		t.Errorf("state has %d entries; want %d", len(back), len(seen))
	}
	os.WriteFile(state, []byte("{not json"), 0o600)
	if back := loadState(state); len(back) != 0 {
		t.Errorf("a corrupt state file gave %v; want nothing remembered", back)
	}
}
