package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type fakeResolver map[string][]string

func (f fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host " + host)
}

func do(t *testing.T, h http.Handler, method, target, body string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, strings.NewReader(body)))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestHandler(t *testing.T) {
	dir := t.TempDir()
	h := newHandler(dir, fakeResolver{"kubernetes.default": {"10.43.0.1"}})
	host, _ := os.Hostname()

	for _, tc := range []struct {
		method, target, body string
		code                 int
		want                 string
	}{
		{"GET", "/", "", 200, Greeting + "\nhostname: " + host + "\n"},
		{"GET", "/healthz", "", 200, "ok\n"},
		{"GET", "/file?path=a/b.txt", "", 404, ""},
		{"PUT", "/file?path=a/b.txt", "kept", 204, ""},
		{"GET", "/file?path=a/b.txt", "", 200, "kept"},
		{"GET", "/file?path=/a/b.txt", "", 200, "kept"},
		{"GET", "/file?path=../etc/passwd", "", 400, ""},
		{"PUT", "/file?path=", "x", 400, ""},
		{"GET", "/resolve?name=kubernetes.default", "", 200, "10.43.0.1\n"},
		{"GET", "/resolve?name=nowhere", "", 502, ""},
		{"GET", "/resolve", "", 400, ""},
		{"GET", "/nothing", "", 404, ""},
	} {
		code, body := do(t, h, tc.method, tc.target, tc.body)
		if code != tc.code || (tc.want != "" && body != tc.want) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.target, code, body, tc.code, tc.want)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dir, "a", "b.txt")); err != nil || string(got) != "kept" {
		t.Errorf("file on disk: %q %v", got, err)
	}
	// /fetch reaches another server, and says when it cannot.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream "+r.URL.Path) }))
	defer up.Close()
	if code, body := do(t, h, "GET", "/fetch?url="+up.URL+"/x", ""); code != 200 || body != "200 OK\nupstream /x" {
		t.Errorf("fetch: %d %q", code, body)
	}
	if code, _ := do(t, h, "GET", "/fetch?url=http://127.0.0.1:1/", ""); code != 502 {
		t.Errorf("fetch of a closed port: %d", code)
	}
	if code, _ := do(t, h, "GET", "/fetch?url=file:///etc/passwd", ""); code != 400 {
		t.Errorf("fetch of a file URL: %d", code)
	}
	// A symlink out of the data directory is refused by os.Root.
	if err := os.Symlink("/etc", filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	if code, body := do(t, h, "GET", "/file?path=out/hostname", ""); code == 200 {
		t.Errorf("read through a symlink out of the data dir: %q", body)
	}
}
