package componentimages

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestCoreDNSMain(t *testing.T) {
	got := string(corednsMain("github.com/coredns/coredns", []string{"cache", "kubernetes"}))
	for _, want := range []string{
		"package main\n",
		"\t_ \"github.com/coredns/coredns/plugin/cache\"\n",
		"\t_ \"github.com/coredns/coredns/plugin/kubernetes\"\n",
		"\t\"github.com/coredns/coredns/coremain\"\n",
		"coremain.Run()",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("main lacks %q:\n%s", want, got)
		}
	}
}

func TestMainModule(t *testing.T) {
	up := "module github.com/coredns/coredns\n\ngo 1.26.0\n\nrequire (\n\tgithub.com/miekg/dns v1.1.73\n)\n\nreplace a => b v1.0.0\n"
	got, err := mainModule([]byte(up), "ballast.invalid/coredns", "github.com/coredns/coredns", "v1.15.0")
	if err != nil {
		t.Fatal(err)
	}
	want := "module ballast.invalid/coredns\n\ngo 1.26.0\n\nrequire (\n\tgithub.com/miekg/dns v1.1.73\n)\n\nreplace a => b v1.0.0\n\nrequire github.com/coredns/coredns v1.15.0\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []string{"go 1.26.0\n", "module example.com/other\n"} {
		if _, err := mainModule([]byte(bad), "x", "github.com/coredns/coredns", "v1.15.0"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestCoreDNSServes builds the image's CoreDNS for amd64 (into the
// user's ballast cache, as the image builder does) and runs it on this
// host with the plugins of k3s's Corefile that need no cluster: it
// answers from a hosts file, forwards to an upstream (a second server
// block of its own, answering from inline hosts), reports health,
// readiness and metrics, lists the kubernetes plugin, and refuses a
// plugin it was built without.
func TestCoreDNSServes(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles CoreDNS when the cache is cold")
	}
	if runtime.GOARCH != "amd64" || runtime.GOOS != "linux" {
		t.Skipf("runs an amd64 binary; this host is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	uc, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := Build(context.Background(), Options{Arch: "amd64", CacheDir: filepath.Join(uc, "ballast"), Names: []string{"coredns"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "coredns")
	if err := os.WriteFile(bin, check(t, imgs[0], "amd64"), 0o755); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(bin, "-plugins").CombinedOutput()
	if err != nil {
		t.Fatalf("coredns -plugins: %v\n%s", err, out)
	}
	listed := strings.Fields(string(out))
	for _, p := range []string{"kubernetes", "errors", "health", "ready", "hosts", "prometheus", "forward", "cache", "loop", "reload", "loadbalance", "log"} {
		if !slices.Contains(listed, p) {
			t.Errorf("coredns -plugins does not list %s:\n%s", p, out)
		}
	}
	for _, p := range []string{"route53", "azure", "clouddns", "etcd", "trace", "tls"} {
		if slices.Contains(listed, p) {
			t.Errorf("coredns -plugins lists %s, which is left out", p)
		}
	}

	// A plugin it was built without stops it at start.
	bad := filepath.Join(dir, "Corefile.route53")
	os.WriteFile(bad, []byte(".:"+freePort(t, "udp")+" {\n    route53 example.org.:Z1 {\n    }\n}\n"), 0o644)
	cmd := exec.Command(bin, "-conf", bad)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "route53") {
		t.Errorf("route53 Corefile: %v\n%s", err, out)
	}

	hosts := filepath.Join(dir, "NodeHosts")
	if err := os.WriteFile(hosts, []byte("192.0.2.10 node1.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "custom"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "custom", "x.override"), []byte("log\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dns, upstream := freePort(t, "udp"), freePort(t, "udp")
	health, ready, metrics := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp")
	corefile := filepath.Join(dir, "Corefile")
	conf := fmt.Sprintf(`.:%s {
    errors
    health 127.0.0.1:%s
    ready 127.0.0.1:%s
    hosts %s {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus 127.0.0.1:%s
    forward . 127.0.0.1:%s
    cache 30
    loop
    reload
    loadbalance
    import %s/custom/*.override
}
.:%s {
    hosts {
      192.0.2.7 upstream.test
    }
}
`, dns, health, ready, hosts, metrics, upstream, dir, upstream)
	if err := os.WriteFile(corefile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bin, "-conf", corefile)
	cmd.Dir = dir
	var log lockedBuffer // written by the copying goroutine while the test reads it
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	var up bool
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, _ := get(t, "GET", "http://127.0.0.1:"+ready+"/ready", ""); code == 200 {
			up = true
			break
		}
	}
	if !up {
		t.Fatalf("/ready never answered 200\n%s", log.String())
	}
	if code, body := get(t, "GET", "http://127.0.0.1:"+health+"/health", ""); code != 200 || body != "OK" {
		t.Errorf("/health: %d %q", code, body)
	}

	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, "127.0.0.1:"+dns)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, want := range map[string]string{
		"node1.test.":    "192.0.2.10", // hosts
		"upstream.test.": "192.0.2.7",  // forward, then the upstream's hosts
	} {
		ips, err := r.LookupIP(ctx, "ip4", name)
		if err != nil || len(ips) != 1 || ips[0].String() != want {
			t.Errorf("A %s: %v %v, want %s\n%s", name, ips, err, want, log.String())
		}
	}
	// The override's log plugin logs each query, after answering it.
	logged := false
	for deadline := time.Now().Add(5 * time.Second); !logged && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		logged = strings.Contains(log.String(), "node1.test.")
	}
	if !logged {
		t.Errorf("no query log line for node1.test.:\n%s", log.String())
	}
	if code, body := get(t, "GET", "http://127.0.0.1:"+metrics+"/metrics", ""); code != 200 || !strings.Contains(body, "coredns_dns_requests_total") {
		t.Errorf("/metrics: %d, coredns_dns_requests_total missing", code)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if err := waitTimeout(cmd, 10*time.Second); err != nil {
		t.Errorf("coredns after SIGTERM: %v\n%s", err, log.String())
	}
}

// freePort returns a port free on 127.0.0.1 for network "tcp" or "udp"
// (both, for DNS: CoreDNS listens on the two).
func freePort(t *testing.T, network string) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
		if network == "udp" {
			u, err := net.ListenPacket("udp", "127.0.0.1:"+port)
			if err != nil {
				l.Close()
				continue
			}
			u.Close()
		}
		l.Close()
		return port
	}
	t.Fatal("no free port")
	return ""
}

// archiveFormat names the zstd encoder's module at the version go.mod
// requires.
func TestArchiveFormatNamesEncoder(t *testing.T) {
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(github\.com/klauspost/compress) (v\S+)`).FindStringSubmatch(string(gomod))
	if m == nil {
		t.Fatal("../../go.mod does not require github.com/klauspost/compress")
	}
	if !strings.HasSuffix(archiveFormat, " "+m[1]+" "+m[2]) {
		t.Errorf("archiveFormat %q does not end in %q (go.mod's version)", archiveFormat, m[1]+" "+m[2])
	}
}

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
