package containertest

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
)

// TestStargzLazyPull is the seed's "eStargz lazy pulling" on the
// container bed: a server with snapshotter: stargz pulls an eStargz image
// from a registry this test serves on the host (slowly: 1 MiB/s for the
// big layer), and the pod runs before the registry has sent that layer
// whole; the layers are FUSE mounts of the stargz snapshotter.
func TestStargzLazyPull(t *testing.T) {
	c, ctx := newCluster(t)
	img := stargzImage(t)
	host, err := c.HostIP()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := serveImage(host, "ballast/estargz", "v1", img)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	registries := filepath.Join(t.TempDir(), "registries.yaml")
	if err := os.WriteFile(registries, []byte("mirrors:\n  registry.test:\n    endpoint: [\"http://"+reg.Addr+"\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.RunArgs = []string{"-v", registries + ":/etc/rancher/k3s/registries.yaml:ro"}
	server, err := c.Start(ctx, "server", map[string]string{"K3S_TOKEN": "stargz"}, "server", "--snapshotter=stargz",
		"--disable=metrics-server,local-storage,servicelb,traefik,coredns", "--disable-helm-controller", "--disable-network-policy")
	if err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, server, "True", 5*time.Minute, "server")

	const pod = `apiVersion: v1
kind: Pod
metadata: {name: lazy}
spec:
  containers:
  - name: testserver
    image: registry.test/ballast/estargz:v1
    imagePullPolicy: Always
    env: [{name: PORT, value: "8080"}]
`
	if out, err := server.Exec(ctx, "sh", "-c", "k3s kubectl apply -f - <<'EOF'\n"+pod+"EOF"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	start := time.Now()
	var served int64
	if err := WaitFor(ctx, 3*time.Minute, time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "pod", "lazy", "-o", "jsonpath={.status.containerStatuses[0].state.running.startedAt}")
		if err != nil || out == "" {
			return fmt.Errorf("pod lazy not running yet: %v %s", err, out)
		}
		served = reg.Served(img.big)
		return nil
	}); err != nil {
		out, _ := server.Kubectl(ctx, "describe", "pod", "lazy")
		t.Fatalf("%v\n%s", err, tail(out, 20))
	}
	t.Logf("pod running %.1fs after it was created; the registry had sent %d of the big layer's %d bytes", time.Since(start).Seconds(), served, img.size[img.big])
	if served >= img.size[img.big] {
		t.Errorf("the big layer was fetched whole (%d bytes) before the pod ran: not a lazy pull", served)
	}
	if out, err := server.Exec(ctx, "grep", "-c", "stargz", "/proc/mounts"); err != nil || strings.TrimSpace(out) == "0" {
		t.Errorf("no stargz FUSE mounts on the node: %v %q", err, out)
	}
	// The binary, read through the lazily fetched layers, runs.
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		out, err := server.Kubectl(ctx, "logs", "lazy")
		if err == nil && !strings.Contains(out, "testserver: listening on") {
			err = fmt.Errorf("log %q", out)
		}
		return err
	}); err != nil {
		t.Errorf("the pod's testserver: %v", err)
	}
}

// testImage is an image as a registry serves it.
type testImage struct {
	manifest []byte
	blobs    map[digest.Digest][]byte
	size     map[digest.Digest]int64
	big      digest.Digest // the layer the container never reads
}

