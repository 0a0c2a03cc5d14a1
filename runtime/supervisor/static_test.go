package supervisor

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestStaticFiles(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "charts"), 0o755)
	os.WriteFile(filepath.Join(dir, "charts", "demo-1.0.0.tgz"), []byte("chart"), 0o644)
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticFiles(dir)))
	for path, want := range map[string]int{
		"/static/charts/demo-1.0.0.tgz": http.StatusOK,
		"/static/charts/":               http.StatusNotFound, // no listings
		"/static/":                      http.StatusNotFound,
		"/static/charts/missing.tgz":    http.StatusNotFound,
		"/static/../cred/passwd":        http.StatusNotFound, // the mux redirects to the clean path
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		redirected := rec.Code == http.StatusMovedPermanently || rec.Code == http.StatusTemporaryRedirect
		if rec.Code != want && !(want == http.StatusNotFound && redirected) {
			t.Errorf("GET %s: %d, want %d", path, rec.Code, want)
		}
		if want == http.StatusOK && rec.Body.String() != "chart" {
			t.Errorf("GET %s: body %q", path, rec.Body.String())
		}
	}
}
