package qemutest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestE2ECluster boots two machines from the same runtime image, made a
// server and an agent by their cloud-configs alone (fw_cfg), on a private
// QEMU socket network beside each one's own user network: the agent joins
// with the token, its node comes Ready, and a pod the server schedules on
// it answers HTTP through the agent's NodePort and through the server's
// API (server to pod over flannel's vxlan). The server runs embedded etcd
// (cluster-init: true), and the documented etcdctl line works on it as
// written, as does etcdctl with no flags from an SSH login. Traefik is
// disabled: its helm jobs would only load two emulated machines.
// Cluster behaviour in depth is the container bed's (container-tests);
// this shows the images do it.
func TestE2ECluster(t *testing.T) {
	useCores(t, prioWide, 2)
	img := testImage(t, ImageRuntimeEnv, "ballast-runtime-e2e-x86_64.img")
	// A TCP socket network between the two: the server's QEMU listens,
	// the agent's connects.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	link := ln.Addr().String()
	ln.Close()
	const (
		token    = "ballast-qemu-cluster-secret"
		serverIP = "192.168.76.1"
		agentIP  = "192.168.76.2"
	)
	nic := func(mode, mac string) []string {
		return []string{"-netdev", "socket,id=cluster," + mode + "=" + link, "-device", "virtio-net-pci,netdev=cluster,mac=" + mac + ",romfile="}
	}
	userData := func(hostname, key, ip, mac, k3s string) []byte {
		return fmt.Appendf(nil, `#cloud-config
hostname: %s
ssh_authorized_keys:
  - %s
ballast:
  agent:
    privileged: true
network:
  interfaces:
    - mac: "%s"
      addresses: [%s/24]
k3s:
  node-ip: %s
%s`, hostname, key, mac, ip, ip, k3s)
	}
	sc := newScenario(t, "server1")
	server := startMachine(t, Options{
		Disk: img, DiskSize: 8 << 30, Memory: 3072, CPUs: 2,
		UserData:  userData("server1", sc.pubkey, serverIP, "52:54:00:4c:00:01", "  token: "+token+"\n  cluster-init: true\n  disable: [traefik]\n"),
		Forwards:  map[int]int{6443: 0, 22: 0},
		ExtraArgs: nic("listen", "52:54:00:4c:00:01"),
	})
	// QEMU 7.2's socket netdev does not retry a refused connect: the
	// agent's QEMU would run with its cluster link down for good.
	waitListening(t, link, time.Minute)
	agentVM := startMachine(t, Options{
		Disk: img, DiskSize: 8 << 30, Memory: 2048, CPUs: 2,
		UserData:  userData("agent1", sc.pubkey, agentIP, "52:54:00:4c:00:02", "  server: https://"+serverIP+":6443\n  token: "+token+"\n"),
		Forwards:  map[int]int{testServerNodePort: 0, 22: 0},
		ExtraArgs: nic("connect", "52:54:00:4c:00:02"),
	})
	if p := writeLoginKey(sc, server); p != "" {
		t.Logf("log in: ssh -i %s -p %d (server1) or -p %d (agent1) -o StrictHostKeyChecking=no root@127.0.0.1", p, server.HostPort(22), agentVM.HostPort(22))
	}
	waitReady(t, server)
	waitReady(t, agentVM)
	logNode(t, waitNodeReady(t, server, runtimeDeadline))
	// The agent's init follows its own node through the kubelet's identity.
	st := waitNodeReady(t, agentVM, runtimeDeadline)
	logNode(t, st)
	if st.Node.Name != "agent1" {
		t.Errorf("the agent's status names node %q", st.Node.Name)
	}

	// Embedded etcd: the seed's etcdctl line verbatim, then no flags over SSH.
	out := nodeExec(t, server, "etcdctl", "version", "--cacert=/var/lib/rancher/k3s/server/tls/etcd/server-ca.crt",
		"--cert=/var/lib/rancher/k3s/server/tls/etcd/client.crt", "--key=/var/lib/rancher/k3s/server/tls/etcd/client.key")
	if !strings.Contains(out, "etcdctl version: 3.") || !strings.Contains(out, "API version: 3.") {
		t.Errorf("etcdctl version on server1: %q", out)
	}
	t.Logf("etcdctl version on server1: %s", strings.Join(strings.Fields(out), " "))
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Minute)
	members, err := server.SSH(sctx, sc.key, "etcdctl member list")
	scancel()
	if err != nil || !strings.Contains(members, "server1-") || !strings.Contains(members, "https://"+serverIP+":2380") {
		t.Errorf("etcdctl member list over SSH: %v %q", err, members)
	}

	api := apiClient(t, server)
	var nodes struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				Addresses []struct{ Type, Address string }
			}
		}
	}
	if err := json.Unmarshal(apiGet(t, api, "/api/v1/nodes"), &nodes); err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == "InternalIP" {
				addrs[n.Metadata.Name] = a.Address
			}
		}
	}
	if addrs["server1"] != serverIP || addrs["agent1"] != agentIP {
		t.Errorf("node addresses %v; want server1 %s, agent1 %s", addrs, serverIP, agentIP)
	}

	// A pod on the agent, scheduled by the server.
	manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: onagent, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: onagent}}
  template:
    metadata: {labels: {app: onagent}}
    spec:
      nodeSelector: {kubernetes.io/hostname: agent1}
      containers:
      - name: testserver
        image: docker.io/ballast/testserver:v1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: onagent, namespace: default}
spec:
  type: NodePort
  selector: {app: onagent}
  ports: [{port: 80, targetPort: 8080, nodePort: %d}]
`, testServerNodePort)
	nodeExec(t, server, "sh", "-c", "cat > /tmp/onagent.yaml <<'EOF'\n"+manifest+"EOF\nk3s kubectl apply -f /tmp/onagent.yaml")
	waitPodsRunning(t, server, api, 15*time.Minute, map[string]string{"default/onagent": "app=onagent"})
	body := httpGet(t, agentVM, fmt.Sprintf("http://127.0.0.1:%d/", agentVM.HostPort(testServerNodePort)), 5*time.Minute)
	if !strings.Contains(body, "hello from ballast testserver") || !strings.Contains(body, "hostname: onagent-") {
		t.Errorf("GET / through agent1's NodePort: %q", body)
	}
	// The server reaches the pod on the agent (the API server's pod proxy
	// goes over flannel's vxlan between the two machines).
	var pods podList
	if err := json.Unmarshal(apiGet(t, api, "/api/v1/namespaces/default/pods?labelSelector=app%3Donagent"), &pods); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("%d onagent pods", len(pods.Items))
	}
	proxied := string(apiGet(t, api, "/api/v1/namespaces/default/pods/"+pods.Items[0].Metadata.Name+":8080/proxy/"))
	if !strings.Contains(proxied, "hostname: "+pods.Items[0].Metadata.Name) {
		t.Errorf("the server's proxy to the pod on agent1: %q", proxied)
	}
}

// waitListening waits until something listens on the TCP address addr
// (127.0.0.1:port), read from /proc/net/tcp: a test connection would be
// taken by a QEMU socket netdev as its one peer.
func waitListening(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(":%04X ", mustAtoi(t, port))
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			// local_address rem_address st: 0A is LISTEN.
			if len(f) > 3 && strings.HasSuffix(f[1]+" ", want) && f[3] == "0A" {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s after %v", addr, d)
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
