package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ballast-os/ballast/runtime/atomicfile"
)

// What a server joining this one needs to be the same cluster: the CAs
// with their keys, the service-account signing key, the passwords of
// server/cred/passwd and the secrets-encryption config. Paths are
// relative to the data dir. The joining server issues its own leaf
// certificates from these CAs.
var BootstrapFiles = []string{
	"server/tls/client-ca.crt", "server/tls/client-ca.key",
	"server/tls/server-ca.crt", "server/tls/server-ca.key",
	"server/tls/request-header-ca.crt", "server/tls/request-header-ca.key",
	"server/tls/etcd/server-ca.crt", "server/tls/etcd/server-ca.key",
	"server/tls/etcd/peer-ca.crt", "server/tls/etcd/peer-ca.key",
	"server/tls/service.key", "server/tls/service.current.key",
	"server/cred/passwd", "server/cred/encryption-config.json",
}

// Bootstrap is GET /v1-k3s/server-bootstrap: relative path -> contents.
type Bootstrap map[string][]byte

// serverBootstrap answers a joining server (server token only) with the
// bootstrap files this server has.
func (s *Server) serverBootstrap(w http.ResponseWriter, r *http.Request) {
	out := Bootstrap{}
	for _, rel := range BootstrapFiles {
		data, err := os.ReadFile(filepath.Join(s.DataDir, rel))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out[rel] = data
	}
	s.logf("join API: server bootstrap data sent to %s", r.RemoteAddr)
	writeJSON(w, out)
}

// WriteBootstrap writes what a server's /v1-k3s/server-bootstrap sent
// under dataDir, each file atomically; it refuses a path it did not ask
// for.
func WriteBootstrap(dataDir string, b Bootstrap) error {
	known := map[string]bool{}
	for _, rel := range BootstrapFiles {
		known[rel] = true
	}
	paths := make([]string, 0, len(b))
	for rel := range b {
		if !known[rel] {
			return fmt.Errorf("server bootstrap: unexpected file %q", rel)
		}
		paths = append(paths, rel)
	}
	sort.Strings(paths)
	for _, rel := range paths {
		p := filepath.Join(dataDir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		perm := os.FileMode(0o600)
		if strings.HasSuffix(rel, ".crt") {
			perm = 0o644
		}
		if err := atomicfile.Write(p, b[rel], perm); err != nil {
			return fmt.Errorf("server bootstrap: %w", err)
		}
	}
	return nil
}

// DBInfo lists the datastore's members for GET /db/info (embedded etcd
// only), as k3s answers servers that join.
type DBInfo func(ctx context.Context) (any, error)

func (s *Server) dbInfo(w http.ResponseWriter, r *http.Request) {
	if s.DBInfo == nil {
		http.Error(w, "this server's datastore is not embedded etcd (started without --cluster-init or --server): servers cannot join it", http.StatusNotFound)
		return
	}
	info, err := s.DBInfo(r.Context())
	if err != nil {
		http.Error(w, "etcd: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(info)
}
