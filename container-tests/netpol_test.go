package containertest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// netpolManifest: a target pod on agent2, a client the policy allows on
// agent1 (its traffic crosses the vxlan), a client it does not allow on
// agent2 (bridged on the target's node). The target's readiness probe
// (the kubelet, from the node) must keep passing under the policies.
const netpolManifest = `
apiVersion: v1
kind: Pod
metadata: {name: np-target, namespace: default, labels: {app: np-target}}
spec:
  nodeName: agent2
  containers:
  - name: testserver
    image: docker.io/ballast/testserver:v1
    imagePullPolicy: Never
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: np-allowed, namespace: default, labels: {app: np-client, role: allowed}}
spec:
  nodeName: agent1
  containers:
  - {name: testserver, image: docker.io/ballast/testserver:v1, imagePullPolicy: Never}
---
apiVersion: v1
kind: Pod
metadata: {name: np-denied, namespace: default, labels: {app: np-client}}
spec:
  nodeName: agent2
  containers:
  - {name: testserver, image: docker.io/ballast/testserver:v1, imagePullPolicy: Never}
`

const netpolPolicies = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np-deny-all, namespace: default}
spec:
  podSelector: {matchLabels: {app: np-target}}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: np-allow
  namespace: default
  annotations:
    kube-router.io/netpol-nflog-limit: 5/second
    kube-router.io/netpol-nflog-limit-burst: "20"
spec:
  podSelector: {matchLabels: {app: np-target}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: allowed}}}]
    ports: [{port: http}]
`

// checkNetworkPolicy: NetworkPolicies are enforced on the node of the pod
// they select, a dropped connection is logged with the policies, and
// removing them opens the pod again and leaves no rules behind.
func checkNetworkPolicy(ctx context.Context, t *testing.T, server, agent2 *Node) {
	t.Helper()
	apply := func(verb, manifest string) {
		t.Helper()
		if out, err := server.Exec(ctx, "sh", "-c", "cat > /tmp/np.yaml <<'EOF'\n"+manifest+"\nEOF\nk3s kubectl "+verb+" -f /tmp/np.yaml"); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", verb, err, out)
		}
	}
	apply("apply", netpolManifest)
	pods := map[string]pod{}
	if err := WaitFor(ctx, 3*time.Minute, 2*time.Second, func() error {
		for _, name := range []string{"np-target", "np-allowed", "np-denied"} {
			out, err := server.Kubectl(ctx, "get", "pod", name, "-o", `jsonpath={.status.podIP} {.spec.nodeName} {.status.conditions[?(@.type=="Ready")].status}`)
			f := strings.Fields(out)
			if err != nil || len(f) != 3 || f[2] != "True" {
				return fmt.Errorf("pod %s not Ready: %v %q", name, err, out)
			}
			pods[name] = pod{Name: name, IP: f[0], Node: f[1]}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	target := "/fetch?url=http://" + pods["np-target"].IP + ":8080/"
	reach := func(from string, want bool) error {
		body, err := podGet(ctx, server, pods[from], target)
		got := err == nil && strings.Contains(body, "hostname: np-target")
		if got != want {
			return fmt.Errorf("%s -> np-target: reached=%v, want %v (%v %q)", from, got, want, err, body)
		}
		return nil
	}
	for _, from := range []string{"np-allowed", "np-denied"} {
		if err := reach(from, true); err != nil {
			t.Fatalf("before any policy: %v", err)
		}
	}

	apply("apply", netpolPolicies)
	for _, c := range []struct {
		from string
		want bool
	}{{"np-allowed", true}, {"np-denied", false}} {
		if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error { return reach(c.from, c.want) }); err != nil {
			t.Error(err)
		}
	}
	// The probe from the node still passes: the target stays Ready.
	if out, err := server.Kubectl(ctx, "get", "pod", "np-target", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`); err != nil || out != "True" {
		t.Errorf("np-target under the policies: Ready=%q %v", out, err)
	}
	// The drop, logged on the target's node with the policies, at the
	// rate the annotations set.
	wantLine := "ingress default/np-allow,default/np-deny-all: TCP " + pods["np-denied"].IP + ":"
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		log, err := agent2.Exec(ctx, "cat", "/var/log/k3s-network-policy.log")
		if err != nil || !strings.Contains(log, wantLine) || !strings.Contains(log, "-> "+pods["np-target"].IP+":8080") {
			return fmt.Errorf("drop log on agent2 lacks %q ... -> %s:8080: %v\n%s", wantLine, pods["np-target"].IP, err, tail(log, 10))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	// tcpdump on the node reads the drops from NFLOG group 100, as k3s
	// documents (`tcpdump -ni nflog:100`).
	captured := make(chan string, 1)
	go func() {
		out, err := agent2.Exec(ctx, "timeout", "60", "tcpdump", "-l", "-ni", "nflog:100", "-c", "1")
		captured <- fmt.Sprintf("%s (%v)", out, err)
	}()
	var dump string
	for dump == "" {
		reach("np-denied", false)
		select {
		case dump = <-captured:
		case <-time.After(2 * time.Second):
		}
	}
	if !strings.Contains(dump, pods["np-denied"].IP+".") || !strings.Contains(dump, "> "+pods["np-target"].IP+".8080") {
		t.Errorf("tcpdump -ni nflog:100 on agent2: want a packet %s -> %s:8080, got:\n%s", pods["np-denied"].IP, pods["np-target"].IP, dump)
	}
	if out, err := agent2.Exec(ctx, "sh", "-c", "iptables -S | grep NFLOG"); err != nil || !strings.Contains(out, "--limit 5/sec --limit-burst 20") || !strings.Contains(out, "--nflog-group 100") {
		t.Errorf("NFLOG rules on agent2: %v\n%s", err, out)
	}

	// Without the policies the target is open again, and no chain or set
	// of the controller is left.
	apply("delete", netpolPolicies)
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error { return reach("np-denied", true) }); err != nil {
		t.Error(err)
	}
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		out, _ := agent2.Exec(ctx, "sh", "-c", "iptables -S | grep -c -- '-N BNP-'; ipset list -n | grep -c '^bnp-'")
		if strings.Join(strings.Fields(out), " ") != "0 0" {
			return fmt.Errorf("chains and sets left on agent2: %q", out)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	apply("delete", netpolManifest)
}
