package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/init/agent"
	"github.com/ballast-os/ballast/init/datasource"
)

// applyBoot applies a config as one boot would: a fresh boot state
// (trial, shutdown queue) on the same database.
func applyBoot(t *testing.T, s *system, doc string) {
	t.Helper()
	s.trial, s.cfgInfo = trial{}, agent.Config{}
	s.shutdown = make(chan shutdownRequest, 1)
	s.start = time.Now()
	cfg, info := parseSources([]datasource.Source{{Name: "fw_cfg", Path: "opt/ballast/user-data", Data: []byte(doc)}})
	if err := s.applyConfigChoice(cfg, info, configChoice{}); err != nil {
		t.Fatal(err)
	}
}

// A config that parses but never makes a boot healthy is tried for its
// boots, then set aside for the last good one; a healthy boot confirms.
func TestConfigTrial(t *testing.T) {
	s := testSystemWithState(t)
	ctx := t.Context()
	good := "#cloud-config\nhostname: good\n"
	bad := "#cloud-config\nhostname: bad\nballast:\n  config_trial:\n    boots: 2\n    timeout: 1m\n"

	// First boot: on trial (nothing to fall back to: no time-out), then
	// confirmed once the node is Ready.
	applyBoot(t, s, good)
	if s.cfgInfo.Confirmed || s.cfgInfo.TrialBoots != 1 || s.trial.canFallBack {
		t.Fatalf("first config: info %+v trial %+v", s.cfgInfo, s.trial)
	}
	ready := make(chan struct{})
	s.nodeReady = ready
	done := make(chan struct{})
	go func() { s.superviseTrial(ctx, true); close(done) }()
	select {
	case <-done:
		t.Fatal("confirmed before the node was Ready")
	case <-time.After(50 * time.Millisecond):
	}
	close(ready)
	<-done
	if !s.cfgInfo.Confirmed {
		t.Fatalf("not confirmed after the node was Ready: %+v", s.cfgInfo)
	}
	if g, err := s.db.LastGoodConfig(); err != nil || g.Number != 1 {
		t.Fatalf("last good = %+v %v", g, err)
	}

	// The bad config: two boots whose steps fail, each rebooting at the
	// time-out, then the good one is back.
	s.nodeReady = nil
	for boot := 1; boot <= 2; boot++ {
		applyBoot(t, s, bad)
		if s.cfg.Hostname != "bad" || s.cfgInfo.TrialBoots != boot || !s.trial.canFallBack || s.trial.timeout != time.Minute {
			t.Fatalf("trial boot %d: cfg %q info %+v trial %+v", boot, s.cfg.Hostname, s.cfgInfo, s.trial)
		}
		s.trial.timeout = 10 * time.Millisecond
		s.superviseTrial(ctx, false)
		select {
		case r := <-s.shutdown:
			if r.poweroff || !strings.Contains(r.why, "trial") {
				t.Fatalf("shutdown %+v", r)
			}
		default:
			t.Fatalf("trial boot %d: no reboot at the time-out", boot)
		}
	}
	applyBoot(t, s, bad)
	if s.cfg.Hostname != "good" || s.cfgInfo.SetAside != 2 || s.cfgInfo.Generation != 1 || !s.cfgInfo.Confirmed || !s.cfgInfo.UsedLastGood || s.trial.gen != 0 {
		t.Fatalf("after the trial: cfg %q info %+v trial %+v", s.cfg.Hostname, s.cfgInfo, s.trial)
	}
	s.superviseTrial(ctx, false)
	select {
	case r := <-s.shutdown:
		t.Fatalf("a boot on the last good config rebooted: %+v", r)
	default:
	}
}

// A boot stopped by the machine (a data partition too small for k3s, no
// persistence, a clock below its floor) does not count in the config's
// trial and does not reboot: growing the disk must not find the config
// set aside.
func TestConfigTrialNotTheConfig(t *testing.T) {
	s := testSystemWithState(t)
	ctx := t.Context()
	applyBoot(t, s, "#cloud-config\nhostname: good\n")
	s.superviseTrial(ctx, true)
	bad := "#cloud-config\nhostname: new\nballast:\n  config_trial: {boots: 2, timeout: 1m}\n"
	for range 5 {
		applyBoot(t, s, bad)
		if s.cfg.Hostname != "new" || s.cfgInfo.TrialBoots != 1 {
			t.Fatalf("boot on a small disk: cfg %q info %+v", s.cfg.Hostname, s.cfgInfo)
		}
		s.notTheConfig(errors.New("not starting k3s: the data partition is 55 MiB"))
		s.trial.timeout = 10 * time.Millisecond
		s.superviseTrial(ctx, false)
		select {
		case r := <-s.shutdown:
			t.Fatalf("rebooted for the machine's fault: %+v", r)
		default:
		}
		s.trialExempt = nil
	}
}
