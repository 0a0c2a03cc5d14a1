package runtimebin

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// sourceRoot is the ballast checkout these tests run in (imagebuild/runtimebin/../..).
func sourceRoot(b *testing.B) string {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "runtime", "go.mod")); err != nil {
		b.Fatalf("no runtime module under %s: %v", root, err)
	}
	return root
}

func benchBuild(b *testing.B, o BuildOptions) {
	for b.Loop() {
		start := time.Now()
		rt, err := Build(context.Background(), o)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s-build")
		b.ReportMetric(float64(rt.K3s.Size)/1e6, "MB-k3s")
		var cni, tools int64
		for _, c := range rt.CNI {
			cni += c.Size
		}
		for _, c := range rt.Tools {
			tools += c.Size
		}
		b.ReportMetric(float64(cni)/1e6, "MB-cni-plugins")
		b.ReportMetric(float64(tools)/1e6, "MB-tools")
	}
}

// BenchmarkBuildWarm: nothing changed since the last build, the cached
// binaries are reused (what a rebuild of an image costs).
func BenchmarkBuildWarm(b *testing.B) {
	o := BuildOptions{SourceDir: sourceRoot(b), Arch: "amd64", Version: "bench", CacheDir: filepath.Join(os.TempDir(), "ballast-bench-runtime"), Log: io.Discard}
	if _, err := Build(context.Background(), o); err != nil { // fill the cache
		b.Fatal(err)
	}
	benchBuild(b, o)
}

// BenchmarkBuildRelink: a source changed: go build with Go's build cache
// warm recompiles the changed packages and links (an empty binary cache
// stands in for the change).
func BenchmarkBuildRelink(b *testing.B) {
	benchBuild(b, BuildOptions{SourceDir: sourceRoot(b), Arch: "amd64", Version: "bench", CacheDir: b.TempDir(), Log: io.Discard})
}

// BenchmarkBuildCold: an empty Go build cache too, as on a fresh machine
// (the module cache is kept: downloads are not measured). It compiles
// Kubernetes and containerd: about 11 minutes and 3.5 GB of cache on a
// 2-core machine.
func BenchmarkBuildCold(b *testing.B) {
	b.Setenv("GOCACHE", b.TempDir())
	benchBuild(b, BuildOptions{SourceDir: sourceRoot(b), Arch: "amd64", Version: "bench", CacheDir: b.TempDir(), Log: io.Discard})
}
