package qemutest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkBoot boots the raw image to ready and reports the agent's
// stage timings: kernel start -> init, -> network up, -> ready, and each
// stage's own length.
func BenchmarkBoot(b *testing.B) {
	img := testImage(b, ImageRawEnv, "ballast-x86_64.img")
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
		m, err := Start(ctx, Options{Disk: img, UserData: []byte("#cloud-config\nballast:\n  runtime: none\n  agent:\n    privileged: true\n")})
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		st, err := m.WaitReady(ctx)
		if err != nil {
			m.Close()
			cancel()
			b.Fatal(err)
		}
		logTimings(b, st)
		var initMS, networkMS, dhcpMS int64 = -1, -1, 0
		for _, s := range st.Boot.Stages {
			if initMS < 0 || s.StartMS < initMS {
				initMS = s.StartMS
			}
			if s.Name == "network" {
				networkMS = s.StartMS + s.DurationMS
				dhcpMS = s.DurationMS
			}
			b.ReportMetric(float64(s.DurationMS), "ms-"+s.Phase+"-"+s.Name)
		}
		b.ReportMetric(float64(initMS), "ms-to-init")
		b.ReportMetric(float64(networkMS), "ms-to-network")
		b.ReportMetric(float64(st.Boot.ReadyAfterMS), "ms-to-ready")
		// The init's own time: from the kernel handing over to /init until
		// ready, less the wait for a DHCP lease.
		b.ReportMetric(float64(st.Boot.ReadyAfterMS-initMS-dhcpMS), "ms-init-own")
		b.ReportMetric(float64(st.Memory.InitRSS)/(1<<20), "MiB-init-rss")
		b.ReportMetric(float64(st.Memory.Used)/(1<<20), "MiB-guest-used")
		b.ReportMetric(float64(st.Memory.UsedNoCache)/(1<<20), "MiB-guest-used-no-cache")
		b.ReportMetric(float64(st.Memory.Total)/(1<<20), "MiB-guest-total")
		sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
		if err := m.Shutdown(sctx); err != nil {
			b.Error(err)
		}
		scancel()
		m.Close()
		cancel()
	}
}

// BenchmarkRuntime boots the default image (which carries the runtime)
// with 4 GiB and 2 vCPUs, air-gapped, and reports power-on to node Ready
// with the runtime's milestones from the agent, the time until the
// packaged components run, and the guest's memory at idle a minute later:
// used (total - available), used without page cache, and the PSS summed
// over every process.
func BenchmarkRuntime(b *testing.B) {
	img := testImage(b, ImageRawEnv, "ballast-x86_64.img")
	for b.Loop() {
		func() {
			ctx, cancel := context.WithTimeout(context.Background(), runtimeDeadline)
			defer cancel()
			// Multi-threaded TCG: the figures of a host with a core per vCPU.
			// On a loaded host Debian's kernel can oops under it (see
			// TCGThread); the harness then fails at once with the console.
			m, err := Start(ctx, Options{Disk: img, DiskSize: 8 << 30, Memory: 4096, CPUs: 2, TCGThread: "multi",
				UserData: []byte("#cloud-config\nhostname: bench\nballast:\n  agent:\n    privileged: true\n"),
				Forwards: map[int]int{6443: 0}})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			if _, err := m.WaitReady(ctx); err != nil {
				b.Fatal(err)
			}
			st, err := waitNode(ctx, m)
			if err != nil {
				b.Fatal(err)
			}
			logTimings(b, st)
			for _, s := range st.Node.Stages {
				b.ReportMetric(float64(s.StartMS), "ms-to-"+s.Name)
				b.Logf("runtime %-16s at %7d ms (+%d ms)", s.Name, s.StartMS, s.DurationMS)
			}
			api, err := apiClientFor(ctx, m)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := podsRunning(ctx, m, api, map[string]string{
				"kube-system/coredns":                "k8s-app=kube-dns",
				"kube-system/local-path-provisioner": "app=local-path-provisioner",
				"kube-system/metrics-server":         "k8s-app=metrics-server",
				"kube-system/traefik":                "app.kubernetes.io/name=traefik",
				"kube-system/svclb-traefik":          "svccontroller.k3s.cattle.io/svcname=traefik",
			}, func(string, ...any) {}); err != nil {
				b.Fatal(err)
			}
			ready := time.Since(start) + time.Duration(st.Node.Stages[len(st.Node.Stages)-1].StartMS)*time.Millisecond
			b.ReportMetric(float64(ready.Milliseconds()), "ms-to-packaged-running")
			time.Sleep(time.Minute)
			st, err = m.Status(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(st.Memory.Used)/(1<<20), "MiB-guest-used-idle")
			b.ReportMetric(float64(st.Memory.UsedNoCache)/(1<<20), "MiB-guest-used-no-cache-idle")
			pss, err := processPSS(ctx, m)
			if err != nil {
				b.Fatal(err)
			}
			var all float64
			for _, p := range pss {
				all += p.MiB
			}
			b.ReportMetric(all, "MiB-pss-all-processes-idle")
			// What the packaged components add, each on its own: Traefik's
			// pod, ServiceLB's svclb pods, and the `k3s server` process
			// (the supervisor, which runs the ServiceLB and Helm controllers).
			for _, g := range []struct{ metric, cmd string }{
				{"MiB-pss-traefik-idle", "/usr/local/bin/traefik"},
				{"MiB-pss-svclb-idle", "/svclb"},
				{"MiB-pss-k3s-server-idle", "/usr/bin/k3s server"},
			} {
				var sum float64
				for _, p := range pss {
					if strings.HasPrefix(p.Cmd, g.cmd) {
						sum += p.MiB
					}
				}
				b.ReportMetric(sum, g.metric)
			}
			slices.SortFunc(pss, func(x, y procPSS) int { return cmp.Compare(y.MiB, x.MiB) })
			for _, p := range pss[:min(len(pss), 15)] {
				b.Logf("idle PSS %7.1f MiB  %.80s", p.MiB, p.Cmd)
			}
			sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
			if err := m.Shutdown(sctx); err != nil {
				b.Error(err)
			}
			scancel()
		}()
	}
}

type procPSS struct {
	MiB float64
	Cmd string
}

// processPSS reads every process's proportional set size and command line
// in the guest.
func processPSS(ctx context.Context, m *Machine) ([]procPSS, error) {
	res, err := m.Exec(ctx, "sh", "-c", `for d in /proc/[0-9]*; do p=$(awk '/^Pss:/ {print $2}' $d/smaps_rollup 2>/dev/null); if [ -n "$p" ]; then printf '%s %s\n' "$p" "$(tr '\0' ' ' < $d/cmdline 2>/dev/null)"; fi; done`)
	if err != nil {
		return nil, err
	}
	if res.ExitCode != 0 {
		return nil, fmt.Errorf("reading PSS: exit %d: %s", res.ExitCode, res.Stderr)
	}
	var out []procPSS
	for line := range strings.Lines(res.Stdout) {
		kib, cmd, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		var k float64
		if _, err := fmt.Sscan(kib, &k); err != nil {
			continue
		}
		out = append(out, procPSS{MiB: k / 1024, Cmd: cmd})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no process PSS read: %q", res.Stdout)
	}
	return out, nil
}
