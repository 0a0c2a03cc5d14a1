package containertest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// checkRotateCA rotates the server and client CAs of a running
// server + agent cluster as k3s documents it for a cross-signed CA: new
// intermediate CAs signed by the current ones, given to `k3s certificate
// rotate-ca --path`, take effect when the server and then the agent
// restart; every certificate the old CAs signed is issued again by the
// new ones, the token's CA hash follows the new server CA, and the nodes
// and pods carry on (the API server reaches the agent's kubelet with its
// new serving certificate).
func checkRotateCA(ctx context.Context, t *testing.T, server, agent *Node, pods []pod) {
	t.Helper()
	read := func(n *Node, path string) []byte { t.Helper(); return nodeRead(ctx, t, n, path) }
	write := func(n *Node, path string, data []byte) { t.Helper(); nodeWrite(ctx, t, n, path, data) }
	oldServerCA := read(server, tls+"server-ca.crt")
	serverBundle, serverKey, serverInter := crossSigned(t, oldServerCA, read(server, tls+"server-ca.key"))
	clientBundle, clientKey, clientInter := crossSigned(t, read(server, tls+"client-ca.crt"), read(server, tls+"client-ca.key"))

	// A bundle of one certificate is refused, and nothing is staged.
	write(server, "/tmp/badca/tls/server-ca.crt", pemBlocks(t, serverBundle)[0])
	write(server, "/tmp/badca/tls/server-ca.key", serverKey)
	if out, err := server.Exec(ctx, "k3s", "certificate", "rotate-ca", "--path", "/tmp/badca"); err == nil || !strings.Contains(out, "single certificate") {
		t.Errorf("rotate-ca with a lone certificate: %v %q; want it refused", err, out)
	}
	if out, err := server.Exec(ctx, "ls", "/var/lib/rancher/k3s/server/tls-staged"); err == nil {
		t.Errorf("a refused rotate-ca left files staged: %s", out)
	}

	for name, data := range map[string][]byte{"server-ca.crt": serverBundle, "server-ca.key": serverKey, "client-ca.crt": clientBundle, "client-ca.key": clientKey} {
		write(server, "/tmp/newca/tls/"+name, data)
	}
	out, err := server.Exec(ctx, "k3s", "certificate", "rotate-ca", "--path", "/tmp/newca")
	sum := sha256.Sum256(serverBundle)
	if err != nil || !strings.Contains(out, "certificates staged") || !strings.Contains(out, "to "+hex.EncodeToString(sum[:])) {
		t.Fatalf("k3s certificate rotate-ca: %v\n%s", err, out)
	}
	if !bytes.Equal(read(server, tls+"server-ca.crt"), oldServerCA) {
		t.Error("rotate-ca changed server-ca.crt before the restart")
	}

	// The server, restarted, uses the new CAs: its certificates are issued
	// again by the new ones, and the token file carries the new hash.
	if err := server.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := server.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, 3*time.Minute, 2*time.Second, func() error {
		_, err := server.Kubectl(ctx, "get", "--raw", "/readyz")
		return err
	}); err != nil {
		t.Fatalf("the API after the restart with new CAs: %v\n%s", err, tail(server.Logs(ctx), 30))
	}
	if logs := server.Logs(ctx); !strings.Contains(logs, "rotate-ca: new CA files in place") {
		t.Errorf("k3s output lacks the rotate-ca line:\n%s", tail(logs, 30))
	}
	if got := read(server, tls+"server-ca.crt"); !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(serverBundle)) {
		t.Errorf("server-ca.crt after the restart is not the new bundle")
	}
	checkSigned(t, "server: serving-kube-apiserver.crt", read(server, tls+"serving-kube-apiserver.crt"), serverInter)
	checkSigned(t, "server: client-admin.crt", read(server, tls+"client-admin.crt"), clientInter)
	if tok := read(server, "/var/lib/rancher/k3s/server/token"); !strings.HasPrefix(string(tok), "K10"+hex.EncodeToString(sum[:])+"::server:") {
		t.Errorf("server/token after the rotation: %q; want the new CA's hash", tok)
	}

	// The agent, restarted, fetches the new CAs and new certificates.
	restart := time.Now()
	if err := agent.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := agent.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, 3*time.Minute, 2*time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "lease", "-n", "kube-node-lease", "agent", "-o", "jsonpath={.spec.renewTime}")
		if err != nil {
			return err
		}
		renewed, err := time.Parse(time.RFC3339Nano, out)
		if err != nil || !renewed.After(restart) {
			return fmt.Errorf("agent's node lease renewed at %q (%v), not since its restart", out, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, tail(agent.Logs(ctx), 30))
	}
	checkSigned(t, "agent: client-kubelet.crt", read(agent, "/var/lib/rancher/k3s/agent/client-kubelet.crt"), clientInter)
	checkSigned(t, "agent: serving-kubelet.crt", read(agent, "/var/lib/rancher/k3s/agent/serving-kubelet.crt"), serverInter)
	waitReady(ctx, t, server, "True", 3*time.Minute, "server", "agent")
	// The API server reaches the agent's kubelet (its serving certificate
	// checked against the new server CA) for a pod's log.
	for _, p := range pods {
		if p.Node != "agent" {
			continue
		}
		if err := WaitFor(ctx, 2*time.Minute, 2*time.Second, func() error {
			_, err := server.Kubectl(ctx, "logs", p.Name)
			return err
		}); err != nil {
			t.Errorf("kubectl logs %s (on the agent) after the CA rotation: %v", p.Name, err)
		}
	}
}

