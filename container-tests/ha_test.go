package containertest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// etcdMembers is `etcdctl member list` on a server, as name -> learner.
func etcdMembers(ctx context.Context, n *Node) (map[string]bool, error) {
	out, err := n.Exec(ctx, "etcdctl", "member", "list", "-w", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Members []struct {
			Name      string `json:"name"`
			IsLearner bool   `json:"isLearner"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	m := map[string]bool{}
	for _, x := range list.Members {
		m[x.Name] = x.IsLearner
	}
	return m, nil
}

// waitVoting waits until n's etcd lists want members, none a learner.
func waitVoting(ctx context.Context, t *testing.T, n *Node, want int) {
	t.Helper()
	if err := WaitFor(ctx, 3*time.Minute, 2*time.Second, func() error {
		m, err := etcdMembers(ctx, n)
		if err != nil {
			return err
		}
		if len(m) != want {
			return fmt.Errorf("%d members: %v", len(m), m)
		}
		for name, learner := range m {
			if learner {
				return fmt.Errorf("%s is still a learner", name)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("etcdctl member list on %s: %v", n.Name, err)
	}
}

// etcdLeader is the server whose member leads, as servers[0]'s member
// sees it, and the other servers.
func etcdLeader(ctx context.Context, servers []*Node) (leader *Node, others []*Node, err error) {
	url, err := etcdLeaderURL(ctx, servers[0])
	if err != nil {
		return nil, nil, err
	}
	for _, n := range servers {
		if strings.Contains(url, "//"+n.IP+":") {
			leader = n
		} else {
			others = append(others, n)
		}
	}
	if leader == nil {
		return nil, nil, fmt.Errorf("leader %s is none of the servers", url)
	}
	return leader, others, nil
}

// etcdLeaderURL is the client URL of the etcd leader as n's member sees it.
func etcdLeaderURL(ctx context.Context, n *Node) (string, error) {
	out, err := n.Exec(ctx, "etcdctl", "endpoint", "status", "--cluster", "-w", "json")
	if err != nil {
		return "", err
	}
	var st []struct {
		Endpoint string `json:"Endpoint"`
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
			} `json:"header"`
			Leader uint64 `json:"leader"`
		} `json:"Status"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	for _, s := range st {
		if s.Status.Header.MemberID == s.Status.Leader && s.Status.Leader != 0 {
			return s.Endpoint, nil
		}
	}
	return "", fmt.Errorf("no leader in %s", out)
}

// writeConfigMap creates a ConfigMap through n, each try given 5 s; a
// ConfigMap that a timed-out try did create counts as written.
func writeConfigMap(ctx context.Context, n *Node, name string, args ...string) error {
	_, err := n.Kubectl(ctx, append([]string{"create", "configmap", name, "--request-timeout=5s"}, args...)...)
	if err != nil && strings.Contains(err.Error(), "AlreadyExists") {
		return nil
	}
	return err
}

// startHA starts three servers with embedded etcd, server1 with
// --cluster-init and the others joining it with the token, and waits
// until the three nodes are Ready.
func startHA(ctx context.Context, tb testing.TB, c *Cluster, args ...string) []*Node {
	tb.Helper()
	start := time.Now()
	s1, err := c.Start(ctx, "server1", map[string]string{"K3S_TOKEN": "ha-secret"}, append([]string{"server", "--cluster-init"}, args...)...)
	if err != nil {
		tb.Fatal(err)
	}
	waitReady(ctx, tb, s1, "True", 5*time.Minute, "server1")
	join := map[string]string{"K3S_TOKEN": "ha-secret", "K3S_URL": "https://" + s1.IP + ":6443"}
	servers := []*Node{s1}
	for _, name := range []string{"server2", "server3"} {
		n, err := c.Start(ctx, name, join, append([]string{"server"}, args...)...)
		if err != nil {
			tb.Fatal(err)
		}
		servers = append(servers, n)
	}
	waitReady(ctx, tb, s1, "True", 5*time.Minute, "server2", "server3")
	tb.Logf("three servers Ready %.1fs after the first started", time.Since(start).Seconds())
	return servers
}

// TestClusterHA is the HA issue's scenario: three servers with embedded
// etcd (cluster-init on the first, the others joining with --server and
// the token) and an agent come Ready; objects written through server 1
// are read through server 3; etcdctl lists three voting members;
// killing the etcd leader's node keeps the API writable through the
// other two, and the stopped server comes back as a member.
func TestClusterHA(t *testing.T) {
	c, ctx := newCluster(t)
	servers := startHA(ctx, t, c, "--disable=metrics-server,local-storage")
	if _, err := c.Start(ctx, "agent", map[string]string{"K3S_TOKEN": "ha-secret", "K3S_URL": "https://" + servers[0].IP + ":6443"}, "agent"); err != nil {
		t.Fatal(err)
	}
	s1 := servers[0]
	waitReady(ctx, t, s1, "True", 5*time.Minute, "agent")
	s3 := servers[2]

	// Three voting members, as every server sees them.
	for _, n := range servers {
		waitVoting(ctx, t, n, 3)
	}
	// The seed's line, verbatim.
	if out, err := s1.Exec(ctx, "etcdctl", "version", "--cacert=/var/lib/rancher/k3s/server/tls/etcd/server-ca.crt",
		"--cert=/var/lib/rancher/k3s/server/tls/etcd/client.crt", "--key=/var/lib/rancher/k3s/server/tls/etcd/client.key"); err != nil || !strings.Contains(out, "etcdctl version:") || !strings.Contains(out, "API version:") {
		t.Errorf("etcdctl version: %v\n%s", err, out)
	}

	// Written through server 1, read through server 3.
	if out, err := s1.Exec(ctx, "sh", "-c", "cat > /tmp/app.yaml <<'EOF'\n"+clusterManifest+"\nEOF\nk3s kubectl apply -f /tmp/app.yaml && k3s kubectl create configmap ha --from-literal=written-on=server1"); err != nil {
		t.Fatalf("apply on server1: %v\n%s", err, out)
	}
	if out, err := s3.Kubectl(ctx, "get", "configmap", "ha", "-o", "jsonpath={.data.written-on}"); err != nil || out != "server1" {
		t.Errorf("configmap through server3: %v %q", err, out)
	}
	if out, err := s3.Kubectl(ctx, "get", "deployment", "testserver", "-o", "jsonpath={.spec.replicas}"); err != nil || out != "3" {
		t.Errorf("deployment through server3: %v %q", err, out)
	}
	// The kubernetes Service lists every server's supervisor.
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		out, err := s1.Kubectl(ctx, "get", "endpointslice", "kubernetes", "-o", "jsonpath={.endpoints[*].addresses[0]}")
		if err != nil {
			return err
		}
		if got := len(strings.Fields(out)); got != 3 {
			return fmt.Errorf("kubernetes endpoints %q, want the 3 servers", out)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// Kill the etcd leader's node (power lost): the other two keep the API writable.
	leader, others, err := etcdLeader(ctx, servers)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd leader: %s (%s); killing it", leader.Name, leader.IP)
	if err := leader.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	for i, n := range others {
		name := "after-leader-loss-" + strconv.Itoa(i)
		if err := WaitFor(ctx, 30*time.Second-time.Since(stopped), time.Second, func() error {
			return writeConfigMap(ctx, n, name, "--from-literal=via="+n.Name)
		}); err != nil {
			t.Errorf("write through %s within 30 s of stopping the leader: %v", n.Name, err)
		} else {
			t.Logf("write through %s succeeded %.1fs after the leader stopped", n.Name, time.Since(stopped).Seconds())
		}
	}
	if out, err := others[1].Kubectl(ctx, "get", "configmap", "after-leader-loss-0", "-o", "jsonpath={.data.via}"); err != nil || out != others[0].Name {
		t.Errorf("configmap written through %s, read through %s: %v %q", others[0].Name, others[1].Name, err, out)
	}
	// The agent joined through server1; its load balancer follows the
	// servers, so its kubelet keeps renewing its node lease through the
	// others while server1 is down.
	if leader == s1 {
		if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
			out, err := others[0].Kubectl(ctx, "get", "lease", "-n", "kube-node-lease", "agent", "-o", "jsonpath={.spec.renewTime}")
			if err != nil {
				return err
			}
			renewed, err := time.Parse(time.RFC3339Nano, out)
			if err == nil && !renewed.After(stopped.Add(5*time.Second)) {
				err = fmt.Errorf("agent's lease last renewed %s, server1 killed %s", out, stopped.UTC().Format(time.RFC3339))
			}
			return err
		}); err != nil {
			t.Errorf("agent with its server killed: %v", err)
		}
	}

	// The stopped server comes back as a member.
	if err := leader.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, 5*time.Minute, 2*time.Second, func() error {
		out, err := leader.Exec(ctx, "etcdctl", "endpoint", "health")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		m, err := etcdMembers(ctx, leader)
		if err == nil && len(m) != 3 {
			err = fmt.Errorf("%d members: %v", len(m), m)
		}
		return err
	}); err != nil {
		t.Errorf("%s after its restart: %v", leader.Name, err)
	}
	if err := WaitFor(ctx, 3*time.Minute, 2*time.Second, func() error {
		out, err := leader.Kubectl(ctx, "get", "configmap", "after-leader-loss-1", "-o", "jsonpath={.data.via}")
		if err == nil && out != others[1].Name {
			err = fmt.Errorf("got %q", out)
		}
		return err
	}); err != nil {
		t.Errorf("%s after its restart reads what was written while it was down: %v", leader.Name, err)
	}
	waitReady(ctx, t, others[0], "True", 3*time.Minute, leader.Name)

	// A snapshot, then objects deleted, then server1 reset to the
	// snapshot: the objects come back, and the other servers rejoin after
	// their datastore is deleted, as k3s documents.
	out, err := s1.Exec(ctx, "k3s", "etcd-snapshot", "save", "--name", "before-delete")
	if err != nil || !strings.Contains(out, "Snapshot before-delete-server1-") {
		t.Fatalf("etcd-snapshot save: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(out))
	ls, err := s1.Exec(ctx, "k3s", "etcd-snapshot", "ls")
	snap := ""
	for _, l := range strings.Split(ls, "\n") {
		if f := strings.Fields(l); len(f) == 4 && strings.HasPrefix(f[0], "before-delete-server1-") {
			snap = strings.TrimPrefix(f[1], "file://")
		}
	}
	if err != nil || snap == "" || !strings.HasPrefix(ls, "Name") {
		t.Fatalf("etcd-snapshot ls: %v\n%s", err, ls)
	}
	if out, err := s1.Kubectl(ctx, "create", "configmap", "after-snapshot"); err != nil {
		t.Fatalf("create configmap: %v\n%s", err, out)
	}
	if out, err := s1.Kubectl(ctx, "delete", "configmap", "ha"); err != nil {
		t.Fatalf("delete configmap: %v\n%s", err, out)
	}
	if out, err := s1.Kubectl(ctx, "delete", "deployment", "testserver"); err != nil {
		t.Fatalf("delete deployment: %v\n%s", err, out)
	}
	for _, n := range servers {
		if err := n.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	resetStart := time.Now()
	out, err = s1.RunOnce(ctx, "", "server", "--cluster-init", "--cluster-reset", "--cluster-reset-restore-path="+snap)
	if err != nil || !strings.Contains(out, "Managed etcd cluster membership has been reset") {
		t.Fatalf("cluster-reset with restore: %v\n%s", err, out)
	}
	t.Logf("cluster-reset with restore took %.1fs", time.Since(resetStart).Seconds())
	for _, n := range others {
		if out, err := n.RunOnce(ctx, "/bin/sh", "-c", "rm -rf /var/lib/rancher/k3s/server/db"); err != nil {
			t.Fatalf("deleting %s's datastore: %v\n%s", n.Name, err, out)
		}
	}
	for _, n := range servers {
		if err := n.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := WaitFor(ctx, 5*time.Minute, 2*time.Second, func() error {
		out, err := s3.Kubectl(ctx, "get", "configmap", "ha", "-o", "jsonpath={.data.written-on}")
		if err == nil && out != "server1" {
			err = fmt.Errorf("got %q", out)
		}
		if err == nil {
			_, err = s3.Kubectl(ctx, "get", "deployment", "testserver")
		}
		return err
	}); err != nil {
		t.Fatalf("after the restore, through server3: %v", err)
	}
	// Killing a server while another is still a learner would lose the
	// quorum: wait until both rejoined servers vote.
	waitVoting(ctx, t, s1, 3)
	// Written after the snapshot: gone with the restore.
	if out, err := s1.Kubectl(ctx, "get", "configmap", "after-snapshot", "--ignore-not-found", "-o", "name"); err != nil || out != "" {
		t.Errorf("configmap written after the snapshot is there after the restore: %v %q", err, out)
	}
	waitReady(ctx, t, s1, "True", 3*time.Minute, "server1", "server2", "server3")

	// A server that is gone for good: deleting its node removes its member.
	if out, err := s1.Kubectl(ctx, "get", "node", "server3", "-o", `jsonpath={.metadata.annotations.etcd\.k3s\.cattle\.io/node-name}`); err == nil {
		m, _ := etcdMembers(ctx, s1)
		t.Logf("server3's node names member %s; members %v", out, m)
	}
	if err := s3.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := s1.Kubectl(ctx, "delete", "node", "server3"); err != nil {
		t.Fatalf("delete node server3: %v\n%s", err, out)
	}
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		m, err := etcdMembers(ctx, s1)
		if err == nil && len(m) != 2 {
			err = fmt.Errorf("%d members: %v", len(m), m)
		}
		return err
	}); err != nil {
		t.Errorf("member of the deleted server3: %v", err)
		for _, n := range servers[:2] {
			var lines []string
			for _, l := range strings.Split(n.Logs(ctx), "\n") {
				if strings.Contains(l, "etcd") || strings.Contains(l, "node controller") {
					lines = append(lines, l)
				}
			}
			t.Logf("%s: etcd and node controller lines:\n%s", n.Name, strings.Join(lines, "\n"))
		}
	}
	if err := WaitFor(ctx, 30*time.Second, time.Second, func() error {
		return writeConfigMap(ctx, servers[1], "two-left")
	}); err != nil {
		t.Errorf("write with two servers left: %v", err)
	}
}

// TestClusterInitMovesSQLite: a server that ran on sqlite (kine) and is
// started again with --cluster-init moves its objects into embedded etcd,
// as k3s does, and its node carries on; its scheduled snapshots are taken
// and pruned to the retention.
func TestClusterInitMovesSQLite(t *testing.T) {
	c, ctx := newCluster(t)
	env := map[string]string{"K3S_TOKEN": "migrate"}
	old, err := c.Start(ctx, "sqlite", env, "server", "--disable=metrics-server,local-storage,coredns")
	if err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, old, "True", 5*time.Minute, old.Name)
	if out, err := old.Kubectl(ctx, "create", "configmap", "kept", "--from-literal=datastore=sqlite"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := old.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Scheduled snapshots too, every 3 s, the newest 2 kept.
	n, err := c.StartFrom(ctx, old, "etcd", env, "server", "--cluster-init", "--disable=metrics-server,local-storage,coredns",
		"--etcd-snapshot-schedule-cron=@every 3s", "--etcd-snapshot-retention=2")
	if err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, 5*time.Minute, 2*time.Second, func() error {
		out, err := n.Kubectl(ctx, "get", "configmap", "kept", "-o", "jsonpath={.data.datastore}")
		if err == nil && out != "sqlite" {
			err = fmt.Errorf("got %q", out)
		}
		return err
	}); err != nil {
		t.Fatalf("the configmap written on sqlite, read on etcd: %v\n%s", err, n.Logs(ctx))
	}
	if m, err := etcdMembers(ctx, n); err != nil || len(m) != 1 {
		t.Errorf("etcd members: %v %v", m, err)
	}
	if logs := n.Logs(ctx); !strings.Contains(logs, "etcd: moved ") {
		t.Errorf("no migration line in the server's output:\n%s", tail(logs, 30))
	}
	waitReady(ctx, t, n, "True", 3*time.Minute, n.Name)
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		ls, err := n.Exec(ctx, "k3s", "etcd-snapshot", "ls")
		if err != nil {
			return err
		}
		if got := strings.Count(ls, "\netcd-snapshot-"+n.Name+"-"); got != 2 {
			return fmt.Errorf("%d scheduled snapshots listed, want the 2 kept:\n%s", got, ls)
		}
		if !strings.Contains(n.Logs(ctx), "etcd snapshot retention=2: deleted") {
			return fmt.Errorf("no older snapshot deleted yet:\n%s", ls)
		}
		return nil
	}); err != nil {
		t.Errorf("scheduled snapshots: %v", err)
	}
}

