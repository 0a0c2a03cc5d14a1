// Package supervisor is k3s's "supervisor": the one TLS listener on
// https-listen-port (6443) of every server. It serves the join API that
// agents use (/cacerts, /ping, /v1-k3s/*: the cluster's settings, the CAs,
// certificates signed for a node's own keys, the API server addresses) and
// passes every other request to kube-apiserver on 127.0.0.1:6444.
//
// It runs inside the `k3s server` process, as in k3s; the processes it
// talks to (kube-apiserver) run beside it under package processes.
package supervisor

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ballast-os/ballast/runtime/bootstrap"
	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/kubeapi"
	"github.com/ballast-os/ballast/runtime/token"
)

// Server is one server's supervisor listener.
type Server struct {
	// DataDir is the k3s data dir: server/tls holds the CAs, server/cred
	// the passwd file with the server and agent passwords.
	DataDir string
	// Listen is bind-address:https-listen-port ("0.0.0.0:6443").
	Listen string
	// Port is https-listen-port, published as the kubernetes Service's
	// endpoint port and in /v1-k3s/apiservers.
	Port int
	// AdvertiseAddress is this server's address for other nodes.
	AdvertiseAddress netip.Addr
	// APIServer is the local kube-apiserver ("https://127.0.0.1:6444").
	APIServer string
	// Cluster is what /v1-k3s/config answers.
	Cluster ClusterConfig
	// Logf receives one line per event worth a person's attention.
	Logf func(format string, args ...any)
	// Now is the clock for signing; nil means time.Now.
	Now func() time.Time
	// AgentTokenSet: the server was given an agent token of its own, which
	// `k3s token rotate` leaves alone.
	AgentTokenSet bool
	// DBInfo lists the etcd members for servers that join (nil: this
	// server's datastore is not embedded etcd).
	DBInfo DBInfo
	// EncryptStatus and EncryptConfig serve `k3s secrets-encrypt`
	// (GET /v1-k3s/encrypt/status, PUT /v1-k3s/encrypt/config; server
	// token only); nil: not served.
	EncryptStatus, EncryptConfig http.HandlerFunc
	// Record is the cluster's bootstrap record in the datastore (nil:
	// none, this server's datastore is not embedded etcd). Servers
	// restarting read it through /v1-k3s/server-bootstrap, and the
	// changes made here (token rotate, rotate-ca) are written to it.
	Record *bootstrap.Store

	serverCAPEM, clientCAPEM []byte
	serverCA, clientCA       *certs.CA
	clientPool               *x509.CertPool
	usersMu                  sync.RWMutex
	users                    map[string]string // user -> password (server/cred/passwd)
	api                      *kubeapi.Client
	passwords                *nodePasswords
	proxy                    *apiProxy
	serving                  *certs.KeyPair
	serversMu                sync.Mutex
	servers                  []string   // host:port of the servers with fresh leases
	rotateCAMu               sync.Mutex // one rotate-ca request stages at a time
}

// Program is the name in k3s's join API paths (/v1-k3s/...) and headers.
const Program = "k3s"

// Headers a node sends with its kubelet certificate requests.
const (
	HeaderNodeName     = Program + "-Node-Name"
	HeaderNodePassword = Program + "-Node-Password"
	HeaderNodeIP       = Program + "-Node-IP"
)

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Load reads the CAs, the passwords, the serving certificate and the
// supervisor's own client credentials from the data dir. The server has
// laid them out (certs.Ensure, token.EnsureServer) before.
func (s *Server) Load() error {
	tlsDir := datadir.Layout{Root: s.DataDir}.TLS()
	f := func(name string) string { return filepath.Join(tlsDir, name) }
	var err error
	if s.serverCAPEM, err = os.ReadFile(f("server-ca.crt")); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	if s.clientCAPEM, err = os.ReadFile(f("client-ca.crt")); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	if s.serverCA, err = certs.LoadCA(f("server-ca.crt"), f("server-ca.key")); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	if s.clientCA, err = certs.LoadCA(f("client-ca.crt"), f("client-ca.key")); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	serverPool := x509.NewCertPool()
	serverPool.AppendCertsFromPEM(s.serverCAPEM)
	s.clientPool = x509.NewCertPool()
	s.clientPool.AppendCertsFromPEM(s.clientCAPEM)
	// Read again when rotated (certs.RotateDue): no restart needed.
	if s.serving, err = certs.LoadKeyPair(f("serving-kube-apiserver.crt"), f("serving-kube-apiserver.key")); err != nil {
		return fmt.Errorf("supervisor: serving certificate: %w", err)
	}
	authProxy, err := certs.LoadKeyPair(f("client-auth-proxy.crt"), f("client-auth-proxy.key"))
	if err != nil {
		return fmt.Errorf("supervisor: auth-proxy certificate: %w", err)
	}
	self, err := certs.LoadKeyPair(f("client-supervisor.crt"), f("client-supervisor.key"))
	if err != nil {
		return fmt.Errorf("supervisor: client certificate: %w", err)
	}
	if s.users, err = token.ReadPasswd(filepath.Join(datadir.Layout{Root: s.DataDir}.Cred(), "passwd")); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	apiURL, err := url.Parse(s.APIServer)
	if err != nil {
		return fmt.Errorf("supervisor: API server URL: %w", err)
	}
	s.proxy = newAPIProxy(apiURL, serverPool, s.clientPool, authProxy)
	if s.api, err = kubeapi.NewWithClientCert(s.APIServer, s.serverCAPEM, self.GetClientCertificate); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	s.passwords = &nodePasswords{api: s.api}
	return nil
}

