package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func opts(t *testing.T, c *clock) Options {
	return Options{
		DataDir:       t.TempDir(),
		NodeName:      "node1",
		NodeIPs:       []netip.Addr{netip.MustParseAddr("192.168.1.10")},
		SANs:          []string{"k3s.example.com", "10.0.0.5"},
		ServiceCIDR:   netip.MustParsePrefix("10.43.0.0/16"),
		ClusterDomain: "cluster.local",
		APIServerPort: 6444,
		Agent:         true,
		Now:           c.now,
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCert(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func TestEnsureLayout(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := opts(t, c)
	r, err := Ensure(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Created) != 6 { // 5 CAs + service key
		t.Errorf("created %v", r.Created)
	}
	caCert := readCert(t, o.tls("server-ca.crt"))
	if !caCert.IsCA || !strings.HasPrefix(caCert.Subject.CommonName, "k3s-server-ca@") {
		t.Errorf("server CA %v", caCert.Subject)
	}
	pub, ok := caCert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", caCert.PublicKey)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	api := readCert(t, o.tls("serving-kube-apiserver.crt"))
	for _, name := range []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", "k3s.example.com", "10.43.0.1", "127.0.0.1", "192.168.1.10", "10.0.0.5"} {
		if _, err := api.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: c.t}); err != nil {
			t.Errorf("apiserver cert does not verify for %s: %v", name, err)
		}
	}
	if got := api.NotAfter.Sub(c.t); got < 364*24*time.Hour || got > 366*24*time.Hour {
		t.Errorf("validity %v, want 365 days", got)
	}
	clientCA := readCert(t, o.tls("client-ca.crt"))
	cpool := x509.NewCertPool()
	cpool.AddCert(clientCA)
	admin := readCert(t, o.tls("client-admin.crt"))
	if admin.Subject.CommonName != "system:admin" || !slices.Equal(admin.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("admin subject %v", admin.Subject)
	}
	if _, err := admin.Verify(x509.VerifyOptions{Roots: cpool, CurrentTime: c.t, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin cert: %v", err)
	}
	kubelet := readCert(t, filepath.Join(o.DataDir, "agent", "client-kubelet.crt"))
	if kubelet.Subject.CommonName != "system:node:node1" || kubelet.Subject.Organization[0] != "system:nodes" {
		t.Errorf("kubelet subject %v", kubelet.Subject)
	}
	for _, f := range []string{"client-ca.nochain.crt", "server-ca.nochain.crt", "request-header-ca.crt", "service.key", "service.current.key",
		"client-controller.crt", "client-scheduler.crt", "client-kube-proxy.crt", "client-k3s-controller.crt", "client-supervisor.crt",
		"client-kube-apiserver.crt", "client-auth-proxy.crt", "etcd/server-ca.crt", "etcd/peer-ca.key", "etcd/client.crt", "etcd/server-client.crt", "etcd/peer-server-client.crt",
		"kube-controller-manager/kube-controller-manager.crt", "kube-scheduler/kube-scheduler.crt"} {
		if _, err := os.Stat(o.tls(f)); err != nil {
			t.Error(err)
		}
	}
	if fi, _ := os.Stat(o.tls("client-ca.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v", fi.Mode())
	}
	for _, f := range []string{"server/cred/admin.kubeconfig", "server/cred/controller.kubeconfig", "server/cred/scheduler.kubeconfig", "server/cred/supervisor.kubeconfig", "agent/kubelet.kubeconfig", "agent/kubeproxy.kubeconfig"} {
		data, err := os.ReadFile(filepath.Join(o.DataDir, f))
		if err != nil || !bytes.Contains(data, []byte("https://127.0.0.1:6444")) {
			t.Errorf("%s: %v %s", f, err, data)
		}
	}
	// Second start the same day: nothing to do.
	r, err = Ensure(o)
	if err != nil || len(r.Issued) != 0 || len(r.Created) != 0 {
		t.Errorf("second Ensure issued %v created %v (%v)", r.Issued, r.Created, err)
	}
}

func TestRenewalWindow(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &clock{start}
	o := opts(t, c)
	if _, err := Ensure(o); err != nil {
		t.Fatal(err)
	}
	keyBefore, _ := os.ReadFile(o.tls("client-admin.key"))
	// 121 days before expiry: not yet.
	c.t = start.Add(LeafValidity - 121*24*time.Hour)
	r, err := Ensure(o)
	if err != nil || len(r.Issued) != 0 {
		t.Fatalf("issued %v at 121 days before expiry (%v)", r.Issued, err)
	}
	// 119 days before expiry: every leaf is reissued, keys kept, CAs kept.
	c.t = start.Add(LeafValidity - 119*24*time.Hour)
	r, err = Ensure(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Issued) != 19 {
		t.Errorf("reissued %d certificates, want 19: %v", len(r.Issued), r.Issued)
	}
	if why := r.Issued[o.tls("client-admin.crt")]; !strings.Contains(why, "within 120 days") {
		t.Errorf("reason %q", why)
	}
	admin := readCert(t, o.tls("client-admin.crt"))
	if !admin.NotAfter.Equal(c.t.Add(LeafValidity).Truncate(time.Second)) {
		t.Errorf("new NotAfter %v", admin.NotAfter)
	}
	keyAfter, _ := os.ReadFile(o.tls("client-admin.key"))
	if !bytes.Equal(keyBefore, keyAfter) {
		t.Error("renewal replaced the key")
	}
	if len(r.Created) != 0 {
		t.Errorf("renewal created %v", r.Created)
	}
}

func TestSANChangeReissues(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := opts(t, c)
	if _, err := Ensure(o); err != nil {
		t.Fatal(err)
	}
	o.SANs = append(o.SANs, "new.example.com")
	r, err := Ensure(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Issued) != 1 || r.Issued[o.tls("serving-kube-apiserver.crt")] != "missing SAN new.example.com" {
		t.Errorf("issued %v", r.Issued)
	}
}

func TestRotate(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := opts(t, c)
	if _, err := Ensure(o); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Hour)
	if _, _, err := Rotate(o, []string{"nope"}); err == nil {
		t.Error("unknown service accepted")
	}
	backup, removed, err := Rotate(o, []string{"admin", "kubelet"})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(o.DataDir, "server", fmt.Sprintf("tls-%d", c.t.Unix())); backup != want {
		t.Errorf("backup dir %s, want %s", backup, want)
	}
	if _, err := os.Stat(filepath.Join(backup, "client-admin.crt")); err != nil {
		t.Errorf("backup lacks client-admin.crt: %v", err)
	}
	want := []string{filepath.Join(o.DataDir, "agent", "client-kubelet.crt"), filepath.Join(o.DataDir, "agent", "serving-kubelet.crt"), o.tls("client-admin.crt")}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	r, err := Ensure(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Issued) != 3 {
		t.Errorf("after rotate, issued %v", r.Issued)
	}
	// All services.
	_, removed, err = Rotate(o, nil)
	if err != nil || len(removed) != 19 {
		t.Errorf("rotate all removed %d (%v)", len(removed), err)
	}
}

