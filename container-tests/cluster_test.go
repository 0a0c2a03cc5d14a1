package containertest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// imageArchive is what `make image-oci` writes.
func imageArchive(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BALLAST_OCI_IMAGE"); p != "" {
		return p
	}
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "out", "ballast-cluster-test-x86_64.oci.tar")
}

// testBed starts the daemon if needed and loads the image under test:
// the context (ended with the test), the OCI runtime privileged nodes
// need ("" for the daemon's default) and the image ID.
func testBed(t testing.TB, timeout time.Duration) (ctx context.Context, runtime, image string) {
	if testing.Short() {
		t.Skip("container test bed: starts Docker containers (make test runs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	runtime, err := EnsureDaemon(ctx)
	if err != nil {
		t.Fatal(err)
	}
	image, err = LoadImage(ctx, imageArchive(t))
	if err != nil {
		t.Fatal(err)
	}
	return ctx, runtime, image
}

// newCluster makes a network for nodes of the image under test; the
// cluster is removed when the test ends (kept with
// BALLAST_KEEP_CLUSTER=1 for a look after a failure).
func newCluster(t testing.TB) (*Cluster, context.Context) {
	ctx, runtime, id := testBed(t, 30*time.Minute)
	c, err := NewCluster(ctx, id, runtime, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
			defer dcancel()
			for _, n := range c.nodes {
				t.Logf("=== %s: k3s output (last 40 lines)\n%s", n.Name, tail(n.Logs(dctx), 40))
				t.Logf("=== %s: component logs\n%s", n.Name, n.ComponentLogs(dctx, 15))
			}
			// Last, so that it is in the tail CI keeps.
			t.Logf("=== cluster state\n%s", c.State(dctx))
		}
		if os.Getenv("BALLAST_KEEP_CLUSTER") == "" {
			c.Close()
		} else {
			t.Logf("kept network %s and its containers", c.Network)
		}
	})
	return c, ctx
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// nodeReady is the node's Ready condition status as the server sees it.
func nodeReady(ctx context.Context, server *Node, name string) (string, error) {
	return server.Kubectl(ctx, "get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
}

// waitReady waits until each node's Ready condition is want ("True"),
// or, with want "!True", anything else: a node whose kubelet stopped
// reporting is Unknown (kubectl's NotReady).
func waitReady(ctx context.Context, t testing.TB, server *Node, want string, timeout time.Duration, names ...string) {
	t.Helper()
	start := time.Now()
	for _, name := range names {
		err := WaitFor(ctx, timeout, 2*time.Second, func() error {
			got, err := nodeReady(ctx, server, name)
			if err != nil {
				return err
			}
			if neg, ok := strings.CutPrefix(want, "!"); ok && got != neg || got == want {
				return nil
			}
			return fmt.Errorf("node %s Ready=%q, want %q", name, got, want)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("nodes %v Ready=%s after %.1fs", names, want, time.Since(start).Seconds())
}

const clusterManifest = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: testserver, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: testserver}}
  template:
    metadata: {labels: {app: testserver}}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: testserver}}
      containers:
      - name: testserver
        image: docker.io/ballast/testserver:v1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: testserver, namespace: default}
spec:
  selector: {app: testserver}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: testserver-np, namespace: default}
spec:
  type: NodePort
  selector: {app: testserver}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: testserver-lb, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: testserver}
  ports: [{port: 8081, targetPort: 8080}]
