package qemutest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestE2EPackaged boots the runtime image (the default image plus the test
// server's container image) as it comes, air-gapped, and checks what k3s
// ships in every cluster after the first boot: `kubectl get pods -A` lists
// the k3s seed's pods (coredns, local-path-provisioner, metrics-server,
// helm-install-traefik-crd and helm-install-traefik Completed,
// svclb-traefik, traefik) and no other system pod, both charts were
// installed by the Helm controller, and Traefik, exposed on port 80 by
// ServiceLB, routes the cloud-config's Ingress from the host.
//
// A long scenario (make test-long): under single-threaded TCG the two
// helm jobs and Traefik's start take ten minutes more than the node takes
// to come Ready, so TestE2ERuntime leaves Traefik out (`disable:
// [traefik]`) and the container bed checks Traefik, the Helm controller
// and ServiceLB in depth on every run.
func TestE2EPackaged(t *testing.T) {
	requireLong(t)
	useCores(t, prioLong, 1)
	img := testImage(t, ImageRuntimeEnv, "ballast-runtime-e2e-x86_64.img")
	sc := newScenario(t, "packaged1")
	m := startMachine(t, Options{
		Disk: img, DiskSize: 0, Memory: 4096, CPUs: 2,
		UserData: runtimeUserData("packaged1", sc.pubkey),
		Forwards: map[int]int{22: 0, 6443: 0, 80: 0},
	})
	if p := writeLoginKey(sc, m); p != "" {
		t.Logf("log in: ssh -i %s -p %d -o StrictHostKeyChecking=no root@127.0.0.1", p, m.HostPort(22))
	}
	start := time.Now()
	logNode(t, waitNodeReady(t, m, runtimeDeadline))
	api := apiClient(t, m)
	waitPodsRunning(t, m, api, runtimeDeadline, map[string]string{
		"kube-system/coredns":                "k8s-app=kube-dns",
		"kube-system/local-path-provisioner": "app=local-path-provisioner",
		"kube-system/metrics-server":         "k8s-app=metrics-server",
		"kube-system/traefik":                "app.kubernetes.io/name=traefik",
		"kube-system/svclb-traefik":          "svccontroller.k3s.cattle.io/svcname=traefik",
		"default/testserver":                 "app=testserver",
	})
	t.Logf("the packaged pods run %s after power-on", time.Since(start).Round(time.Second))
	checkHelmInstalls(t, api, "traefik-crd", "traefik")
	if got := httpGet(t, m, fmt.Sprintf("http://127.0.0.1:%d/", m.HostPort(80)), 5*time.Minute); !strings.Contains(got, "hello from ballast testserver") {
		t.Errorf("GET / on port 80 through Traefik's Ingress: %q", got)
	}

	// The system pods as `kubectl get pods -A` shows them, named as on
	// k3s (pod names less their generated suffixes).
	out := nodeExec(t, m, "k3s", "kubectl", "get", "pods", "-n", "kube-system", "--no-headers", "-o", "custom-columns=NAME:.metadata.name,STATUS:.status.phase")
	t.Logf("kubectl get pods -n kube-system:\n%s", out)
	want := map[string]string{
		"coredns":                  "Running",
		"local-path-provisioner":   "Running",
		"metrics-server":           "Running",
		"helm-install-traefik-crd": "Succeeded",
		"helm-install-traefik":     "Succeeded",
		"svclb-traefik":            "Running",
		"traefik":                  "Running",
	}
	names := slices.Collect(maps.Keys(want))
	got := map[string][]string{} // seed name -> its pods' phases
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		// local-path-provisioner's helper pods come and go with volumes.
		if len(f) != 2 || strings.HasPrefix(f[0], "helper-pod-") {
			continue
		}
		name := seedPodName(f[0], names)
		got[name] = append(got[name], f[1])
	}
	for name, phase := range want {
		if !slices.Contains(got[name], phase) {
			t.Errorf("kube-system/%s-*: phases %q; want one %s", name, got[name], phase)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("kube-system/%s: a pod the k3s seed's list does not have", name)
		}
	}
}

// seedPodName is the name in names that pod was generated from (the
// longest that is a prefix of it followed by "-"), or pod itself.
func seedPodName(pod string, names []string) string {
	best := ""
	for _, n := range names {
		if strings.HasPrefix(pod, n+"-") && len(n) > len(best) {
			best = n
		}
	}
	if best == "" {
		return pod
	}
	return best
}
