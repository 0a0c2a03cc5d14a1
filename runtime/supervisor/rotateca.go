package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/bootstrap"
	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/token"
)

// RotateCARequest is the body of PUT /v1-k3s/cert/cacerts (`k3s
// certificate rotate-ca`), as k3s sends it: field name (certs.
// RotateCAFiles) -> the file's time and contents.
type RotateCARequest map[string]certs.CAFileData

// rotateCA validates new CA files (unless ?force=true) and stages them
// for this server's next start; with embedded etcd they go into the
// cluster's bootstrap record too, from which every other server takes
// them at its next start, as k3s saves them to its datastore.
func (s *Server) rotateCA(w http.ResponseWriter, r *http.Request) {
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
	if s.Record != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
		defer cancel()
		if err := s.recordStagedCA(ctx); err != nil {
			// Unstaged again: one server alone with new CAs would split
			// the cluster.
			_ = certs.UnstageCARotation(s.DataDir)
			http.Error(w, "writing the new CA files to the datastore: "+err.Error()+" (nothing changed)", http.StatusInternalServerError)
			return
		}
		s.logf("certificate: new CA files from %s staged and written to the datastore; restart k3s to use them (every server, then each agent)", r.RemoteAddr)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.logf("certificate: new CA files from %s staged; restart k3s to use them (the server first, then each agent)", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

// recordStagedCA puts the staged CA files into the cluster's bootstrap
// record, newer than every server's current ones.
func (s *Server) recordStagedCA(ctx context.Context) error {
	files, err := certs.StagedCAFiles(s.DataDir)
	if err != nil {
		return err
	}
	password, err := s.serverPassword()
	if err != nil {
		return err
	}
	now := s.now().UTC()
	d := bootstrap.Data{}
	for rel, content := range files {
		d[rel] = bootstrap.File{Timestamp: now, Content: content}
	}
	err = s.Record.Put(ctx, password, d)
	if err != nil {
		// The answer may have been lost after the commit: ask.
		if stored, lerr := s.Record.Load(ctx, password); lerr == nil && holds(stored, d) {
			return nil
		}
	}
	return err
}

// holds reports whether stored has every file of d with its contents.
func holds(stored, d bootstrap.Data) bool {
	for rel, f := range d {
		if !bytes.Equal(stored[rel].Content, f.Content) {
			return false
		}
	}
	return true
}

// serverPassword is the password of this server's token (server/token),
// which opens the cluster's bootstrap record.
func (s *Server) serverPassword() (string, error) {
	data, err := os.ReadFile(datadir.Layout{Root: s.DataDir}.TokenFile())
	if err != nil {
		return "", err
	}
	t, err := token.Parse(strings.TrimSpace(string(data)))
	if err != nil {
		return "", fmt.Errorf("%s: %w", datadir.Layout{Root: s.DataDir}.TokenFile(), err)
	}
	return t.Password, nil
}
