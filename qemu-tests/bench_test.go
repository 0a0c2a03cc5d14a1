package qemutest

import (
	"context"
	"fmt"
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
			res, err := m.Exec(ctx, "sh", "-c", `cat /proc/[0-9]*/smaps_rollup 2>/dev/null | awk '/^Pss:/ {s += $2} END {print s}'`)
			if err != nil {
				b.Fatal(err)
			}
			var pssKiB float64
			fmt.Sscan(res.Stdout, &pssKiB)
			b.ReportMetric(pssKiB/1024, "MiB-pss-all-processes-idle")
			sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
			if err := m.Shutdown(sctx); err != nil {
				b.Error(err)
			}
			scancel()
		}()
	}
}
