package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ballast-os/ballast/runtime/bootstrap"
)

// Bootstrap is GET /v1-k3s/server-bootstrap: relative path -> the file's
// time and contents.
type Bootstrap = bootstrap.Data

// serverBootstrap answers a server (server token only) with the cluster's
// bootstrap files: the datastore's record, opened with the token the
// server gave, or with no record this server's own files. A server
// joining takes them all; a member restarting takes what is newer.
func (s *Server) serverBootstrap(w http.ResponseWriter, r *http.Request) {
	d, err := bootstrap.ReadDisk(s.DataDir)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	from := "this server's files"
	if s.Record != nil {
		_, password, _ := r.BasicAuth()
		stored, err := s.Record.Load(r.Context(), password)
		switch {
		case err == nil:
			for rel, f := range stored {
				d[rel] = f
			}
			from = "the datastore's record"
		case errors.Is(err, bootstrap.ErrOtherToken):
			http.Error(w, err.Error(), http.StatusConflict)
			return
		case !errors.Is(err, bootstrap.ErrNotFound):
			s.logf("join API: reading the datastore's bootstrap data: %v (sending this server's files)", err)
		}
	}
	s.logf("join API: server bootstrap data (%s) sent to %s", from, r.RemoteAddr)
	writeJSON(w, d)
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
