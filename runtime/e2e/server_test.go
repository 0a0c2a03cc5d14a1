// Package e2e runs the built k3s binary: `k3s server --disable-agent`
// with its real kine, kube-apiserver, kube-controller-manager and
// kube-scheduler, on a temporary data dir and free ports, and talks to it
// with `k3s kubectl`. It needs no root and no network. Skipped under
// -short; building the binary cold takes many minutes (the build is
// cached afterwards).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildK3s builds cmd/k3s into the test's temp dir. It uses the
// environment's CGO_ENABLED and no -trimpath so that it shares the build
// cache with `go vet ./...` and the other tests (the image build uses
// CGO_ENABLED=0 -trimpath: kine then links the pure-Go sqlite driver
// instead of mattn/go-sqlite3; both are kine's own drivers).
func buildK3s(t *testing.T) string {
	t.Helper()
	readModuleSources(t)
	out := filepath.Join(t.TempDir(), "k3s")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", out, "../cmd/k3s")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/k3s: %v\n%s", err, b)
	}
	t.Logf("built %s in %s", out, time.Since(start).Round(time.Second))
	return out
}

// readModuleSources reads every Go file, go.mod and go.sum of the runtime
// module. This test imports none of them (it runs the binary), so without
// these reads `go test` would serve a cached result after the sources
// changed; reading them makes them part of the test's cache key.
func readModuleSources(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && p != ".." {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			_, err := os.ReadFile(p)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// lineLog collects a process's output and lets a test wait for a line.
type lineLog struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func newLineLog(r io.Reader) *lineLog {
	l := &lineLog{lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.buf.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
			select {
			case l.lines <- sc.Text():
			default:
			}
		}
		close(l.lines)
	}()
	return l
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lineLog) waitFor(t *testing.T, substr string, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case line, ok := <-l.lines:
			if !ok {
				t.Fatalf("output ended before %q:\n%s", substr, l.String())
			}
			if strings.Contains(line, substr) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q after %s:\n%s", substr, d, l.String())
		}
	}
}

type server struct {
	bin, dataDir, kubeconfig string
}

func (s *server) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append([]string{"kubectl", "--kubeconfig", s.kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("k3s kubectl %s: %v\n%s%s\ncomponent logs:\n%s", strings.Join(args, " "), err, out.String(), errb.String(), s.logs())
	}
	return out.String()
}

func (s *server) logs() string {
	var b strings.Builder
	for _, c := range []string{"kine", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		data, _ := os.ReadFile(filepath.Join(s.dataDir, "server", "logs", c+".log"))
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "--- %s (tail)\n%s\n", c, data)
	}
	return b.String()
}

// running is one `k3s server` process.
type running struct {
	cmd    *exec.Cmd
	log    *lineLog
	exited chan error
	done   bool
}

// start runs `k3s server args...` in its own process group (killed at
// cleanup if still there) and waits until it says it is up.
func (s *server) start(t *testing.T, args []string) *running {
	t.Helper()
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, log: newLineLog(stderr), exited: make(chan error, 1)}
	go func() { r.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if !r.done {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-r.exited
		}
	})
	r.log.waitFor(t, "k3s server is up", 150*time.Second)
	t.Logf("control plane up in %s", time.Since(begin).Round(100*time.Millisecond))
	return r
}

// stop sends SIGTERM and wants a clean exit within 60 s.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.exited:
		r.done = true
		if err != nil {
			t.Errorf("k3s server after SIGTERM: %v\n%s", err, r.log.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("k3s server did not stop within 60 s:\n%s", r.log.String())
	}
}

// componentPID finds the process `k3s <name>` of the server on dataDir.
func componentPID(t *testing.T, dataDir, name string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(string(b), "\x00")
		if len(argv) > 1 && argv[1] == name && strings.Contains(string(b), dataDir) {
			return pid
		}
	}
	t.Fatalf("no %s process for %s", name, dataDir)
	return 0
}

func TestServerDisableAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the full control plane; skipped with -short")
	}
	bin := buildK3s(t)

	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kubernetes              v1.37.") || !strings.Contains(string(out), "kine                    v0.17.") {
		t.Errorf("k3s --version: %v\n%s", err, out)
	}

	dir := t.TempDir()
	s := &server{bin: bin, dataDir: filepath.Join(dir, "k3s"), kubeconfig: filepath.Join(dir, "k3s.yaml")}
	// A manifest present at start is applied at start (k3s's forced first pass).
	manifestsDir := filepath.Join(s.dataDir, "server", "manifests")
	if err := os.MkdirAll(manifestsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(manifestsDir, "e2e.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e-manifest\ndata:\n  answer: \"42\"\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api := freePort(t)
	args := []string{"server", "--disable-agent", "--bind-address", "127.0.0.1",
		"--data-dir", s.dataDir, "--write-kubeconfig", s.kubeconfig, "--https-listen-port", api,
		"--kube-controller-manager-arg", "secure-port=" + freePort(t), "--kube-scheduler-arg", "secure-port=" + freePort(t)}
	r := s.start(t, args)
	log := r.log

	if got := strings.TrimSpace(s.kubectl(t, "get", "--raw", "/readyz")); got != "ok" {
		t.Errorf("/readyz = %q", got)
	}
	ns := s.kubectl(t, "get", "namespaces", "-o", "name")
	for _, want := range []string{"namespace/default", "namespace/kube-system", "namespace/kube-public"} {
		if !strings.Contains(ns, want) {
			t.Errorf("namespaces lack %s:\n%s", want, ns)
		}
	}
	// The controller-manager and scheduler hold their leases, which
	// shows they reach the apiserver with their own kubeconfigs.
	deadline := time.Now().Add(60 * time.Second)
	for {
		leases := s.kubectl(t, "get", "leases", "-n", "kube-system", "-o", "name")
		if strings.Contains(leases, "lease.coordination.k8s.io/kube-controller-manager") && strings.Contains(leases, "lease.coordination.k8s.io/kube-scheduler") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader leases for controller-manager and scheduler:\n%s\n%s", leases, s.logs())
		}
		time.Sleep(2 * time.Second)
	}
	// The kube-root-ca.crt ConfigMap is written by the controller-manager.
	s.kubectl(t, "wait", "--for=create", "configmap/kube-root-ca.crt", "-n", "default", "--timeout=60s")

	// The deploy controller applied server/manifests/e2e.yaml with
	// server-side apply as field manager k3s, into kube-system.
	s.kubectl(t, "wait", "--for=create", "configmap/e2e-manifest", "-n", "kube-system", "--timeout=60s")
	cm := s.kubectl(t, "get", "configmap", "e2e-manifest", "-n", "kube-system", "--show-managed-fields", "-o", "jsonpath={.data.answer} {.metadata.managedFields[*].manager} {.metadata.managedFields[*].operation}")
	if cm != "42 k3s Apply" {
		t.Errorf("applied ConfigMap: %q, want \"42 k3s Apply\"", cm)
	}
	s.kubectl(t, "get", "namespace", "e2e")

	// The binary answers as kubectl under that name too.
	link := filepath.Join(dir, "kubectl")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(link, "--kubeconfig", s.kubeconfig, "get", "--raw", "/livez").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("kubectl personality: %v %s", err, out)
	}

	// Killing the apiserver: the supervisor restarts it and it comes back.
	pid := componentPID(t, s.dataDir, "kube-apiserver")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	log.waitFor(t, "component started", 30*time.Second)
	for {
		out, err := exec.Command(bin, "kubectl", "--kubeconfig", s.kubeconfig, "get", "--raw", "/readyz").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "ok" {
			break
		}
		if time.Since(killed) > 90*time.Second {
			t.Fatalf("apiserver not back 90 s after kill: %v %s\n%s", err, out, log.String())
		}
		time.Sleep(time.Second)
	}
	if p := componentPID(t, s.dataDir, "kube-apiserver"); p == pid {
		t.Errorf("apiserver pid %d unchanged after kill", p)
	}
	t.Logf("apiserver back %s after SIGKILL", time.Since(killed).Round(100*time.Millisecond))

	// State the restart must keep: an object made through the API.
	s.kubectl(t, "create", "configmap", "made-by-hand", "-n", "default", "--from-literal=k=v")

	// A clean stop: SIGTERM to k3s stops every component and exits 0.
	r.stop(t)
	if _, err := net.DialTimeout("tcp", "127.0.0.1:"+api, time.Second); err == nil {
		t.Error("the apiserver still listens after k3s server stopped")
	}

	// Restart on the same data dir (a reboot): certificates and tokens are
	// reused, kine's sqlite keeps the objects.
	tok, _ := os.ReadFile(filepath.Join(s.dataDir, "server", "token"))
	r = s.start(t, args)
	if got := s.kubectl(t, "get", "configmap", "made-by-hand", "-n", "default", "-o", "jsonpath={.data.k}"); got != "v" {
		t.Errorf("after restart made-by-hand data %q", got)
	}
	s.kubectl(t, "get", "configmap", "e2e-manifest", "-n", "kube-system")
	if tok2, _ := os.ReadFile(filepath.Join(s.dataDir, "server", "token")); len(tok) == 0 || string(tok) != string(tok2) {
		t.Errorf("server token changed across restart: %q -> %q", tok, tok2)
	}
	r.stop(t)
}
