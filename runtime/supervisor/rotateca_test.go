package supervisor

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRotateCARefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		code int
		want string
	}{
		{"not JSON", `tar`, http.StatusBadRequest, "want JSON"},
		{"empty", `{}`, http.StatusBadRequest, "no CA files"},
		{"no current CA", `{"ServerCA": {"Content": "eA=="}}`, http.StatusBadRequest, "ServerCA: the current CA"},
	} {
		s := &Server{DataDir: t.TempDir()}
		w := httptest.NewRecorder()
		s.rotateCA(w, httptest.NewRequest(http.MethodPut, "/v1-k3s/cert/cacerts?force=false", strings.NewReader(tc.body)))
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("%s: %d %q; want %d with %q", tc.name, w.Code, w.Body.String(), tc.code, tc.want)
		}
	}
}
