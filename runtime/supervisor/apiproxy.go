package supervisor

import (
	"crypto/tls"
	"crypto/x509"
	"github.com/ballast-os/ballast/runtime/certs"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// apiProxy forwards every request that is not the join API to
// kube-apiserver on 127.0.0.1:6444, as k3s's listener hands them to its
// in-process apiserver. The apiserver is another process here, so the
// client's TLS ends at the supervisor; the client certificate's identity
// travels as the front-proxy headers (X-Remote-User, X-Remote-Group), sent
// with the auth-proxy certificate that the apiserver's
// --requestheader-client-ca-file trusts. Bearer tokens (service accounts,
// bootstrap tokens) pass through unchanged for the apiserver to check.
type apiProxy struct {
	rp       *httputil.ReverseProxy
	clientCA *x509.CertPool
}

func newAPIProxy(apiserver *url.URL, serverCA *x509.CertPool, clientCA *x509.CertPool, authProxy *certs.KeyPair) *apiProxy {
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: serverCA, GetClientCertificate: authProxy.GetClientCertificate, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 50,
		IdleConnTimeout:     90 * time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(apiserver)
			r.Out.Host = r.In.Host
		},
		Transport: tr,
		// Watches and logs stream: flush every write.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "the Kubernetes API server is not reachable yet: "+err.Error(), http.StatusServiceUnavailable)
		},
	}
	return &apiProxy{rp: rp, clientCA: clientCA}
}

// frontProxyHeaders are the headers the apiserver believes from the
// auth-proxy certificate; a client must never set them itself.
var frontProxyHeaders = []string{"X-Remote-User", "X-Remote-Group"}

func (p *apiProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = r.Clone(r.Context())
	for _, h := range frontProxyHeaders {
		r.Header.Del(h)
	}
	for k := range r.Header {
		if strings.HasPrefix(k, "X-Remote-Extra-") {
			r.Header.Del(k)
		}
	}
	if c := verifiedClient(r, p.clientCA); c != nil {
		// A certificate identifies the client; any Authorization header
		// would be a second identity.
		r.Header.Del("Authorization")
		r.Header.Set("X-Remote-User", c.Subject.CommonName)
		for _, g := range c.Subject.Organization {
			r.Header.Add("X-Remote-Group", g)
		}
	}
	p.rp.ServeHTTP(w, r)
}

// verifiedClient is the client certificate the request came with, when it
// chains to the cluster's client CA and is valid for client auth; nil otherwise.
func verifiedClient(r *http.Request, pool *x509.CertPool) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || pool == nil {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := r.TLS.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil
	}
	return leaf
}
