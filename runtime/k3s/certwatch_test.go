package k3s

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/runtime/certs"
)

type fakeRunner struct{ restarted []string }

func (f *fakeRunner) Restart(name string) error {
	if name == "etcd" { // kine on this node: no etcd component
		return errors.New("no component")
	}
	f.restarted = append(f.restarted, name)
	return nil
}

// TestRenewCertificates: a server that never restarts renews its leaf
// certificates when they come within certs.RenewWithin of expiry, and
// restarts only the components that read them at start, the apiserver
// first; a check with nothing due restarts nothing.
func TestRenewCertificates(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := certs.Options{DataDir: t.TempDir(), NodeName: "node1", NodeIPs: []netip.Addr{netip.MustParseAddr("10.0.0.2")},
		ServiceCIDR: netip.MustParsePrefix("10.43.0.0/16"), APIServerPort: 6444, Agent: true, Now: func() time.Time { return now }}
	if _, err := certs.Ensure(o); err != nil {
		t.Fatal(err)
	}
	admins := 0
	writeAdmin := func() error { admins++; return nil }
	var log bytes.Buffer
	run := &fakeRunner{}
	// Ten days later nothing is due.
	now = now.Add(10 * 24 * time.Hour)
	if got, err := renewCertificates(o, writeAdmin, run, &log); err != nil || len(got) != 0 || admins != 0 {
		t.Fatalf("nothing due: restarted %v, %v, admin kubeconfig written %d times\n%s", got, err, admins, log.String())
	}
	// 250 days after issue, 115 days are left: inside the window.
	now = now.Add(240 * 24 * time.Hour)
	got, err := renewCertificates(o, writeAdmin, run, &log)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "flannel", "kubelet"}
	if got[0] != "kube-apiserver" || !sameSet(got, want) || !slices.Equal(got, run.restarted) {
		t.Errorf("restarted %v, want %v with kube-apiserver first", got, want)
	}
	if admins != 1 || !strings.Contains(log.String(), "certificates: renewed") || !strings.Contains(log.String(), "client-kubelet.crt") {
		t.Errorf("admin kubeconfig written %d times; log:\n%s", admins, log.String())
	}
	// The renewed certificates run a year from now: the next check is quiet.
	run.restarted = nil
	now = now.Add(24 * time.Hour)
	if got, err := renewCertificates(o, writeAdmin, run, &log); err != nil || len(got) != 0 {
		t.Errorf("right after a renewal: restarted %v, %v", got, err)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestRestartsFor(t *testing.T) {
	got := restartsFor([]string{"/var/lib/rancher/k3s/agent/client-kubelet.crt", "/var/lib/rancher/k3s/agent/serving-kubelet.crt",
		"/var/lib/rancher/k3s/agent/client-k3s-controller.crt", "/var/lib/rancher/k3s/agent/server-ca.crt"})
	if !slices.Equal(got, []string{"flannel", "kubelet"}) {
		t.Errorf("restartsFor = %v", got)
	}
}
