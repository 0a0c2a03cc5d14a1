package qemutest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

// The kernel the harness's own tests boot directly: Debian trixie's.
const (
	debianMirror  = "http://deb.debian.org/debian"
	kernelPackage = `^linux-image-6\.12\.[0-9]+\+deb13-amd64$`
)

// testKernel returns a Debian trixie amd64 kernel (bzImage), downloading
// and unpacking it into $HOME/.cache/ballast/test-debs the first time.
// The .deb is checked against the SHA-256 in the archive's Packages
// index. No network and no cache is a test failure, not a skip.
func testKernel(t testing.TB) string {
	t.Helper()
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(home, ".cache", "ballast", "test-debs")
	if m, _ := filepath.Glob(filepath.Join(dir, "vmlinuz-*")); len(m) > 0 {
		return m[len(m)-1]
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	filename, sum, err := findKernelDeb()
	if err != nil {
		t.Fatalf("finding a test kernel: %v", err)
	}
	deb := filepath.Join(dir, filepath.Base(filename))
	if err := verifyFile(deb, sum); err != nil {
		t.Logf("downloading %s", filename)
		if err := download(debianMirror+"/"+filename, deb); err != nil {
			t.Fatalf("downloading the test kernel: %v", err)
		}
		if err := verifyFile(deb, sum); err != nil {
			t.Fatal(err)
		}
	}
	k, err := extractVmlinuz(deb, dir)
	if err != nil {
		t.Fatalf("unpacking the test kernel: %v", err)
	}
	return k
}

// findKernelDeb reads trixie's Packages index for the newest kernel.
func findKernelDeb() (filename, sha string, err error) {
	resp, err := http.Get(debianMirror + "/dists/trixie/main/binary-amd64/Packages.xz")
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("Packages.xz: %s", resp.Status)
	}
	xr, err := xz.NewReader(bufio.NewReaderSize(resp.Body, 1<<20))
	if err != nil {
		return "", "", fmt.Errorf("Packages.xz: %w", err)
	}
	pkg := regexp.MustCompile(kernelPackage)
	sc := bufio.NewScanner(xr)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var match bool
	var file, sum string
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		switch k {
		case "Package":
			match = pkg.MatchString(v)
		case "Filename":
			if match {
				file = v
			}
		case "SHA256":
			if match {
				sum = v
			}
		case "":
			// Versions come in order: the last match is the newest.
			if match && file != "" {
				filename, sha = file, sum
			}
			match = false
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	if match && file != "" {
		filename, sha = file, sum
	}
	if filename == "" {
		return "", "", fmt.Errorf("no package matching %s in trixie", kernelPackage)
	}
	return filename, sha, nil
}

func verifyFile(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: SHA-256 %s, want %s", path, got, want)
	}
	return nil
}

func download(url, dst string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	tmp := dst + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", url, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// extractVmlinuz finds data.tar.xz in the .deb (an ar archive) and
// copies ./boot/vmlinuz-* out of it into dir.
func extractVmlinuz(deb, dir string) (string, error) {
	f, err := os.Open(deb)
	if err != nil {
		return "", err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	magic := make([]byte, 8)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "!<arch>\n" {
		return "", fmt.Errorf("%s: not an ar archive", deb)
	}
	for {
		hdr := make([]byte, 60)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return "", fmt.Errorf("%s: no data.tar.xz: %w", deb, err)
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[:16])), "/")
		var size int64
		if _, err := fmt.Sscan(strings.TrimSpace(string(hdr[48:58])), &size); err != nil {
			return "", fmt.Errorf("%s: member %q: bad size", deb, name)
		}
		if name != "data.tar.xz" {
			if _, err := r.Discard(int(size + size%2)); err != nil {
				return "", err
			}
			continue
		}
		xr, err := xz.NewReader(io.LimitReader(r, size))
		if err != nil {
			return "", fmt.Errorf("%s: data.tar.xz: %w", deb, err)
		}
		tr := tar.NewReader(xr)
		for {
			h, err := tr.Next()
			if err != nil {
				return "", fmt.Errorf("%s: no boot/vmlinuz-*: %w", deb, err)
			}
			base := filepath.Base(h.Name)
			if strings.HasPrefix(strings.TrimPrefix(h.Name, "./"), "boot/vmlinuz-") {
				var b bytes.Buffer
				if _, err := io.Copy(&b, tr); err != nil {
					return "", err
				}
				out := filepath.Join(dir, base)
				if err := os.WriteFile(out+".part", b.Bytes(), 0o644); err != nil {
					return "", err
				}
				return out, os.Rename(out+".part", out)
			}
		}
	}
}
