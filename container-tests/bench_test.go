package containertest

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkAgent prints what the cluster issue's targets are about: an
// agent's join time (container start to its node Ready, as the server sees
// it) and its idle memory (PSS summed over every process in the agent's
// container, a minute after Ready, with no pods of its own), per component.
// Targets: join under 20 s on this machine, idle below 200 MB.
func BenchmarkAgent(b *testing.B) {
	c, ctx := newCluster(b)
	server, err := c.Start(ctx, "server", map[string]string{"K3S_TOKEN": "bench"}, "server")
	if err != nil {
		b.Fatal(err)
	}
	serverStart := time.Now()
	ready := func(name string) error {
		got, err := nodeReady(ctx, server, name)
		if err == nil && got != "True" {
			err = fmt.Errorf("node %s Ready=%q", name, got)
		}
		return err
	}
	if err := WaitFor(ctx, 5*time.Minute, 500*time.Millisecond, func() error { return ready("server") }); err != nil {
		b.Fatal(err)
	}
	serverReady := time.Since(serverStart)
	// The packaged pods go to the server before any agent joins.
	if err := WaitFor(ctx, 5*time.Minute, 2*time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "pods", "-A", "--no-headers")
		if err == nil && (strings.Count(out, "Running") < 3 || strings.Contains(out, "Pending")) {
			err = fmt.Errorf("packaged pods not running yet:\n%s", out)
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var join time.Duration
	var agent *Node
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("agent%d", i)
		start := time.Now()
		agent, err = c.Start(ctx, name, map[string]string{"K3S_URL": "https://" + server.IP + ":6443", "K3S_TOKEN": "bench"}, "agent")
		if err != nil {
			b.Fatal(err)
		}
		if err := WaitFor(ctx, 3*time.Minute, 200*time.Millisecond, func() error { return ready(name) }); err != nil {
			b.Fatal(err)
		}
		join += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(join.Seconds()/float64(b.N), "s/join")
	time.Sleep(time.Minute)
	total, parts, err := containerPSS(ctx, agent)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(total/1024, "MiB-agent-idle-PSS")
	b.Logf("server Ready %.1f s after start; agent join (container start -> node Ready) %.1f s; agent idle PSS %.1f MiB: %s",
		serverReady.Seconds(), join.Seconds()/float64(b.N), total/1024, parts)
}

// containerPSS sums the Pss of every process in the node's container
// (KiB), and says it per program (the k3s component, or the executable).
func containerPSS(ctx context.Context, n *Node) (float64, string, error) {
	script := `for p in /proc/[0-9]*; do
  pss=$(awk '/^Pss:/ {print $2}' $p/smaps_rollup 2>/dev/null) || continue
  [ -n "$pss" ] || continue
  echo "$pss $(tr '\0' ' ' < $p/cmdline | cut -c1-80)"
done`
	out, err := n.Exec(ctx, "sh", "-c", script)
	if err != nil {
		return 0, "", err
	}
	byName := map[string]float64{}
	var total float64
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		name := f[1]
		if strings.HasSuffix(name, "/k3s") && len(f) > 2 {
			name = "k3s " + f[2]
		}
		if f[1] == "sh" || f[1] == "awk" || f[1] == "tr" || f[1] == "cut" {
			continue // this measurement itself
		}
		byName[name] += kb
		total += kb
	}
	names := make([]string, 0, len(byName))
	for k := range byName {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return byName[names[i]] > byName[names[j]] })
	var parts []string
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, byName[k]/1024))
	}
	return total, strings.Join(parts, ", "), nil
}

// BenchmarkEtcd prints the HA issue's figures: the idle memory of a
// server with embedded etcd (--cluster-init) next to one with kine
// (sqlite), each alone in its cluster with the same workload (the test
// server's Deployment, 3 pods), a minute after the pods run; then, on
// three servers with embedded etcd, a snapshot's save time and the
// leader-loss recovery time (killing the etcd leader's node to the first
// write that succeeds through another server).
func BenchmarkEtcd(b *testing.B) {
	c, ctx := newCluster(b)
	single := map[string]*Node{}
	for name, args := range map[string][]string{"etcd": {"server", "--cluster-init"}, "kine": {"server"}} {
		n, err := c.Start(ctx, name, map[string]string{"K3S_TOKEN": name}, args...)
		if err != nil {
			b.Fatal(err)
		}
		single[name] = n
	}
	for name, n := range single {
		if err := WaitFor(ctx, 5*time.Minute, 2*time.Second, func() error {
			if out, err := n.Exec(ctx, "sh", "-c", "cat > /tmp/app.yaml <<'EOF'\n"+clusterManifest+"\nEOF\nk3s kubectl apply -f /tmp/app.yaml"); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			pods, err := testserverPods(ctx, n)
			if err == nil && len(pods) != 3 {
				err = fmt.Errorf("%d testserver pods ready", len(pods))
			}
			return err
		}); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
	}
	time.Sleep(time.Minute)
	for _, name := range []string{"etcd", "kine"} {
		total, parts, err := containerPSS(ctx, single[name])
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(total/1024, "MiB-server-"+name+"-PSS")
		b.Logf("server with %s, 3 pods, idle: PSS %.1f MiB: %s", name, total/1024, parts)
	}
	for _, n := range single {
		if err := n.Remove(ctx); err != nil {
			b.Fatal(err)
		}
	}

	servers := startHA(ctx, b, c)
	start := time.Now()
	if out, err := servers[0].Exec(ctx, "k3s", "etcd-snapshot", "save"); err != nil {
		b.Fatalf("etcd-snapshot save: %v\n%s", err, out)
	}
	save := time.Since(start)
	b.ReportMetric(save.Seconds(), "s/snapshot-save")
	leader, others, err := etcdLeader(ctx, servers)
	if err != nil {
		b.Fatal(err)
	}
	other := others[len(others)-1]
	if err := leader.Kill(ctx); err != nil {
		b.Fatal(err)
	}
	killed := time.Now()
	if err := WaitFor(ctx, 2*time.Minute, 200*time.Millisecond, func() error {
		return writeConfigMap(ctx, other, "after-leader-loss")
	}); err != nil {
		b.Fatal(err)
	}
	recovery := time.Since(killed)
	b.ReportMetric(recovery.Seconds(), "s/leader-loss-recovery")
	b.Logf("snapshot save (the k3s etcd-snapshot command, end to end) %.2f s; leader %s killed, first write through %s after %.1f s",
		save.Seconds(), leader.Name, other.Name, recovery.Seconds())
}