func TestAdminKubeconfig(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := opts(t, c)
	if _, err := Ensure(o); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "etc", "k3s.yaml")
	if err := WriteAdminKubeconfig(o.DataDir, path, 6443, 0o644); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode())
	}
	var kc kubeconfig
	data, _ := os.ReadFile(path)
	if err := yaml.Unmarshal(data, &kc); err != nil {
		t.Fatal(err)
	}
	if kc.Clusters[0].Cluster["server"] != "https://127.0.0.1:6443" || kc.CurrentContext != "default" {
		t.Errorf("kubeconfig %s", data)
	}
	ca, _ := base64.StdEncoding.DecodeString(kc.Clusters[0].Cluster["certificate-authority-data"])
	want, _ := os.ReadFile(o.tls("server-ca.crt"))
	if !bytes.Equal(ca, want) {
		t.Error("CA data differs from server-ca.crt")
	}
}

func TestHalfCARefused(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := opts(t, c)
	if _, err := Ensure(o); err != nil {
		t.Fatal(err)
	}
	os.Remove(o.tls("client-ca.crt"))
	if _, err := Ensure(o); err == nil || !strings.Contains(err.Error(), "client-ca") {
		t.Errorf("err = %v", err)
	}
}

// A power cut during the first start can leave a CA's key without its
// certificate, or a zero-length file: with nothing issued yet, the next
// start makes the CA afresh instead of failing on every boot.
func TestTornCABeforeAnyLeaf(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for name, tear := range map[string]func(o Options){
		"key only": func(o Options) {
			os.WriteFile(o.tls("server-ca.key"), []byte("-----BEGIN EC PRIVATE KEY-----\n"), 0o600)
		},
		"empty certificate": func(o Options) {
			os.WriteFile(o.tls("client-ca.crt"), nil, 0o644)
			os.WriteFile(o.tls("client-ca.key"), nil, 0o600)
		},
	} {
		t.Run(name, func(t *testing.T) {
			o := opts(t, c)
			if err := os.MkdirAll(o.tls(), 0o700); err != nil {
				t.Fatal(err)
			}
			tear(o)
			r, err := Ensure(o)
			if err != nil {
				t.Fatalf("Ensure after a torn first start: %v", err)
			}
			if !slices.Contains(r.Created, o.tls("server-ca.crt")) || !slices.Contains(r.Created, o.tls("client-ca.crt")) {
				t.Errorf("created %v; want the CAs", r.Created)
			}
			ca := readCert(t, o.tls("server-ca.crt"))
			leaf := readCert(t, o.tls("serving-kube-apiserver.crt"))
			if err := leaf.CheckSignatureFrom(ca); err != nil {
				t.Errorf("the apiserver's certificate is not signed by the new server CA: %v", err)
			}
		})
	}
}

