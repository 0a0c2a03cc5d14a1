package imagebuild

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild/spec"
)

// testCache is the user's ballast cache, shared with `make image`, so the
// Debian packages are downloaded once per machine.
func testCache(t testing.TB) string {
	uc, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(uc, "ballast")
}

func testSpec(t testing.TB, out string, mutate func(*spec.Spec)) *spec.Spec {
	s := spec.Default()
	s.Output = out
	s.Lock = filepath.Join(out, "ballast.lock")
	if mutate != nil {
		mutate(s)
	}
	return s
}

func buildOrFail(t testing.TB, opts Options) *Result {
	t.Helper()
	var log bytes.Buffer
	opts.Log = &log
	res, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, log.String())
	}
	return res
}

// TestBuildReproducible builds the default image twice, the second time
// from the first build's lock into another directory, and checks both
// images are byte-identical. It also checks the lock is honoured offline.
func TestBuildReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian packages and writes images: not a -short test")
	}
	cache := testCache(t)
	out1, out2 := t.TempDir(), t.TempDir()
	r1 := buildOrFail(t, Options{Spec: testSpec(t, out1, nil), CacheDir: cache})
	if len(r1.Images) != 2 {
		t.Fatalf("want raw and iso images, got %+v", r1.Images)
	}
	lock, err := os.ReadFile(filepath.Join(out1, "ballast.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out2, "ballast.lock"), lock, 0o644); err != nil {
		t.Fatal(err)
	}
	r2 := buildOrFail(t, Options{Spec: testSpec(t, out2, nil), CacheDir: cache, Offline: true})
	for i := range r1.Images {
		a, b := r1.Images[i], r2.Images[i]
		ha, err := a.SHA256()
		if err != nil {
			t.Fatal(err)
		}
		hb, err := b.SHA256()
		if err != nil {
			t.Fatal(err)
		}
		if ha != hb || a.Size != b.Size {
			t.Errorf("%s: not reproducible: %s (%d) vs %s (%d)", a.Format, ha, a.Size, hb, b.Size)
		}
		t.Logf("%s %s %d MB (%d MB allocated) sha256:%s", a.Format, a.Path, a.Size>>20, a.Allocated>>20, ha)
	}
	if !r2.SquashfsCache {
		t.Error("second build did not reuse the cached squashfs")
	}
	// The default image, runtime and its images (Traefik and the Helm
	// job image included: 247 MB on 2026-12-07) must stay under 250 MB.
	if r1.SquashfsSize > 250<<20 {
		t.Errorf("system squashfs is %d MB, over the 250 MB budget", r1.SquashfsSize>>20)
	}
}

func TestBuildMissingPackageLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Debian index")
	}
	out := t.TempDir()
	s := testSpec(t, out, func(s *spec.Spec) { s.Packages = []string{"ballast-no-such-package"} })
	_, err := Build(context.Background(), Options{Spec: s, CacheDir: testCache(t), UpdateLock: true})
	if err == nil || !strings.Contains(err.Error(), "ballast-no-such-package") {
		t.Fatalf("err = %v; want one naming the missing package", err)
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != 0 {
		t.Fatalf("failed build left files behind: %v", ents)
	}
}

func TestBuildRejectsBadBakedConfig(t *testing.T) {
	out := t.TempDir()
	_, err := Build(context.Background(), Options{
		Spec:        testSpec(t, out, nil),
		CacheDir:    t.TempDir(),
		BakedConfig: []byte("#cloud-config\nhostnme: x\n"),
	})
	if err == nil || !strings.Contains(err.Error(), "hostnme") || !strings.Contains(err.Error(), ":2:") {
		t.Fatalf("err = %v; want the unknown key with its line", err)
	}
}

func TestManifestIsReproducible(t *testing.T) {
	b := &builder{spec: spec.Default(), epoch: DefaultEpoch, res: &Result{}}
	b.board, _ = b.spec.LoadBoard()
	k := &kernelFiles{version: "6.12.0-test-amd64"}
	m1, err := b.manifest(k, &packages{}, "")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	m2, _ := b.manifest(k, &packages{}, "")
	if !bytes.Equal(m1, m2) {
		t.Fatal("manifest depends on the clock")
	}
	var m Manifest
	if err := json.Unmarshal(m1, &m); err != nil || m.Kernel != k.version || m.Board != "x86_64" || !strings.Contains(m.Cmdline, "console=ttyS0") {
		t.Fatalf("manifest %s: %v", m1, err)
	}
}

// BenchmarkBuild prints the build figures for the default image: a cold
// build (empty cache: every package downloaded), a warm rebuild, and a
// rebuild after a cloud-config change (target under 5 s), with the image
// and squashfs sizes (target: under 250 MB with the runtime). The cold
// build starts from an empty ballast cache, but Go's build cache stays
// warm: the runtime is linked, not compiled from scratch.
func BenchmarkBuild(b *testing.B) {
	for i := 0; i < b.N; i++ {
		cold := b.TempDir()
		out := b.TempDir()
		start := time.Now()
		r := buildOrFail(b, Options{Spec: testSpec(b, out, nil), CacheDir: cold})
		coldD := time.Since(start)

		start = time.Now()
		buildOrFail(b, Options{Spec: testSpec(b, out, nil), CacheDir: cold})
		warmD := time.Since(start)

		start = time.Now()
		buildOrFail(b, Options{Spec: testSpec(b, out, nil), CacheDir: cold,
			BakedConfig: []byte("#cloud-config\nhostname: changed-" + time.Now().Format("150405") + "\n")})
		cfgD := time.Since(start)

		b.ReportMetric(coldD.Seconds(), "cold-s")
		b.ReportMetric(warmD.Seconds(), "warm-s")
		b.ReportMetric(cfgD.Seconds(), "config-change-s")
		b.ReportMetric(float64(r.SquashfsSize)/(1<<20), "squashfs-MB")
		if rt := r.Runtime; rt != nil {
			b.ReportMetric(float64(rt.Size)/(1<<20), "runtime-binary-MB")
			var imgs int64
			for _, img := range rt.Images {
				imgs += img.Size
			}
			b.ReportMetric(float64(imgs)/(1<<20), "runtime-images-MB")
		}
		for _, img := range r.Images {
			b.ReportMetric(float64(img.Size)/(1<<20), img.Format+"-MB")
			b.ReportMetric(float64(img.Allocated)/(1<<20), img.Format+"-allocated-MB")
		}
		b.Logf("cold %s, warm %s, after a cloud-config change %s; squashfs %d MB", coldD, warmD, cfgD, r.SquashfsSize>>20)
		for _, st := range r.Steps {
			b.Logf("  cold step %-40s %s", st.Name, st.Duration.Round(time.Millisecond))
		}
	}
}