// Run listens on Listen and serves until ctx ends; it also keeps the
// kubernetes Service's endpoints pointing at this listener.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: s.Handler(),
		TLSConfig: &tls.Config{
			GetCertificate: s.serving.GetCertificate,
			// Asked for, checked per request: a client may instead
			// bring a bearer token, or no credentials for /cacerts.
			ClientAuth: tls.RequestClientCert,
			MinVersion: tls.VersionTLS12,
		},
		ReadHeaderTimeout: 30 * time.Second,
	}
	if s.AdvertiseAddress.IsValid() {
		go s.publishEndpoints(ctx)
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	s.logf("supervisor listening on %s (join API and Kubernetes API)", ln.Addr())
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("supervisor: %w", err)
}

// Handler routes the join API and passes the rest to the API server.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cacerts", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(s.serverCAPEM)
	})
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "pong")
	})
	// Charts and other files for HelmCharts, unauthenticated as in k3s
	// (https://%{KUBERNETES_API}%/static/charts/<chart>.tgz).
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticFiles(datadir.Layout{Root: s.DataDir}.Static())))
	p := "/v1-" + Program
	agent := func(h http.HandlerFunc) http.Handler { return s.agentAuth(h) }
	mux.Handle("GET "+p+"/config", agent(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.Cluster) }))
	mux.Handle("GET "+p+"/client-ca.crt", agent(s.file(s.clientCAPEM)))
	mux.Handle("GET "+p+"/server-ca.crt", agent(s.file(s.serverCAPEM)))
	mux.Handle("GET "+p+"/apiservers", agent(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.apiServers())
	}))
	mux.Handle("GET "+p+"/readyz", agent(s.readyz))
	mux.Handle("PUT "+p+"/token", s.serverAuth(http.HandlerFunc(s.rotateToken)))
	mux.Handle("GET "+p+"/server-bootstrap", s.serverAuth(http.HandlerFunc(s.serverBootstrap)))
	mux.Handle("GET /db/info", s.serverAuth(http.HandlerFunc(s.dbInfo)))
	mux.Handle("PUT "+p+"/cert/cacerts", s.serverAuth(http.HandlerFunc(s.rotateCA)))
	if s.EncryptStatus != nil && s.EncryptConfig != nil {
		mux.Handle("GET "+p+"/encrypt/status", s.serverAuth(s.EncryptStatus))
		mux.Handle("PUT "+p+"/encrypt/config", s.serverAuth(s.EncryptConfig))
	}
	mux.Handle("POST "+p+"/serving-kubelet.crt", agent(s.nodeCert(true, func(node string) certs.Request {
		return certs.Request{CommonName: node, Server: true}
	})))
	mux.Handle("POST "+p+"/client-kubelet.crt", agent(s.nodeCert(false, func(node string) certs.Request {
		return certs.Request{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}, Client: true}
	})))
	mux.Handle("POST "+p+"/client-kube-proxy.crt", agent(s.nodeCert(false, func(string) certs.Request {
		return certs.Request{CommonName: "system:kube-proxy", Client: true}
	})))
	mux.Handle("POST "+p+"/client-"+Program+"-controller.crt", agent(s.nodeCert(false, func(string) certs.Request {
		return certs.Request{CommonName: "system:" + Program + "-controller", Client: true}
	})))
	mux.Handle(p+"/", agent(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".crt") && r.Method == http.MethodGet {
			http.Error(w, "this server signs certificate requests only: POST a PEM CERTIFICATE REQUEST for the node's own key", http.StatusMethodNotAllowed)
			return
		}
		http.NotFound(w, r)
	}))
	mux.Handle("/", s.proxy)
	return mux
}

// staticFiles serves the files under dir, without directory listings.
func staticFiles(dir string) http.Handler {
	fsys := os.DirFS(dir)
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimSuffix(r.URL.Path, "/")
		if st, err := fs.Stat(fsys, path.Clean(name)); err != nil || st.IsDir() {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) file(data []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(data)
	}
}

