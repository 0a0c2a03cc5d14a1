package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/init/agent"
	"github.com/ballast-os/ballast/init/state"
)

// A config that parses can still break a node: k3s flags that crash k3s,
// a static address that cuts the node off, a bootcmd that fails. So a
// changed config is on trial: it becomes the "last good config" (what a
// broken config falls back to) only once a boot with it is healthy, that
// is ready with no step failed and, where the node runs k3s, its node
// Ready. A config that has had its boots (ballast.config_trial.boots)
// without getting there is set aside and the last good one applied until
// the config changes; a boot that is not healthy within the time-out
// reboots to get there without a visit, but only when a good config exists
// to fall back to.

// notTheConfig records that this boot failed for a reason of the
// machine's, not the config's (no persistent storage, a clock below its
// floor, a data partition too small for k3s): the boot does not count in
// the config's trial, and does not reboot for it. It returns err.
func (s *system) notTheConfig(err error) error {
	s.mu.Lock()
	s.trialExempt = err
	s.mu.Unlock()
	return err
}

// trial is the config generation this boot has on trial.
type trial struct {
	gen         int // 0: the applied config is good (or unrecorded)
	boot, boots int // this boot's number in the trial, and how many it gets
	timeout     time.Duration
	canFallBack bool // a good generation exists to fall back to
}

// beginTrial records cfg as a generation, counts this boot in its trial,
// and returns the config to apply: cfg, or the last good one when cfg
// failed its trial.
func (s *system) beginTrial(db *state.DB, cfg *cloudconfig.Config, info agent.Config, sources []string, need string) (*cloudconfig.Config, agent.Config) {
	raw, _ := json.Marshal(cfg)
	g, err := db.RecordConfig(cfg.Hash(), sources, raw, time.Now())
	if err != nil {
		s.log.Error("recording config", "err", err)
		return cfg, info
	}
	info.Generation = g
	var settings *cloudconfig.ConfigTrial
	if cfg.Ballast != nil {
		settings = cfg.Ballast.ConfigTrial
	}
	boots := settings.BootsOrDefault()
	res, err := db.BeginTrial(g, boots, need)
	if err != nil {
		s.log.Error("config trial", "err", err)
		return cfg, info
	}
	if res.SetAside != 0 {
		var last cloudconfig.Config
		if err := json.Unmarshal(res.Apply.Config, &last); err != nil {
			s.log.Error("config trial: the last good config does not decode; keeping the new one", "generation", res.Apply.Number, "err", err)
			return cfg, info
		}
		cfg = &last
		info.UsedLastGood, info.SetAside = true, res.SetAside
		s.log.Error(fmt.Sprintf("cloud-config generation %d did not bring this node up in %d boots: applying the last good config (generation %d) until the config changes", res.SetAside, boots, res.Apply.Number))
	}
	info.Generation, info.Confirmed = res.Apply.Number, res.Apply.Good()
	if t := res.Apply.Trial; t != nil {
		info.TrialBoots = t.Boots
		_, err := db.LastGoodConfigWith(need)
		tr := trial{gen: res.Apply.Number, boot: t.Boots, boots: boots, timeout: settings.TimeoutOrDefault(), canFallBack: err == nil}
		s.mu.Lock()
		s.trial = tr
		s.mu.Unlock()
		s.log.Info(fmt.Sprintf("cloud-config generation %d is on trial: boot %d of %d", tr.gen, tr.boot, tr.boots), "healthy_means", "ready, and the node Ready where k3s runs")
	}
	return cfg, info
}

// superviseTrial confirms the config on trial once this boot is healthy
// (bootReady: every boot step succeeded; then the node Ready, where k3s
// runs), or reboots when the boot is not healthy within the trial's
// time-out and a good config exists to fall back to.
func (s *system) superviseTrial(ctx context.Context, bootReady bool) {
	s.mu.Lock()
	t, db, nodeReady, exempt := s.trial, s.db, s.nodeReady, s.trialExempt
	s.mu.Unlock()
	if t.gen == 0 || db == nil {
		return
	}
	if exempt != nil {
		if err := db.UncountTrialBoot(t.gen); err != nil {
			s.log.Error("config trial", "err", err)
		}
		s.log.Warn(fmt.Sprintf("cloud-config generation %d: this boot does not count in its trial (the machine, not the config, stopped it)", t.gen), "why", exempt)
		return
	}
	healthy := make(chan struct{})
	if bootReady {
		go func() {
			if nodeReady != nil {
				select {
				case <-nodeReady:
				case <-ctx.Done():
					return
				}
			}
			close(healthy)
		}()
	}
	var expired <-chan time.Time
	if t.canFallBack && t.timeout > 0 {
		timer := time.NewTimer(max(0, t.timeout-time.Since(s.start)))
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-healthy:
		if err := db.ConfirmConfig(t.gen); err != nil {
			s.log.Error("config trial", "err", err)
			return
		}
		s.mu.Lock()
		s.cfgInfo.Confirmed, s.cfgInfo.TrialBoots = true, 0
		s.trial = trial{}
		s.mu.Unlock()
		s.log.Info(fmt.Sprintf("cloud-config generation %d confirmed: this boot is healthy, and it is now the config a broken one falls back to", t.gen))
	case <-expired:
		next := "to try it again"
		if t.boot >= t.boots {
			next = "to the last good config"
		}
		s.log.Error(fmt.Sprintf("cloud-config generation %d is on trial (boot %d of %d) and this boot is not healthy after %s: rebooting %s", t.gen, t.boot, t.boots, t.timeout, next))
		s.requestShutdown(shutdownRequest{why: "config trial timed out"})
	case <-ctx.Done():
	}
}
