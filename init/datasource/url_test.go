package datasource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/init/cmdline"
)

func TestConfigURL(t *testing.T) {
	for in, want := range map[string]string{
		"console=ttyS0 ballast.config_url=http://10.0.2.2:8000/c.yaml quiet\n": "http://10.0.2.2:8000/c.yaml",
		`ballast.config_url="http://h/a b" ballast.slot=A`:                     "http://h/a b",
		"ballast.config_url=http://a ballast.config_url=http://b":              "http://b",
		"ballast.config_url= x":        "",
		"root=/dev/vda":                "",
		"xballast.config_url=http://a": "",
	} {
		got, ok := ConfigURL(cmdline.Parse(in))
		if got != want || ok != (want != "") {
			t.Errorf("ConfigURL(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestFetchURL(t *testing.T) {
	const doc = "#cloud-config\nhostname: url\n"
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/c.yaml" {
			w.Write([]byte(doc))
			return
		}
		http.NotFound(w, r)
	})
	srv := httptest.NewServer(handler)
	defer srv.Close()
	// Plain http: only with the document pinned.
	s := FetchURL(context.Background(), srv.URL+"/c.yaml", sha(doc), 5*time.Second)
	if s.Err != nil || string(s.Data) != doc || s.Name != "cmdline-url" || s.Path != srv.URL+"/c.yaml" {
		t.Errorf("%+v", s)
	}
	if s := FetchURL(context.Background(), srv.URL+"/c.yaml", "", 5*time.Second); s.Err == nil || !strings.Contains(s.Err.Error(), "plain http") || s.Data != nil {
		t.Errorf("http without a pin: %+v", s)
	}
	if s := FetchURL(context.Background(), srv.URL+"/c.yaml", sha("another document"), 5*time.Second); s.Err == nil || !strings.Contains(s.Err.Error(), "not using it") || s.Data != nil {
		t.Errorf("a document that is not the pinned one: %+v", s)
	}
	if s := FetchURL(context.Background(), srv.URL+"/c.yaml", "abc", 5*time.Second); s.Err == nil || !strings.Contains(s.Err.Error(), "64 hex digits") {
		t.Errorf("a malformed pin: %+v", s)
	}
	start := time.Now()
	s = FetchURL(context.Background(), srv.URL+"/missing", sha(doc), 5*time.Second)
	if s.Err == nil || !strings.Contains(s.Err.Error(), "404") || time.Since(start) > time.Second {
		t.Errorf("404: %+v after %v (must fail at once)", s, time.Since(start))
	}
	for _, bad := range []string{"file:///etc/passwd", "ftp://x/y", "http://", "::"} {
		if s := FetchURL(context.Background(), bad, sha(doc), time.Second); s.Err == nil {
			t.Errorf("%q accepted", bad)
		}
	}

	// https, unpinned: fine, but a redirect down to http is refused at once.
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/down" {
			http.Redirect(w, r, srv.URL+"/c.yaml", http.StatusFound)
			return
		}
		handler.ServeHTTP(w, r)
	}))
	defer tlsSrv.Close()
	trustTestServer(t, tlsSrv)
	if s := FetchURL(context.Background(), tlsSrv.URL+"/c.yaml", "", 5*time.Second); s.Err != nil || string(s.Data) != doc {
		t.Errorf("https: %+v", s)
	}
	start = time.Now()
	if s := FetchURL(context.Background(), tlsSrv.URL+"/down", "", 5*time.Second); s.Err == nil || !strings.Contains(s.Err.Error(), "not https") || time.Since(start) > time.Second {
		t.Errorf("https -> http redirect: %+v after %v", s, time.Since(start))
	}
}

// trustTestServer makes the default transport trust srv's certificate,
// as the image's CA bundle trusts a real server's.
func trustTestServer(t *testing.T, srv *httptest.Server) {
	old := http.DefaultTransport
	http.DefaultTransport = srv.Client().Transport
	t.Cleanup(func() { http.DefaultTransport = old })
}

func TestFetchURLRetriesUntilUp(t *testing.T) {
	// Reserve a port, then serve on it only after a while, as when the
	// network (or the host's server) comes up after the init asks.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("late\n")) })}
	go func() {
		time.Sleep(1500 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		srv.Serve(l)
	}()
	defer srv.Close()
	s := FetchURL(context.Background(), "http://"+addr+"/", sha("late\n"), 10*time.Second)
	if s.Err != nil || string(s.Data) != "late\n" {
		t.Errorf("%+v", s)
	}

	// Nothing ever listens: gives up at the timeout.
	start := time.Now()
	s = FetchURL(context.Background(), "http://"+addr+"1/", sha("late\n"), 1500*time.Millisecond)
	if s.Err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("%+v after %v", s, time.Since(start))
	}
}

func FuzzConfigURL(f *testing.F) {
	f.Add(`a ballast.config_url="http://x y" b`)
	f.Add("ballast.config_url=")
	f.Fuzz(func(t *testing.T, s string) {
		u, ok := ConfigURL(cmdline.Parse(s))
		if ok && u == "" {
			t.Error("ok with an empty URL")
		}
	})
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://cfg.example.com/node.yaml":                     "https://cfg.example.com/node.yaml",
		"https://cfg.example.com/node.yaml?token=s3cret&node=a": "https://cfg.example.com/node.yaml?node=xxxxx&token=xxxxx",
		"https://user:pass@cfg.example.com/x":                   "https://user:xxxxx@cfg.example.com/x",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
