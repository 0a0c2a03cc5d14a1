package supervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/ballast-os/ballast/runtime/certs"
)

// serverCount is how many servers the cluster has: those with a fresh
// lease, or the control-plane nodes when the API lists more (a server
// that is down holds no fresh lease but still has the old CAs).
func (s *Server) serverCount(r *http.Request) int {
	n := len(s.apiServers())
	if s.api == nil {
		return n
	}
	var nodes struct{ Items []json.RawMessage }
	if err := s.api.Do(r.Context(), http.MethodGet, "/api/v1/nodes?labelSelector=node-role.kubernetes.io%2Fcontrol-plane%3Dtrue", "", nil, &nodes); err == nil {
		n = max(n, len(nodes.Items))
	}
	return n
}

// RotateCARequest is the body of PUT /v1-k3s/cert/cacerts (`k3s
// certificate rotate-ca`), as k3s sends it: field name (certs.
// RotateCAFiles) -> the file's time and contents.
type RotateCARequest map[string]certs.CAFileData

// rotateCA validates new CA files (unless ?force=true) and stages them
// for this server's next start, as k3s saves them to its datastore for
// the next start. Refused on a cluster of several servers: ballast's
// servers take the CAs only when they join, so the others would keep
// the old ones.
func (s *Server) rotateCA(w http.ResponseWriter, r *http.Request) {
	if n := s.serverCount(r); n > 1 {
		http.Error(w, fmt.Sprintf("this cluster has %d servers, and ballast's servers take the cluster's CAs only when they join: new CAs on one would leave the others trusting the old ones; rotate CAs on a cluster with one server", n), http.StatusConflict)
		return
	}
	var req RotateCARequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, "want JSON {\"ServerCA\": {\"Timestamp\": ..., \"Content\": base64}, ...}: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(req) == 0 {
		http.Error(w, "no CA files in the request", http.StatusBadRequest)
		return
	}
	force := r.URL.Query().Get("force") == "true"
	if err := certs.ValidateCARotation(s.DataDir, req, s.now(), force); err != nil {
		http.Error(w, "the new CA certificates and keys are not valid for this cluster:\n"+err.Error(), http.StatusBadRequest)
		return
	}
	if force {
		s.logf("certificate: rotate-ca with --force from %s: new CAs need not chain to the current ones", r.RemoteAddr)
	}
	s.rotateCAMu.Lock()
	defer s.rotateCAMu.Unlock()
	if err := certs.StageCARotation(s.DataDir, req); err != nil {
		http.Error(w, "staging the new CA files: "+err.Error(), http.StatusInternalServerError)
		return
	}
	s.logf("certificate: new CA files from %s staged; restart k3s to use them (the server first, then each agent)", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}
