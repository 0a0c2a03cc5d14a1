package imagebuild

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/filetree"
)

func TestApplyAlternativesPrefersFirstPresent(t *testing.T) {
	tr := filetree.New(time.Unix(0, 0))
	for _, p := range []string{"usr/bin/mawk", "usr/sbin/iptables-legacy", "usr/sbin/iptables-legacy-save", "usr/sbin/iptables-nft", "usr/sbin/iptables-nft-save"} {
		tr.AddFile(p, 0o755, nil)
	}
	if err := applyAlternatives(tr); err != nil {
		t.Fatal(err)
	}
	for link, want := range map[string]string{
		"usr/bin/awk":            "/usr/bin/mawk",
		"usr/sbin/iptables":      "/usr/sbin/iptables-nft",
		"usr/sbin/iptables-save": "/usr/sbin/iptables-nft-save",
	} {
		e := tr.Get(link)
		if e == nil || e.Kind != filetree.Symlink || e.Target != want {
			t.Errorf("%s = %+v, want symlink to %s", link, e, want)
		}
	}
	if tr.Get("usr/sbin/ip6tables") != nil || tr.Get("usr/sbin/iptables-restore") != nil {
		t.Error("linked an alternative whose target is absent")
	}
}

func TestBuildCABundle(t *testing.T) {
	tr := filetree.New(time.Unix(0, 0))
	tr.AddFile("usr/share/ca-certificates/mozilla/B.crt", 0o644, []byte("-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n"))
	tr.AddFile("usr/share/ca-certificates/mozilla/A.crt", 0o644, []byte("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----"))
	tr.AddFile("usr/share/ca-certificates/mozilla/README", 0o644, []byte("not a cert"))
	if err := buildCABundle(tr); err != nil {
		t.Fatal(err)
	}
	e := tr.Get(caBundlePath)
	if e == nil {
		t.Fatal("no bundle")
	}
	rc, _ := e.Data.Open()
	b, _ := io.ReadAll(rc)
	got := string(b)
	if strings.Count(got, "BEGIN CERTIFICATE") != 2 || strings.Index(got, "\nA\n") > strings.Index(got, "\nB\n") || strings.Contains(got, "not a cert") {
		t.Fatalf("bundle:\n%s", got)
	}
}
