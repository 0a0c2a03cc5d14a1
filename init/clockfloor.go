package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ballast-os/ballast/init/timesync"
	"github.com/ballast-os/ballast/init/writefiles"
)

// The clock floor: a board without a battery-backed clock (a Pi) boots
// in 1970, and an air-gapped first boot would make CAs valid from 1970
// that expire in 1979, then fetch its config URL with every certificate
// "not yet valid". The clock is never left below the image's build epoch
// (build.json's source_date_epoch) nor below the last time this node
// saved (clockFile, on the data partition: at boot, after an NTP sync and
// at shutdown).
const (
	buildManifest = "/usr/lib/ballast/build.json"
	clockFile     = "/var/lib/ballast/clock"
)

// floorTime is the time to set when now is below the floor, and whether
// to set it.
func floorTime(now, buildEpoch, saved time.Time) (time.Time, bool) {
	floor := buildEpoch
	if saved.After(floor) {
		floor = saved
	}
	if now.Before(floor) {
		return floor, true
	}
	return now, false
}

// clockFloor reads the floor's two parts under root.
func clockFloor(root string) (buildEpoch, saved time.Time) {
	if b, err := os.ReadFile(root + buildManifest); err == nil {
		var m struct {
			SourceDateEpoch int64 `json:"source_date_epoch"`
		}
		if json.Unmarshal(b, &m) == nil && m.SourceDateEpoch > 0 {
			buildEpoch = time.Unix(m.SourceDateEpoch, 0).UTC()
		}
	}
	if b, err := os.ReadFile(root + clockFile); err == nil {
		saved, _ = time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
	}
	return buildEpoch, saved
}

// applyClockFloor steps the clock up to the floor when it is below it.
func (s *system) applyClockFloor() {
	build, saved := clockFloor(s.root)
	now := time.Now()
	if t, below := floorTime(now, build, saved); below {
		if err := timesync.SetSystemClock(t); err != nil {
			s.log.Error("clock below its floor, and setting it failed", "now", now, "floor", t, "err", err)
			return
		}
		s.log.Warn("clock was below its floor (build time or last saved time): set forward", "was", now.UTC().Format(time.RFC3339), "now", t.Format(time.RFC3339))
	}
	s.saveClock()
}

// saveClock records the time on the data partition for the next boot's floor.
func (s *system) saveClock() {
	if checkClockSane(s.root, time.Now()) != nil {
		return // a clock below the floor must not lower it
	}
	// Synced: a Pi's power is pulled, not shut down, and a floor lost
	// with the page cache is a boot in 1970 again.
	if err := writefiles.WriteDurable(s.path(clockFile), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("saving the clock floor", "err", err)
	}
}

// checkClockSane says why the clock cannot be trusted to make
// certificates: it is below its floor (setting it there failed). k3s
// waits: CAs made now would be dated in the past and expire early.
func checkClockSane(root string, now time.Time) error {
	build, saved := clockFloor(root)
	if floor, below := floorTime(now, build, saved); below {
		return fmt.Errorf("the clock reads %s, before %s (the image's build time or the time this node last saved), and setting it failed: certificates made now would be dated wrong", now.UTC().Format(time.RFC3339), floor.Format(time.RFC3339))
	}
	return nil
}