// Once certificates are issued, a torn CA is an error that names the file:
// replacing it would cut off every node that trusts it.
func TestTornCAAfterLeavesRefused(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := opts(t, c)
	if _, err := Ensure(o); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(o.tls("server-ca.key"))
	os.WriteFile(o.tls("server-ca.crt"), nil, 0o644)
	_, err := Ensure(o)
	if err == nil || !strings.Contains(err.Error(), "server-ca.crt") || !strings.Contains(err.Error(), "not replaced") {
		t.Fatalf("err = %v", err)
	}
	if after, _ := os.ReadFile(o.tls("server-ca.key")); !bytes.Equal(before, after) {
		t.Error("the CA key was replaced")
	}
}

// TestListAndTable: every certificate of a server's data dir, with the
// status k3s certificate check shows.
func TestListAndTable(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	o := Options{DataDir: dir, NodeName: "n1", ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16"), APIServerPort: 6444, Agent: true, Now: func() time.Time { return now }}
	if _, err := Ensure(o); err != nil {
		t.Fatal(err)
	}
	list, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range list {
		names = append(names, filepath.Base(c.Path))
	}
	for _, want := range []string{"server-ca.crt", "serving-kube-apiserver.crt", "client-kubelet.crt", "kube-scheduler.crt", "peer-server-client.crt"} {
		if !slices.Contains(names, want) {
			t.Errorf("List lacks %s: %v", want, names)
		}
	}
	var out bytes.Buffer
	if err := PrintTable(&out, list, now.Add(300*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !strings.HasPrefix(lines[0], "FILENAME") || len(lines) != len(list)+1 {
		t.Fatalf("table:\n%s", out.String())
	}
	for i, c := range list {
		l := lines[i+1]
		if !strings.HasPrefix(l, c.Path) || c.CA && !strings.HasSuffix(l, "OK") || !c.CA && !strings.HasSuffix(l, "WARNING") {
			t.Errorf("300 days on, %q: want CAs OK and leaves WARNING (65 days left)", l)
		}
	}
}