// TestClusterHABootstrap: what one server of three changes reaches the
// others through the cluster's bootstrap record in etcd, at their next
// restart, as in k3s. secrets-encrypt rotate-keys on server2 and
// certificate rotate-ca (cross-signed CAs) on server1, then each server
// restarted (each reads its own copy of the datastore through a temporary
// etcd): all have the new encryption config, the hashes match, a Secret
// written after the rotation reads through every server, and every server
// has the new CAs and certificates they sign. k3s token rotate on
// server1: a server restarted with the old token is refused with
// k3s's message; restarted with the new one, it takes the new passwords,
// and an agent joins it with the new token.
func TestClusterHABootstrap(t *testing.T) {
	c, ctx := newCluster(t)
	args := []string{"--secrets-encryption", "--disable=metrics-server,local-storage,servicelb,traefik", "--disable-helm-controller", "--disable-network-policy"}
	servers := startHA(ctx, t, c, args...)
	s1, s2, s3 := servers[0], servers[1], servers[2]
	for _, n := range servers {
		waitVoting(ctx, t, n, 3)
	}
	// restart stops a server and starts it again, and waits until it is
	// Ready and votes.
	restart := func(n *Node) {
		t.Helper()
		if err := n.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		waitReady(ctx, t, s2, "True", 5*time.Minute, n.Name)
		waitVoting(ctx, t, n, 3)
	}
	// logHas waits for a line of n's log with every part.
	logHas := func(n *Node, parts ...string) {
		t.Helper()
		if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
			for _, l := range strings.Split(n.Logs(ctx), "\n") {
				if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(l, p) }) {
					return nil
				}
			}
			return fmt.Errorf("%s's log has no line with %q", n.Name, parts)
		}); err != nil {
			t.Error(err)
		}
	}
	// Every server makes sure the record has its files; give server1's
	// first pass time to make it.
	logHas(s1, "bootstrap data: the datastore's record now has this server's")

	// secrets-encrypt on server2 (its own supervisor: K3S_URL names
	// server1), once every server has recorded its stage.
	if err := WaitFor(ctx, 2*time.Minute, 2*time.Second, func() error {
		out, err := s2.Exec(ctx, "k3s", "secrets-encrypt", "status", "--server", "https://127.0.0.1:6443")
		if err == nil && !strings.Contains(out, "All hashes match") {
			err = fmt.Errorf("%s", out)
		}
		return err
	}); err != nil {
		t.Fatalf("secrets-encrypt status before the rotation: %v", err)
	}
	if out, err := s2.Exec(ctx, "k3s", "secrets-encrypt", "rotate-keys", "--server", "https://127.0.0.1:6443"); err != nil || out != "keys rotated, reencryption finished" {
		t.Fatalf("k3s secrets-encrypt rotate-keys on server2: %v %q", err, out)
	}
	if out, err := s2.Exec(ctx, "k3s", "secrets-encrypt", "status", "--server", "https://127.0.0.1:6443"); err != nil || !strings.Contains(out, "hash does not match between") {
		t.Errorf("status before the other servers restart: %v\n%s", err, out)
	}
	if out, err := s2.Kubectl(ctx, "create", "secret", "generic", "after-rotation", "--from-literal=k=rotated-value"); err != nil {
		t.Fatalf("create secret: %v %s", err, out)
	}
	// rotate-ca on server1 (new server and client CAs cross-signed by the
	// current ones), staged for the restarts that follow.
	serverBundle, serverKey, serverInter := crossSigned(t, nodeRead(ctx, t, s1, tls+"server-ca.crt"), nodeRead(ctx, t, s1, tls+"server-ca.key"))
	clientBundle, clientKey, clientInter := crossSigned(t, nodeRead(ctx, t, s1, tls+"client-ca.crt"), nodeRead(ctx, t, s1, tls+"client-ca.key"))
	for name, data := range map[string][]byte{"server-ca.crt": serverBundle, "server-ca.key": serverKey, "client-ca.crt": clientBundle, "client-ca.key": clientKey} {
		nodeWrite(ctx, t, s1, "/tmp/newca/tls/"+name, data)
	}
	if out, err := s1.Exec(ctx, "k3s", "certificate", "rotate-ca", "--path", "/tmp/newca"); err != nil || !strings.Contains(out, "certificates staged") {
		t.Fatalf("k3s certificate rotate-ca on server1: %v\n%s", err, out)
	}

	// Each server restarted, one at a time: server1 applies the CAs it
	// staged and takes server2's encryption config from its own copy of
	// the datastore (it has no --server); server2 and server3 (whose
	// --server, restarted, now shows a CA they do not know yet) take what
	// they lack the same way; every server's certificates are issued by
	// the new CAs.
	for _, n := range servers {
		restart(n)
		if got := nodeRead(ctx, t, n, tls+"server-ca.crt"); !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(serverBundle)) {
			t.Errorf("%s: server-ca.crt after its restart is not the new bundle", n.Name)
		}
		checkSigned(t, n.Name+": serving-kube-apiserver.crt", nodeRead(ctx, t, n, tls+"serving-kube-apiserver.crt"), serverInter)
		checkSigned(t, n.Name+": client-admin.crt", nodeRead(ctx, t, n, tls+"client-admin.crt"), clientInter)
		checkSigned(t, n.Name+": client-kubelet.crt", nodeRead(ctx, t, n, "/var/lib/rancher/k3s/agent/client-kubelet.crt"), clientInter)
	}
	logHas(s1, "rotate-ca: new CA files in place")
	for _, n := range []*Node{s1, s3} {
		logHas(n, "bootstrap data: ", "server/cred/encryption-config.json", "server/cred/encryption-state.json", " updated from this member's copy of the datastore")
	}
	for _, n := range []*Node{s2, s3} {
		logHas(n, "bootstrap data: new CA files from the cluster; the current ones are backed up in")
	}
	waitReady(ctx, t, s1, "True", 3*time.Minute, "server1", "server2", "server3")
	if err := WaitFor(ctx, time.Minute, 2*time.Second, func() error {
		out, err := s1.Exec(ctx, "k3s", "secrets-encrypt", "status")
		if err == nil && !strings.Contains(out, "Current Rotation Stage: reencrypt_finished\nServer Encryption Hashes: All hashes match") {
			err = fmt.Errorf("%s", out)
		}
		return err
	}); err != nil {
		t.Errorf("secrets-encrypt status after the restarts: %v", err)
	}
	for _, n := range servers {
		out, err := n.Kubectl(ctx, "get", "secret", "after-rotation", "-o", "jsonpath={.data.k}")
		if err != nil || out != base64.StdEncoding.EncodeToString([]byte("rotated-value")) {
			t.Errorf("the Secret through %s: %v %q", n.Name, err, out)
		}
	}

	// k3s token rotate on server1.
	const rotated = "ha-rotated-secret"
	if out, err := s1.Exec(ctx, "k3s", "token", "rotate", "--new-token", rotated); err != nil || !strings.Contains(out, "Token rotated") {
		t.Fatalf("k3s token rotate: %v %q", err, out)
	}
	join := "https://" + s1.IP + ":6443"
	for i, n := range []*Node{s2, s3} {
		if err := n.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// With the old token: refused, as k3s refuses it.
			octx, cancel := context.WithTimeout(ctx, 3*time.Minute)
			out, err := n.RunOnce(octx, "", "server", "--token=ha-secret", "--server="+join)
			cancel()
			if err == nil || !strings.Contains(out, "bootstrap data already found and encrypted with different token") {
				t.Errorf("%s restarted with the old token: %v\n%s", n.Name, err, tail(out, 15))
			}
		}
		nn, err := c.StartFrom(ctx, n, n.Name+"-new-token", map[string]string{"K3S_TOKEN": rotated, "K3S_URL": join}, append([]string{"server"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		waitReady(ctx, t, s1, "True", 5*time.Minute, n.Name)
		waitVoting(ctx, t, nn, 3)
		logHas(nn, "bootstrap data: ", "server/cred/passwd", " updated from "+join)
		if out, err := nn.Exec(ctx, "cat", "/var/lib/rancher/k3s/server/token"); err != nil || !strings.HasSuffix(out, "::server:"+rotated) {
			t.Errorf("%s's server/token: %v %q", n.Name, err, out)
		}
		if i == 0 {
			s2 = nn
		}
	}
	if _, err := c.Start(ctx, "agent", map[string]string{"K3S_TOKEN": rotated, "K3S_URL": "https://" + s2.IP + ":6443"}, "agent"); err != nil {
		t.Fatal(err)
	}
	waitReady(ctx, t, s1, "True", 5*time.Minute, "agent")
}