`

// nodeSummary is "providerID taints[keys] Type=address..." (Hostname left out).
func nodeSummary(ctx context.Context, server *Node, name string) (string, error) {
	out, err := server.Kubectl(ctx, "get", "node", name, "-o", "json")
	if err != nil {
		return "", err
	}
	var n struct {
		Spec struct {
			ProviderID string
			Taints     []struct{ Key string }
		}
		Status struct {
			Addresses []struct{ Type, Address string }
		}
	}
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		return "", err
	}
	var keys []string
	for _, t := range n.Spec.Taints {
		keys = append(keys, t.Key)
	}
	s := n.Spec.ProviderID + " taints[" + strings.Join(keys, ",") + "]"
	for _, a := range n.Status.Addresses {
		if a.Type != "Hostname" {
			s += " " + a.Type + "=" + a.Address
		}
	}
	return s, nil
}

type pod struct {
	Name, Node, IP string
}

func testserverPods(ctx context.Context, server *Node) ([]pod, error) {
	out, err := server.Kubectl(ctx, "get", "pods", "-n", "default", "-l", "app=testserver", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Spec     struct{ NodeName string }
			Status   struct {
				PodIP      string
				Conditions []struct{ Type, Status string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	var pods []pod
	for _, it := range list.Items {
		ready := false
		for _, c := range it.Status.Conditions {
			ready = ready || c.Type == "Ready" && c.Status == "True"
		}
		if !ready {
			return nil, fmt.Errorf("pod %s on %q is not Ready", it.Metadata.Name, it.Spec.NodeName)
		}
		pods = append(pods, pod{it.Metadata.Name, it.Spec.NodeName, it.Status.PodIP})
	}
	return pods, nil
}

// podGet asks a testserver pod, through the API server's pod proxy (the
// server reaching the pod on its node), for path.
func podGet(ctx context.Context, server *Node, p pod, path string) (string, error) {
	return server.Kubectl(ctx, "get", "--raw", "/api/v1/namespaces/default/pods/"+p.Name+":8080/proxy"+path)
}

// TestCluster is the cluster issue's scenario: a server and two agents
// join with the token, pods on every node reach each other and a Service,
// DNS answers on an agent, a NodePort answers on an agent,
// NetworkPolicies are enforced and their drops logged, an agent that
// stops goes NotReady and comes back Ready under its name, and bad tokens
// and a taken node name are refused with their messages.
func TestCluster(t *testing.T) {
	c, ctx := newCluster(t)
	const secret = "ballast-cluster-test-secret"
	server, err := c.Start(ctx, "server", map[string]string{"K3S_TOKEN": secret}, "server")
	if err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, server, "True", 5*time.Minute, "server")
	nodeToken, err := server.Exec(ctx, "cat", "/var/lib/rancher/k3s/server/node-token")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(nodeToken, "K10") || !strings.HasSuffix(nodeToken, "::server:"+secret) {
		t.Fatalf("node-token %q: want K10<hash>::server:%s", nodeToken, secret)
	}
	url := "https://" + server.IP + ":6443"

	// Agents: one with the CA-pinned token, one with the bare password.
	agent1, err := c.Start(ctx, "agent1", map[string]string{"K3S_URL": url, "K3S_TOKEN": nodeToken}, "agent", "--node-external-ip=203.0.113.10")
	if err != nil {
		t.Fatal(err)
	}
	agent2, err := c.Start(ctx, "agent2", map[string]string{"K3S_URL": url, "K3S_TOKEN": secret}, "agent")
	if err != nil {
		t.Fatal(err)
	}
	// And three that must be refused, each with its own reason.
	hash := strings.TrimPrefix(nodeToken[:strings.Index(nodeToken, "::")], "K10")
	wrongCA := "K10" + strings.Repeat("0", len(hash)) + "::server:" + secret
	refused := map[string]struct {
		env  map[string]string
		want string
	}{
		"badtoken": {map[string]string{"K3S_URL": url, "K3S_TOKEN": "K10" + hash + "::server:wrong"}, "the server refused the token"},
		"badca":    {map[string]string{"K3S_URL": url, "K3S_TOKEN": wrongCA}, "do not match the token's hash"},
	}
	var refusedNodes = map[string]*Node{}
	for name, r := range refused {
		n, err := c.Start(ctx, name, r.env, "agent")
		if err != nil {
			t.Fatal(err)
		}
		refusedNodes[name] = n
	}
	waitReady(ctx, t, server, "True", 5*time.Minute, "agent1", "agent2")
	// The cloud controller initialized every node: provider ID, no
	// uninitialized taint, the addresses the node declared.
	for _, n := range []*Node{server, agent1, agent2} {
		want := "k3s://" + n.Name + " taints[] InternalIP=" + n.IP
		if n == agent1 {
			want += " ExternalIP=203.0.113.10"
		}
		if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
			got, err := nodeSummary(ctx, server, n.Name)
			if err == nil && got != want {
				err = fmt.Errorf("node %s: %q, want %q", n.Name, got, want)
			}
			return err
		}); err != nil {
			t.Error(err)
		}
	}

	for name, r := range refused {
		n := refusedNodes[name]
		if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
			if logs := n.Logs(ctx); !strings.Contains(logs, r.want) {
				return fmt.Errorf("%s: output lacks %q:\n%s", name, r.want, tail(logs, 10))
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		if _, err := nodeReady(ctx, server, name); err == nil {
			t.Errorf("refused agent %s has a node", name)
		}
	}
	// A second machine named agent1 (its own node password) is refused,
	// and agent1 keeps its node.
	dup, err := c.StartHost(ctx, "dup", "agent1", map[string]string{"K3S_URL": url, "K3S_TOKEN": nodeToken}, "agent")
	if err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		if logs := dup.Logs(ctx); !strings.Contains(logs, "node password rejected") {
			return fmt.Errorf("second agent1: output lacks the rejection:\n%s", tail(logs, 10))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := dup.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// k3s token create makes a token a new agent joins with; when that
	// machine is gone and its node deleted, its password secret goes too.
	boot, err := server.Exec(ctx, "k3s", "token", "create", "--description", "cluster test")
	if err != nil || !strings.HasPrefix(boot, "K10"+hash+"::") || len(boot) != len("K10"+hash+"::")+23 {
		t.Fatalf("k3s token create: %q %v", boot, err)
	}
	id := boot[len("K10"+hash+"::"):][:6]
	if list, err := server.Exec(ctx, "k3s", "token", "list"); err != nil || !strings.Contains(list, id+".") || !strings.Contains(list, "cluster test") {
		t.Errorf("k3s token list: %v\n%s", err, list)
	}
	agent3, err := c.Start(ctx, "agent3", map[string]string{"K3S_URL": url, "K3S_TOKEN": boot}, "agent")
	if err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, server, "True", 3*time.Minute, "agent3")
	if err := agent3.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := server.Kubectl(ctx, "delete", "node", "agent3"); err != nil {
		t.Fatalf("delete node agent3: %v %s", err, out)
	}
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "secret", "-n", "kube-system", "agent3.node-password.k3s", "--ignore-not-found", "-o", "name")
		if err == nil && out != "" {
			err = fmt.Errorf("secret %s still there", out)
		}
		return err
	}); err != nil {
		t.Error(err)
	}
	if out, err := server.Exec(ctx, "k3s", "token", "delete", id); err != nil || !strings.Contains(out, id) {
		t.Errorf("k3s token delete: %v %q", err, out)
	}

	// CoreDNS's NodeHosts names every node.
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		hosts, err := server.Kubectl(ctx, "get", "configmap", "-n", "kube-system", "coredns", "-o", "jsonpath={.data.NodeHosts}")
		lines := strings.Split(hosts, "\n")
		for _, n := range []*Node{server, agent1, agent2} {
			if err == nil && !slices.Contains(lines, n.IP+" "+n.Name) {
				err = fmt.Errorf("NodeHosts lacks %s %s:\n%s", n.IP, n.Name, hosts)
			}
		}
		if err == nil && strings.Contains(hosts, "agent3") {
			err = fmt.Errorf("NodeHosts still names the deleted agent3:\n%s", hosts)
		}
		return err
	}); err != nil {
		t.Error(err)
	}

	// Workload over the three nodes.
	if out, err := server.Exec(ctx, "sh", "-c", "cat > /tmp/app.yaml <<'EOF'\n"+clusterManifest+"\nEOF\nk3s kubectl apply -f /tmp/app.yaml"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	var pods []pod
	if err := WaitFor(ctx, 5*time.Minute, 3*time.Second, func() error {
		var err error
		pods, err = testserverPods(ctx, server)
		if err == nil && len(pods) != 3 {
			err = fmt.Errorf("%d testserver pods ready, want 3", len(pods))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	onNode := map[string]pod{}
	for _, p := range pods {
		onNode[p.Node] = p
	}
	for _, n := range []string{"server", "agent1", "agent2"} {
		if _, ok := onNode[n]; !ok {
			t.Fatalf("no testserver pod on %s: %+v", n, pods)
		}
	}
	svcIP, err := server.Kubectl(ctx, "get", "svc", "testserver", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range pods {
		// Pod to pod across nodes (vxlan), and pod to the ClusterIP (kube-proxy on from's node).
		for _, to := range pods {
			body, err := podGet(ctx, server, from, "/fetch?url=http://"+to.IP+":8080/")
			if err != nil || !strings.Contains(body, "hostname: "+to.Name) {
				t.Errorf("pod on %s -> pod on %s (%s): %v %q", from.Node, to.Node, to.IP, err, body)
			}
		}
		body, err := podGet(ctx, server, from, "/fetch?url=http://"+svcIP+"/")
		if err != nil || !strings.Contains(body, "hello from ballast testserver") {
			t.Errorf("pod on %s -> Service %s: %v %q", from.Node, svcIP, err, body)
		}
	}
	// DNS from a pod on an agent: a Service name through CoreDNS.
	body, err := podGet(ctx, server, onNode["agent2"], "/resolve?name=testserver.default.svc.cluster.local")
	if err != nil || strings.TrimSpace(body) != svcIP {
		t.Errorf("DNS on agent2: %v %q, want %s", err, body, svcIP)
	}
	// NodePort on an agent, from the server node.
	if out, err := server.Exec(ctx, "curl", "-sS", "--max-time", "10", "http://"+agent1.IP+":30080/"); err != nil || !strings.Contains(out, "hello from ballast testserver") {
		t.Errorf("NodePort on agent1: %v %q", err, out)
	}

	checkNetworkPolicy(ctx, t, server, agent2)
	checkHelmChart(ctx, t, server)
	checkTraefik(ctx, t, server, []*Node{server, agent1, agent2}, agent2)

	// ServiceLB: the LoadBalancer Service gets the nodes' addresses (as in
	// k3s, only ExternalIPs once a node has one: agent1's), and its port
	// answers on every node, through that node's svclb pod.
	if err := WaitFor(ctx, 3*time.Minute, 2*time.Second, func() error {
		got, err := server.Kubectl(ctx, "get", "svc", "testserver-lb", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}")
		if err == nil && got != "203.0.113.10" {
			err = fmt.Errorf("testserver-lb ingress %q, want agent1's ExternalIP 203.0.113.10", got)
		}
		return err
	}); err != nil {
		out, _ := server.Kubectl(ctx, "get", "ds,pods", "-n", "kube-system", "-l", "svccontroller.k3s.cattle.io/svcname=testserver-lb", "-o", "wide")
		t.Errorf("%v\n%s", err, out)
	}
	for _, n := range []*Node{server, agent1, agent2} {
		if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
			out, err := agent2.Exec(ctx, "curl", "-sS", "--max-time", "5", "http://"+n.IP+":8081/")
			if err == nil && !strings.Contains(out, "hello from ballast testserver") {
				err = fmt.Errorf("%q", out)
			}
			return err
		}); err != nil {
			t.Errorf("LoadBalancer port 8081 on %s: %v", n.Name, err)
		}
	}

	// crictl on an agent, as k3s's troubleshooting guides use it: no flags,
	// no CRI_CONFIG_FILE (the agent's crictl.yaml is the default).
	if out, err := agent1.Exec(ctx, "env", "-u", "CRI_CONFIG_FILE", "crictl", "ps", "--name", "testserver", "--state", "running", "-o", "json"); err != nil || !strings.Contains(out, onNode["agent1"].Name) {
		t.Errorf("crictl ps on agent1: %v\n%s", err, out)
	}
	if out, err := agent1.Exec(ctx, "env", "-u", "CRI_CONFIG_FILE", "k3s", "crictl", "images"); err != nil || !strings.Contains(out, "ballast/testserver") {
		t.Errorf("k3s crictl images on agent1: %v\n%s", err, out)
	}
	if out, err := agent1.Exec(ctx, "cat", "/var/lib/rancher/k3s/agent/etc/crictl.yaml"); err != nil || out != "runtime-endpoint: unix:///run/k3s/containerd/containerd.sock" {
		t.Errorf("agent1's crictl.yaml: %v %q", err, out)
	}
	if out, err := agent1.Exec(ctx, "crictl", "--version"); err != nil || !strings.Contains(out, "crictl version v1.37.0") {
		t.Errorf("crictl --version: %v %q", err, out)
	}

	// An agent that stops goes NotReady; started again it is Ready under the same name.
	if err := agent2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, server, "!True", 3*time.Minute, "agent2")
	uid, _ := server.Kubectl(ctx, "get", "node", "agent2", "-o", "jsonpath={.metadata.uid}")
	if err := agent2.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, server, "True", 3*time.Minute, "agent2")
	if uid2, _ := server.Kubectl(ctx, "get", "node", "agent2", "-o", "jsonpath={.metadata.uid}"); uid2 != uid {
		t.Errorf("agent2 came back as another node object: uid %s, was %s", uid2, uid)
	}

	// k3s token rotate (with the token from server/token): the server's
	// token files carry the new one, an agent with the old token is
	// refused, one with the new token joins.
	const rotated = "ballast-rotated-secret"
	if out, err := server.Exec(ctx, "k3s", "token", "rotate", "--new-token", rotated); err != nil || !strings.Contains(out, "Token rotated") {
		t.Fatalf("k3s token rotate: %v %q", err, out)
	}
	if nt, err := server.Exec(ctx, "cat", "/var/lib/rancher/k3s/server/node-token"); err != nil || nt != "K10"+hash+"::server:"+rotated {
		t.Errorf("node-token after the rotation: %q %v", nt, err)
	}
	stale, err := c.Start(ctx, "stale", map[string]string{"K3S_URL": url, "K3S_TOKEN": secret}, "agent")
	if err != nil {
		t.Fatal(err)
	}
	// The new token's agent also names itself with --with-node-id:
	// "<hostname>-<id of /etc/rancher/node/id>".
	fresh, err := c.Start(ctx, "fresh", map[string]string{"K3S_URL": url, "K3S_TOKEN": rotated}, "agent", "--with-node-id")
	if err != nil {
		t.Fatal(err)
	}
	var nodeID string
	if err := WaitFor(ctx, time.Minute, time.Second, func() error {
		id, err := fresh.Exec(ctx, "cat", "/etc/rancher/node/id")
		if err == nil && len(id) != 8 {
			err = fmt.Errorf("/etc/rancher/node/id = %q", id)
		}
		nodeID = id
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, server, "True", 3*time.Minute, "fresh-"+nodeID)
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		if logs := stale.Logs(ctx); !strings.Contains(logs, "the server refused the token") {
			return fmt.Errorf("agent with the old token: output lacks the refusal:\n%s", tail(logs, 10))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	for _, n := range []*Node{stale, fresh} {
		if err := n.Remove(ctx); err != nil {
			t.Error(err)
		}
	}
}

// TestClusterHostGW: flannel's host-gw backend (routes instead of vxlan,
// for nodes on one L2 network) carries pod traffic between a server and
// an agent, which takes the backend from the server's /v1-k3s/config.
func TestClusterHostGW(t *testing.T) {
	c, ctx := newCluster(t)
	server, err := c.Start(ctx, "server", map[string]string{"K3S_TOKEN": "hostgw", "BALLAST_CERT_CHECK_INTERVAL": "10s"}, "server", "--flannel-backend=host-gw", "--disable=metrics-server,local-storage,servicelb,traefik", "--secrets-encryption", "--disable-network-policy", "--disable-helm-controller")
	if err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, server, "True", 5*time.Minute, "server")
	agent, err := c.Start(ctx, "agent", map[string]string{"K3S_URL": "https://" + server.IP + ":6443", "K3S_TOKEN": "hostgw"}, "agent")
	if err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, server, "True", 3*time.Minute, "agent")
	manifest := strings.Replace(clusterManifest, "replicas: 3", "replicas: 2", 1)
	if out, err := server.Exec(ctx, "sh", "-c", "cat > /tmp/app.yaml <<'EOF'\n"+manifest+"\nEOF\nk3s kubectl apply -f /tmp/app.yaml"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	var pods []pod
	if err := WaitFor(ctx, 3*time.Minute, 2*time.Second, func() error {
		var err error
		pods, err = testserverPods(ctx, server)
		if err == nil && (len(pods) != 2 || pods[0].Node == pods[1].Node) {
			err = fmt.Errorf("want one ready testserver pod on each node: %+v", pods)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// disable: traefik and disable-helm-controller: no traefik manifest,
	// and no Helm controller (it would have created its CRDs at start).
	if out, err := server.Exec(ctx, "ls", "/var/lib/rancher/k3s/server/manifests"); err != nil || strings.Contains(out, "traefik") {
		t.Errorf("server/manifests with disable: traefik: %v\n%s", err, out)
	}
	if out, err := server.Kubectl(ctx, "get", "crd", "helmcharts.helm.cattle.io", "--ignore-not-found", "-o", "name"); err != nil || out != "" {
		t.Errorf("HelmChart CRD with disable-helm-controller: %v %q", err, out)
	}
	// secrets-encryption: a Secret reaches the datastore encrypted (the raw
	// sqlite files hold k3s's aescbc envelope, not the value), and reads
	// back in the clear through the API.
	const plain = "ballast-secret-value-4f2a9c"
	if out, err := server.Kubectl(ctx, "create", "secret", "generic", "enc-test", "--from-literal=v="+plain); err != nil {
		t.Fatalf("create secret: %v %s", err, out)
	}
	if out, err := server.Exec(ctx, "sh", "-c", "sync; cat /var/lib/rancher/k3s/server/db/state.db* | grep -a -c "+plain+" || true"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("the Secret's value is in the datastore in the clear (%q matches, %v)", out, err)
	}
	if out, err := server.Exec(ctx, "sh", "-c", "cat /var/lib/rancher/k3s/server/db/state.db* | grep -a -c k8s:enc:aescbc:v1:aescbckey"); err != nil || strings.TrimSpace(out) == "0" {
		t.Errorf("no aescbc-encrypted object in the datastore: %v %q", err, out)
	}
	if out, err := server.Kubectl(ctx, "get", "secret", "enc-test", "-o", "jsonpath={.data.v}"); err != nil || out != base64.StdEncoding.EncodeToString([]byte(plain)) {
		t.Errorf("the Secret through the API: %v %q", err, out)
	}
	if out, err := server.Exec(ctx, "k3s", "secrets-encrypt", "status"); err != nil || !strings.Contains(out, "Encryption Status: Enabled\nCurrent Rotation Stage: start\nServer Encryption Hashes: All hashes match") || !strings.HasSuffix(out, " *      AES-CBC   aescbckey") {
		t.Errorf("k3s secrets-encrypt status: %v\n%s", err, out)
	}
	// rotate-keys, as k3s does it on a running server: a new key first,
	// kube-apiserver reloads the config (no restart), every Secret is
	// rewritten with the new key, the old key goes.
	if out, err := server.Exec(ctx, "k3s", "secrets-encrypt", "rotate", "--token", "wrong"); err == nil || !strings.Contains(out, "token") {
		t.Errorf("secrets-encrypt with a wrong token: %v %q", err, out)
	}
	if out, err := server.Exec(ctx, "k3s", "secrets-encrypt", "rotate"); err == nil || !strings.Contains(out, "incorrect stage: start found on node server") {
		t.Errorf("rotate before prepare: %v %q", err, out)
	}
	if out, err := server.Exec(ctx, "k3s", "secrets-encrypt", "rotate-keys"); err != nil || out != "keys rotated, reencryption finished" {
		t.Fatalf("k3s secrets-encrypt rotate-keys: %v %q", err, out)
	}
	st, err := server.Exec(ctx, "k3s", "secrets-encrypt", "status", "-o", "json")
	var status struct {
		Stage, ActiveKey string
		InactiveKeys     []string
		HashMatch        bool
	}
	if err == nil {
		err = json.Unmarshal([]byte(st), &status)
	}
	if err != nil || status.Stage != "reencrypt_finished" || !strings.HasPrefix(status.ActiveKey, "AES-CBC aescbckey-") || len(status.InactiveKeys) != 0 || !status.HashMatch {
		t.Errorf("status after rotate-keys: %v %+v\n%s", err, status, st)
	}
	newKey := strings.TrimPrefix(status.ActiveKey, "AES-CBC ")
	if out, err := server.Exec(ctx, "sh", "-c", "sync; cat /var/lib/rancher/k3s/server/db/state.db* | grep -a -c k8s:enc:aescbc:v1:"+newKey); err != nil || strings.TrimSpace(out) == "0" {
		t.Errorf("no Secret in the datastore under the new key %s: %v %q", newKey, err, out)
	}
	if out, err := server.Kubectl(ctx, "get", "secret", "enc-test", "-o", "jsonpath={.data.v}"); err != nil || out != base64.StdEncoding.EncodeToString([]byte(plain)) {
		t.Errorf("the Secret after rotate-keys: %v %q", err, out)
	}
	if out, err := server.Kubectl(ctx, "get", "events", "-A", "--field-selector", "reason=SecretsUpdateComplete", "-o", "jsonpath={.items[*].message}"); err != nil || !strings.Contains(out, "reencrypted") {
		t.Errorf("no SecretsUpdateComplete event: %v %q", err, out)
	}
	if out, err := server.Kubectl(ctx, "get", "node", "server", "-o", `jsonpath={.metadata.annotations.k3s\.io/encryption-config-hash}`); err != nil || !strings.HasPrefix(out, "reencrypt_finished-") {
		t.Errorf("the node's encryption-config-hash: %v %q", err, out)
	}
	// disable: servicelb: the LoadBalancer Service gets no DaemonSet and no
	// address (by now ServiceLB would have made both: TestCluster).
	if out, err := server.Kubectl(ctx, "get", "ds", "-A", "-l", "svccontroller.k3s.cattle.io/svcname", "-o", "name"); err != nil || out != "" {
		t.Errorf("servicelb disabled, yet DaemonSets: %v %q", err, out)
	}
	if out, err := server.Kubectl(ctx, "get", "svc", "testserver-lb", "-o", "jsonpath={.status.loadBalancer.ingress}"); err != nil || out != "" {
		t.Errorf("servicelb disabled, yet testserver-lb has ingress: %v %q", err, out)
	}
	// disable-network-policy reaches the agent through the cluster config:
	// no node runs the controller.
	for _, n := range []*Node{server, agent} {
		if out, err := n.Exec(ctx, "iptables", "-S", "BALLAST-NETPOL"); err == nil {
			t.Errorf("%s: network policy chain despite disable-network-policy:\n%s", n.Name, out)
		}
	}
	// No vxlan device: the route to the other node's pods goes via its address.
	if out, err := agent.Exec(ctx, "ip", "-o", "link", "show", "flannel.1"); err == nil {
		t.Errorf("host-gw node has a vxlan device: %s", out)
	}
	for _, from := range pods {
		for _, to := range pods {
			if body, err := podGet(ctx, server, from, "/fetch?url=http://"+to.IP+":8080/"); err != nil || !strings.Contains(body, "hostname: "+to.Name) {
				t.Errorf("host-gw: pod on %s -> pod on %s: %v %q", from.Node, to.Node, err, body)
			}
		}
	}

	// Certificates renewed on a running server (an appliance may never
	// restart): k3s certificate rotate removes the apiserver's and the
	// kubelet's; the server's periodic check (10 s here, 12 h by default)
	// issues new ones and restarts only those two components; the nodes
	// stay Ready and the pods keep serving.
	const serving = "/var/lib/rancher/k3s/server/tls/serving-kube-apiserver.crt"
	before, err := server.Exec(ctx, "sha256sum", serving)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := server.Exec(ctx, "k3s", "certificate", "rotate", "--service", "api-server,kubelet"); err != nil || !strings.Contains(out, "backed up certificates") {
		t.Fatalf("k3s certificate rotate: %v %q", err, out)
	}
	if err := WaitFor(ctx, 2*time.Minute, 2*time.Second, func() error {
		logs := server.Logs(ctx)
		for _, want := range []string{"certificates: restarted kube-apiserver", "certificates: restarted kubelet"} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("k3s output lacks %q:\n%s", want, tail(logs, 15))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if after, err := server.Exec(ctx, "sha256sum", serving); err != nil || after == before {
		t.Errorf("serving certificate not renewed: %v (%q)", err, after)
	}
	if logs := server.Logs(ctx); strings.Contains(logs, "certificates: restarted kube-proxy") || strings.Contains(logs, "certificates: restarted kube-scheduler") {
		t.Errorf("components whose certificates were kept were restarted:\n%s", tail(logs, 20))
	}
	waitReady(ctx, t, server, "True", 3*time.Minute, "server", "agent")
	if out, err := server.Exec(ctx, "k3s", "certificate", "check"); err != nil || !strings.Contains(out, "serving-kube-apiserver.crt") || strings.Contains(out, "EXPIRED") {
		t.Errorf("k3s certificate check: %v\n%s", err, out)
	}
	if err := WaitFor(ctx, 2*time.Minute, 2*time.Second, func() error {
		for _, from := range pods {
			if body, err := podGet(ctx, server, from, "/"); err != nil || !strings.Contains(body, "hello from ballast testserver") {
				return fmt.Errorf("pod on %s after the renewal: %v %q", from.Node, err, body)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	checkRotateCA(ctx, t, server, agent, pods)
}