// tls is a server's certificate directory.
const tls = "/var/lib/rancher/k3s/server/tls/"

// nodeRead is a file of n.
func nodeRead(ctx context.Context, t *testing.T, n *Node, path string) []byte {
	t.Helper()
	out, err := n.Exec(ctx, "cat", path)
	if err != nil {
		t.Fatalf("%s: cat %s: %v", n.Name, path, err)
	}
	return []byte(out + "\n")
}

// nodeWrite writes data (PEM text) to path in n.
func nodeWrite(ctx context.Context, t *testing.T, n *Node, path string, data []byte) {
	t.Helper()
	if out, err := n.Exec(ctx, "sh", "-c", fmt.Sprintf("mkdir -p $(dirname %s) && cat > %s <<'EOF'\n%sEOF", path, path, data)); err != nil {
		t.Fatalf("%s: writing %s: %v %s", n.Name, path, err, out)
	}
}

// crossSigned makes a new CA signed by the current one (certPEM, keyPEM
// from server/tls), as k3s's rotation scripts do: the bundle rotate-ca
// takes (the new CA, then the current bundle), its key, and the new CA.
func crossSigned(t *testing.T, certPEM, keyPEM []byte) (bundle, newKeyPEM []byte, newCA *x509.Certificate) {
	t.Helper()
	parent, err := x509.ParseCertificate(pemDER(t, pemBlocks(t, certPEM)[0]))
	if err != nil {
		t.Fatal(err)
	}
	parentKey, err := x509.ParseECPrivateKey(pemDER(t, keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: parent.Subject.CommonName + "-rotated"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	newCA, _ = x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	bundle = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), bytes.TrimSpace(certPEM)...)
	return append(bundle, '\n'), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), newCA
}

// pemBlocks splits a PEM file into its blocks, each PEM-encoded.
func pemBlocks(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		out = append(out, pem.EncodeToMemory(b))
	}
	if len(out) == 0 {
		t.Fatalf("no PEM block in %q", data)
	}
	return out
}

func pemDER(t *testing.T, data []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("no PEM block in %q", data)
	}
	return b.Bytes
}

// checkSigned: the first certificate of certPEM is signed by ca.
func checkSigned(t *testing.T, what string, certPEM []byte, ca *x509.Certificate) {
	t.Helper()
	c, err := x509.ParseCertificate(pemDER(t, certPEM))
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if err := c.CheckSignatureFrom(ca); err != nil {
		t.Errorf("%s: not signed by the new CA %q (issuer %q): %v", what, ca.Subject.CommonName, c.Issuer.CommonName, err)
	}
}
