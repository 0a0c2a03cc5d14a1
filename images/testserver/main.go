// Command testserver is the HTTP server of ballast's end-to-end tests
// (image docker.io/ballast/testserver:v1). It listens on :$PORT (default
// 8080) and answers:
//
//	GET /                 "hello from ballast testserver\nhostname: <hostname>\n"
//	GET /healthz          "ok\n"
//	GET /file?path=p      the file p under the data directory ($DATA_DIR, default /data)
//	PUT /file?path=p      writes the request body to p (parents created), answers 204
//	GET /resolve?name=n   the addresses n resolves to, one per line (502 if it does not)
//	GET /fetch?url=u      GET http://u from the pod: its status line, then its body (502 if unreachable)
//
// so a test can prove a pod is reachable, that a volume keeps data across
// pod restarts, that the pod's DNS works, and that the pod reaches
// Services and other pods (the image has no shell to run a client in). It uses the standard library
// only: the image builder compiles it from its embedded source.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"
)

// Greeting starts the answer to GET /.
const Greeting = "hello from ballast testserver"

// maxBody bounds what PUT /file accepts.
const maxBody = 64 << 20

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	dataDir := os.Getenv("DATA_DIR")
	if dataDir == "" {
		dataDir = "/data"
	}
	srv := &http.Server{
		Addr:              ":" + port,
		Handler:           newHandler(dataDir, net.DefaultResolver),
		ReadHeaderTimeout: 10 * time.Second,
	}
	// As PID 1 of its container the server gets no default SIGTERM
	// disposition; handle it so pods stop at once.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("testserver: listening on %s, data in %s", srv.Addr, dataDir)
	select {
	case err := <-errc:
		log.Fatalf("testserver: %v", err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil {
			log.Fatalf("testserver: shutdown: %v", err)
		}
	}
}

type resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

func newHandler(dataDir string, res resolver) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		host, err := os.Hostname()
		if err != nil {
			host = "unknown (" + err.Error() + ")"
		}
		fmt.Fprintf(w, "%s\nhostname: %s\n", Greeting, host)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		root, name, ok := openData(w, r, dataDir)
		if !ok {
			return
		}
		defer root.Close()
		data, err := root.ReadFile(name)
		if err != nil {
			httpError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(data)
	})
	mux.HandleFunc("PUT /file", func(w http.ResponseWriter, r *http.Request) {
		root, name, ok := openData(w, r, dataDir)
		if !ok {
			return
		}
		defer root.Close()
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		if dir := path.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				httpError(w, err)
				return
			}
		}
		if err := writeDurable(root, name, data); err != nil {
			httpError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /resolve", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" {
			http.Error(w, "missing ?name=", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		addrs, err := res.LookupHost(ctx, name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.WriteString(w, strings.Join(addrs, "\n")+"\n")
	})
	// A new connection per fetch: a kept-alive one would carry a request
	// past a NetworkPolicy applied since (established connections stay
	// open, as with kube-router), and what a test asks is whether a new
	// connection gets through now.
	fetch := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	mux.HandleFunc("GET /fetch", func(w http.ResponseWriter, r *http.Request) {
		u := r.URL.Query().Get("url")
		if !strings.HasPrefix(u, "http://") {
			http.Error(w, "want ?url=http://...", http.StatusBadRequest)
			return
		}
		resp, err := fetch.Get(u)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		fmt.Fprintf(w, "%s\n", resp.Status)
		io.Copy(w, io.LimitReader(resp.Body, 1<<20))
	})
	return mux
}

// openData opens the data directory as an os.Root, so ?path= cannot
// reach outside it, and returns the cleaned relative name.
func openData(w http.ResponseWriter, r *http.Request, dataDir string) (*os.Root, string, bool) {
	p := r.URL.Query().Get("path")
	name := path.Clean(strings.TrimPrefix(p, "/"))
	if p == "" || name == "." || name == ".." || strings.HasPrefix(name, "../") {
		http.Error(w, fmt.Sprintf("bad ?path=%q: want a file name under the data directory", p), http.StatusBadRequest)
		return nil, "", false
	}
	root, err := os.OpenRoot(dataDir)
	if err != nil {
		httpError(w, err)
		return nil, "", false
	}
	return root, name, true
}

func httpError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, fs.ErrNotExist) {
		code = http.StatusNotFound
	}
	http.Error(w, err.Error(), code)
}

// writeDurable replaces name under root with data and returns only once
// it is on disk (temporary file synced, renamed, directory synced): the
// power-cut scenario counts an acknowledged PUT that a cut loses as lost.
func writeDurable(root *os.Root, name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return err
	}
	d, err := root.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