// agentAuth admits what k3s's join API admits: the server or agent token
// (basic auth with the user and password of server/cred/passwd), or a
// node's own client certificate (group system:nodes), when it renews.
func (s *Server) agentAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); ok {
			if s.checkUser(user, pass) {
				h.ServeHTTP(w, r)
				return
			}
			s.logf("join API: %s %s from %s: wrong token for user %q", r.Method, r.URL.Path, r.RemoteAddr, user)
			http.Error(w, "Unauthorized: the token is not this cluster's", http.StatusUnauthorized)
			return
		}
		if c := verifiedClient(r, s.clientPool); c != nil {
			for _, g := range c.Subject.Organization {
				if g == "system:nodes" {
					h.ServeHTTP(w, r)
					return
				}
			}
		}
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			user, err := s.reviewToken(r.Context(), bearer)
			if err == nil {
				h.ServeHTTP(w, r)
				return
			}
			s.logf("join API: %s %s from %s: %v", r.Method, r.URL.Path, r.RemoteAddr, err)
			if user == "" {
				http.Error(w, "Unauthorized: the token is not this cluster's (expired or deleted bootstrap token?)", http.StatusUnauthorized)
			} else {
				http.Error(w, "Forbidden: "+err.Error(), http.StatusForbidden)
			}
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="k3s"`)
		http.Error(w, "Unauthorized: a join token is needed", http.StatusUnauthorized)
	})
}

func (s *Server) checkUser(user, pass string) bool {
	s.usersMu.RLock()
	defer s.usersMu.RUnlock()
	want, known := s.users[user]
	return known && constantTimeEqual(want, pass)
}

// serverAuth admits the server token only (user "server"), as k3s's
// server-only endpoints do.
func (s *Server) serverAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); ok && user == "server" && s.checkUser(user, pass) {
			h.ServeHTTP(w, r)
			return
		}
		s.logf("join API: %s %s from %s: not the server token", r.Method, r.URL.Path, r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Basic realm="k3s"`)
		http.Error(w, "Unauthorized: this needs the server token (server/token), not an agent or bootstrap token", http.StatusUnauthorized)
	})
}

// TokenRotateRequest is the body of PUT /v1-k3s/token (k3s token rotate).
type TokenRotateRequest struct {
	NewToken *string `json:"newToken,omitempty"`
}

// rotateToken gives the server a new token (token.Rotate) and answers
// joins with it from now on.
func (s *Server) rotateToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRotateRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, "want JSON {\"newToken\": \"...\"}: "+err.Error(), http.StatusBadRequest)
		return
	}
	newPassword := ""
	if req.NewToken != nil && *req.NewToken != "" {
		t, err := token.Parse(*req.NewToken)
		if err != nil {
			http.Error(w, "newToken: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := t.VerifyCA(s.serverCAPEM); t.CAHash != "" && err != nil {
			http.Error(w, "newToken: "+err.Error(), http.StatusBadRequest)
			return
		}
		newPassword = t.Password
	}
	lay := datadir.Layout{Root: s.DataDir}
	passwd := filepath.Join(lay.Cred(), "passwd")
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	// The cluster's record moves to the new token before this server's
	// files change: the other servers take the new passwd from it when
	// they restart with the new token. Once it has moved, the new token
	// must reach the caller whatever happens to this server's files.
	moved := false
	var newToken token.Token
	record := func(oldPassword string, t token.Token, passwdText []byte) error {
		newToken = t
		if s.Record == nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
		defer cancel()
		changes := bootstrap.Data{"server/cred/passwd": {Timestamp: s.now().UTC(), Content: passwdText}}
		err := s.Record.Rekey(ctx, oldPassword, t.Password, changes)
		if err != nil {
			// The answer may have been lost after the commit: ask.
			if d, lerr := s.Record.Load(ctx, t.Password); lerr == nil && bytes.Equal(d["server/cred/passwd"].Content, passwdText) {
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("the datastore's bootstrap data: %w (nothing changed)", err)
		}
		moved = true
		return nil
	}
	if _, err := token.RotateWith(token.Files{Token: lay.TokenFile(), Passwd: passwd}, s.serverCAPEM, newPassword, s.AgentTokenSet, record); err != nil {
		s.logf("token rotate: %v", err)
		msg := err.Error()
		if moved {
			msg = fmt.Sprintf("the cluster's token is now %s (the datastore has it), but this server's files could not be written: %v; start this server with the new token to take them", newToken, err)
		}
		http.Error(w, msg, http.StatusInternalServerError)
		return
	}
	users, err := token.ReadPasswd(passwd)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.users = users
	if s.Record != nil {
		s.logf("token rotated by %s: new joins need the new token (%s); restart the other servers with it, and they take the new passwords from the datastore", r.RemoteAddr, lay.TokenFile())
	} else {
		s.logf("token rotated by %s: new joins need the new token (%s)", r.RemoteAddr, lay.TokenFile())
	}
	w.WriteHeader(http.StatusOK)
}

// reviewToken asks the API server who a bearer token is (TokenReview):
// bootstrap tokens from `k3s token create` are admitted, as are nodes'
// own tokens; user is "" when the token is not valid at all.
func (s *Server) reviewToken(ctx context.Context, bearer string) (user string, err error) {
	review := map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
		"spec": map[string]any{"token": bearer},
	}
	var out struct {
		Status struct {
			Authenticated bool
			Error         string
			User          struct {
				Username string
				Groups   []string
			}
		}
	}
	if err := s.api.Do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/tokenreviews", "application/json", review, &out); err != nil {
		return "", fmt.Errorf("token review: %w", err)
	}
	if !out.Status.Authenticated {
		return "", fmt.Errorf("token not authenticated: %s", out.Status.Error)
	}
	for _, g := range out.Status.User.Groups {
		if g == "system:nodes" || strings.HasPrefix(g, "system:bootstrappers:") {
			return out.Status.User.Username, nil
		}
	}
	return out.Status.User.Username, fmt.Errorf("%s (groups %s) may not join nodes", out.Status.User.Username, strings.Join(out.Status.User.Groups, ","))
}

