package qemutest

import (
	"context"
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
		m, err := Start(ctx, Options{Disk: img, UserData: []byte("#cloud-config\nballast:\n  agent:\n    privileged: true\n")})
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
