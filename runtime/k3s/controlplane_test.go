package k3s

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ballast-os/ballast/runtime/processes"
)

// The test binary doubles as fake components: the server under test
// re-executes it (app.self) with K3S_TEST_FAKE=1 and a component name,
// and it serves just enough of that component for the readiness checks.
func TestMain(m *testing.M) {
	if os.Getenv("K3S_TEST_FAKE") == "1" && len(os.Args) > 1 {
		os.Exit(fakeComponent(os.Args[1], os.Args[2:]))
	}
	os.Exit(m.Run())
}

func fakeComponent(name string, args []string) int {
	flags := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
			flags[k] = v
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, name, err); return 1 }
	switch name {
	case "kine":
		path := strings.TrimPrefix(flags["listen-address"], "unix://")
		os.Remove(path)
		l, err := net.Listen("unix", path)
		if err != nil {
			return fail(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	case "kube-apiserver", "kube-controller-manager", "kube-scheduler":
		cert, err := tls.LoadX509KeyPair(flags["tls-cert-file"], flags["tls-private-key-file"])
		if err != nil {
			return fail(err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
		mux := http.NewServeMux()
		if name == "kube-apiserver" {
			ca, err := os.ReadFile(flags["client-ca-file"])
			if err != nil {
				return fail(err)
			}
			cfg.ClientCAs = x509.NewCertPool()
			cfg.ClientCAs.AppendCertsFromPEM(ca)
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			etcd := strings.TrimPrefix(flags["etcd-servers"], "unix://")
			mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
				c, err := net.Dial("unix", etcd)
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				c.Close()
			})
		} else {
			mux.HandleFunc("/healthz", func(http.ResponseWriter, *http.Request) {})
		}
		l, err := tls.Listen("tcp", net.JoinHostPort(flags["bind-address"], flags["secure-port"]), cfg)
		if err != nil {
			return fail(err)
		}
		go http.Serve(l, mux)
	case "deploy-controller":
		if _, err := os.Stat(flags["kubeconfig"]); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("no fake for %s", name))
	}
	<-stop
	return 0
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

// syncBuffer is a bytes.Buffer safe for the process runner's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServerSupervisesControlPlane(t *testing.T) {
	t.Setenv("K3S_TEST_FAKE", "1") // inherited by the re-executed fakes
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "k3s")
	api, cm, sched := freePort(t), freePort(t), freePort(t)
	var stderr syncBuffer
	a := &app{
		args: []string{"k3s", "server", "--disable-agent", "--node-ip", "127.0.0.1", "--bind-address", "127.0.0.1",
			"--data-dir", dataDir, "--write-kubeconfig", filepath.Join(dir, "k3s.yaml"), "--https-listen-port", api,
			"--kube-controller-manager-arg", "secure-port=" + cm, "--kube-scheduler-arg", "secure-port=" + sched},
		stdout: &bytes.Buffer{}, stderr: &stderr, lookupEnv: func(string) (string, bool) { return "", false },
		components: Components{"kine": nil, "kube-apiserver": nil, "kube-controller-manager": nil, "kube-scheduler": nil, "deploy-controller": nil},
		self:       self,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- a.run(ctx) }()
	deadline := time.After(60 * time.Second)
	for !strings.Contains(stderr.String(), "k3s server is up") {
		select {
		case code := <-done:
			t.Fatalf("server exited %d before it was up:\n%s", code, stderr.String())
		case <-deadline:
			t.Fatalf("not up after 60 s:\n%s", stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	out := stderr.String()
	// Start order: the datastore first, then the apiserver, then the rest.
	order := []string{"component=kine", "component=kube-apiserver", "component=kube-controller-manager", "component=kube-scheduler", "component=deploy-controller"}
	last := -1
	for _, c := range order {
		i := strings.Index(out, `msg="component ready" `+c)
		if i < 0 || i < last {
			t.Errorf("%s not ready in order:\n%s", c, out)
		}
		last = i
	}
	if !strings.Contains(out, "https://127.0.0.1:"+api) {
		t.Errorf("server did not announce the API port %s:\n%s", api, out)
	}
	kc, err := os.ReadFile(filepath.Join(dir, "k3s.yaml"))
	if err != nil || !strings.Contains(string(kc), "https://127.0.0.1:"+api) {
		t.Errorf("k3s.yaml does not point at the apiserver port %s: %v\n%s", api, err, kc)
	}
	for _, f := range []string{"server/etc/egress-selector-config.yaml", "server/logs/kube-apiserver.log", "server/logs/kine.log"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err != nil {
			t.Error(err)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("server exit %d after stop:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}
	if s := stderr.String(); !strings.Contains(s, `msg="component stopped" component=kine`) {
		t.Errorf("kine not stopped:\n%s", s)
	}
}

func TestMainDispatchesComponents(t *testing.T) {
	var got []string
	c := Components{
		"kine":    func(args []string) int { got = args; return 7 },
		"kubectl": func(args []string) int { got = args; return 3 },
	}
	if code := Main([]string{"/usr/bin/k3s", "kine", "--endpoint=x"}, c, nil); code != 7 || len(got) != 1 || got[0] != "--endpoint=x" {
		t.Errorf("k3s kine: %d %v", code, got)
	}
	if code := Main([]string{"/usr/local/bin/kubectl", "get", "ns"}, c, nil); code != 3 || strings.Join(got, " ") != "get ns" {
		t.Errorf("kubectl personality: %d %v", code, got)
	}
	if code := Main([]string{"k3s", "kubectl", "version"}, c, nil); code != 3 || strings.Join(got, " ") != "version" {
		t.Errorf("k3s kubectl: %d %v", code, got)
	}
}

// A component with an in-process entry point runs in the k3s process with
// the arguments its process would get; the others stay processes.
func TestRunInProcess(t *testing.T) {
	var got []string
	a := &app{inProcess: InProcess{"flannel": func(ctx context.Context, args []string, log io.Writer) error {
		got = args
		fmt.Fprint(log, "flannel up")
		return nil
	}}}
	fl := processes.Component{Name: "flannel", Args: []string{"flannel", "--iface=10.0.2.15"}}
	kl := processes.Component{Name: "kubelet", Args: []string{"kubelet", "--v=0"}}
	a.runInProcess(&fl)
	a.runInProcess(&kl)
	if kl.Run != nil {
		t.Error("the kubelet got an in-process entry point")
	}
	if fl.Run == nil {
		t.Fatal("flannel runs as a process")
	}
	var log bytes.Buffer
	if err := fl.Run(context.Background(), &log); err != nil || strings.Join(got, " ") != "--iface=10.0.2.15" || log.String() != "flannel up" {
		t.Errorf("Run: %v, args %q, log %q", err, got, log.String())
	}
	if err := a.checkBuilt([]processes.Component{fl}); err != nil {
		t.Errorf("checkBuilt refuses an in-process component: %v", err)
	}
}