// nodeCert signs the PEM certificate request in the body for the node
// named in the k3s-Node-Name header. Kubelet certificates (withPassword)
// also need the node's password, checked against its secret.
func (s *Server) nodeCert(serving bool, req func(node string) certs.Request) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		node := r.Header.Get(HeaderNodeName)
		if !validNodeName(node) {
			http.Error(w, fmt.Sprintf("header %s: %q is not a valid node name (lower-case letters, digits, '-' and '.')", HeaderNodeName, node), http.StatusBadRequest)
			return
		}
		cr := req(node)
		kubelet := strings.HasPrefix(cr.CommonName, "system:node:") || serving
		if kubelet {
			pass := r.Header.Get(HeaderNodePassword)
			if pass == "" {
				http.Error(w, "header "+HeaderNodePassword+" is missing", http.StatusBadRequest)
				return
			}
			if err := s.passwords.ensure(r.Context(), node, pass); err != nil {
				if errors.Is(err, ErrNodePassword) {
					s.logf("join API: node %s from %s: %v", node, r.RemoteAddr, err)
					http.Error(w, fmt.Sprintf("Forbidden: node password rejected for node %s, %s", node, nodePasswordHint), http.StatusForbidden)
					return
				}
				http.Error(w, "checking the node password: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		if serving {
			cr.DNSNames = []string{node, "localhost"}
			cr.IPs = []net.IP{net.IPv4(127, 0, 0, 1).To4()}
			for _, v := range strings.Split(r.Header.Get(HeaderNodeIP), ",") {
				if v = strings.TrimSpace(v); v == "" {
					continue
				}
				a, err := netip.ParseAddr(v)
				if err != nil {
					http.Error(w, fmt.Sprintf("header %s: %q is not an IP address", HeaderNodeIP, v), http.StatusBadRequest)
					return
				}
				cr.IPs = append(cr.IPs, net.IP(a.AsSlice()))
			}
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		csr, err := certs.ParseCSR(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ca := s.clientCA
		if serving {
			ca = s.serverCA
		}
		chain, err := ca.Sign(csr.PublicKey, cr, s.now())
		if err != nil {
			http.Error(w, "signing: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(chain)
	}
}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// validNodeName: a DNS-1123 subdomain, as the API requires of node names.
func validNodeName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// apiServers is what /v1-k3s/apiservers lists: the supervisor addresses
// of the cluster's servers with a fresh lease (this one until the first
// renewal).
func (s *Server) apiServers() []string {
	s.serversMu.Lock()
	defer s.serversMu.Unlock()
	if len(s.servers) > 0 {
		return slices.Clone(s.servers)
	}
	if !s.AdvertiseAddress.IsValid() {
		return []string{}
	}
	return []string{netip.AddrPortFrom(s.AdvertiseAddress, uint16(s.Port)).String()}
}

func (s *Server) setServers(list []string) {
	s.serversMu.Lock()
	defer s.serversMu.Unlock()
	s.servers = list
}

// readyz answers as the API server's /readyz does.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	err := s.api.Do(r.Context(), http.MethodGet, "/readyz", "", nil, nil)
	if err != nil {
		http.Error(w, "API server not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok")
}