// stargzImage makes an eStargz image: the testserver binary (built here)
// in one layer, 48 MiB the container never reads in another.
func stargzImage(t *testing.T) *testImage {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "testserver")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/ballast-os/ballast/images/testserver")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building testserver: %v\n%s", err, out)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 48<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	img := &testImage{blobs: map[digest.Digest][]byte{}, size: map[digest.Digest]int64{}}
	type layer struct {
		MediaType   string            `json:"mediaType"`
		Digest      digest.Digest     `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	var layers []layer
	var diffIDs []digest.Digest
	for i, files := range []map[string][]byte{{"testserver": exe}, {"data/unread": big}} {
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		for name, data := range files {
			if dir := filepath.Dir(name); dir != "." {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}); err != nil {
					t.Fatal(err)
				}
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(data))}); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write(data); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		var opts []estargz.Option
		if _, ok := files["testserver"]; ok {
			opts = append(opts, estargz.WithPrioritizedFiles([]string{"testserver"}))
		}
		blob, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tb.Bytes()), 0, int64(tb.Len())), opts...)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(blob)
		blob.Close()
		if err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(data)
		img.blobs[d], img.size[d] = data, int64(len(data))
		if i == 1 {
			img.big = d
		}
		layers = append(layers, layer{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: d, Size: int64(len(data)),
			Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: blob.TOCDigest().String(), estargz.StoreUncompressedSizeAnnotation: fmt.Sprint(tb.Len())}})
		diffIDs = append(diffIDs, blob.DiffID())
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/testserver"}, "User": "65532:65532"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	cd := digest.FromBytes(config)
	img.blobs[cd], img.size[cd] = config, int64(len(config))
	img.manifest, _ = json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
		"layers": layers,
	})
	return img
}

// testRegistry serves one image (the distribution API's GET/HEAD of
// manifests and blobs, with ranges) and counts the bytes it sent of each
// blob. The big layer goes out at 1 MiB/s.
type testRegistry struct {
	Addr string
	srv  *http.Server
	mu   sync.Mutex
	sent map[digest.Digest]*atomic.Int64
}

func (r *testRegistry) Close() { r.srv.Close() }

// Served is how many bytes of blob d the registry has sent.
func (r *testRegistry) Served(d digest.Digest) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.sent[d]; n != nil {
		return n.Load()
	}
	return 0
}

func serveImage(host, name, tag string, img *testImage) (*testRegistry, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, err
	}
	r := &testRegistry{Addr: ln.Addr().String(), sent: map[digest.Digest]*atomic.Int64{}}
	manifestDigest := digest.FromBytes(img.manifest)
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, req *http.Request) {
		p := strings.TrimPrefix(req.URL.Path, "/v2/")
		switch {
		case p == "":
			w.WriteHeader(http.StatusOK)
		case p == name+"/manifests/"+tag || p == name+"/manifests/"+manifestDigest.String():
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", manifestDigest.String())
			http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(img.manifest))
		case strings.HasPrefix(p, name+"/blobs/"):
			d := digest.Digest(strings.TrimPrefix(p, name+"/blobs/"))
			data, ok := img.blobs[d]
			if !ok {
				http.NotFound(w, req)
				return
			}
			r.mu.Lock()
			n := r.sent[d]
			if n == nil {
				n = &atomic.Int64{}
				r.sent[d] = n
			}
			r.mu.Unlock()
			w.Header().Set("Docker-Content-Digest", d.String())
			var out io.Writer = &countingWriter{w: w, n: n}
			if d == img.big {
				out = &slowWriter{w: out, rate: 1 << 20}
			}
			http.ServeContent(responseWriter{ResponseWriter: w, out: out}, req, "", time.Time{}, bytes.NewReader(data))
		default:
			http.NotFound(w, req)
		}
	})
	r.srv = &http.Server{Handler: mux}
	go r.srv.Serve(ln)
	return r, nil
}

// responseWriter sends the body through out.
type responseWriter struct {
	http.ResponseWriter
	out io.Writer
}

func (w responseWriter) Write(b []byte) (int, error) { return w.out.Write(b) }

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// slowWriter writes at most rate bytes a second.
type slowWriter struct {
	w    io.Writer
	rate int
}

func (s *slowWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		chunk := min(len(b), s.rate/10)
		n, err := s.w.Write(b[:chunk])
		written += n
		if err != nil {
			return written, err
		}
		b = b[chunk:]
		time.Sleep(100 * time.Millisecond)
	}
	return written, nil
}
