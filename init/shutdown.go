package main

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ballast-os/ballast/init/datapart"
	"github.com/ballast-os/ballast/init/mounts"
)

type shutdownRequest struct {
	poweroff bool
	why      string
}

// requestShutdown queues a shutdown; only the first request counts.
func (s *system) requestShutdown(r shutdownRequest) error {
	select {
	case s.shutdown <- r:
		return nil
	default:
		return errors.New("shutdown already in progress")
	}
}

// watchSignals maps signals to shutdowns, as busybox init does:
// SIGTERM and SIGINT (ctrl-alt-del) reboot, SIGUSR2 powers off.
func (s *system) watchSignals(ctx context.Context) {
	c := make(chan os.Signal, 4)
	signal.Notify(c, unix.SIGTERM, unix.SIGINT, unix.SIGUSR2, unix.SIGUSR1)
	// SIGPIPE on a closed agent port must not kill PID 1.
	signal.Ignore(unix.SIGPIPE, unix.SIGHUP)
	go func() {
		for sig := range c {
			switch sig {
			case unix.SIGUSR2:
				s.requestShutdown(shutdownRequest{poweroff: true, why: "SIGUSR2"})
			case unix.SIGUSR1:
				// busybox reserves USR1 for halt; ballast has no halt: ignore.
			default:
				s.requestShutdown(shutdownRequest{why: sig.String()})
			}
		}
	}()
}

const (
	evKey    = 1
	keyPower = 116
)

// watchPowerButton powers off when the ACPI power button is pressed.
func (s *system) watchPowerButton(ctx context.Context) {
	var dev string
	for i := 0; i < 20 && dev == ""; i++ {
		dev = findInputDevice(s.path("/sys/class/input"), "Power Button")
		if dev == "" {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if dev == "" {
		s.log.Info("no power button input device")
		return
	}
	f, err := os.Open(s.path(filepath.Join("/dev/input", dev)))
	if err != nil {
		s.log.Warn("power button", "err", err)
		return
	}
	defer f.Close()
	// struct input_event: a timeval, then type, code (u16) and value (s32).
	tv := int(unsafe.Sizeof(unix.Timeval{}))
	buf := make([]byte, tv+8)
	for ctx.Err() == nil {
		if _, err := f.Read(buf); err != nil {
			return
		}
		typ := binary.NativeEndian.Uint16(buf[tv:])
		code := binary.NativeEndian.Uint16(buf[tv+2:])
		val := int32(binary.NativeEndian.Uint32(buf[tv+4:]))
		if typ == evKey && code == keyPower && val == 1 {
			s.requestShutdown(shutdownRequest{poweroff: true, why: "power button"})
		}
	}
}

// findInputDevice returns the eventN whose device name is name.
func findInputDevice(sysClassInput, name string) string {
	ents, _ := os.ReadDir(sysClassInput)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "event") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sysClassInput, e.Name(), "device/name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			return e.Name()
		}
	}
	return ""
}

// serviceStopTimeout is how long each service has to stop at shutdown.
const serviceStopTimeout = 10 * time.Second

// doShutdown stops services, records the boot, syncs, unmounts the data
// partition and its binds, remounts the root read-only and reboots or
// powers off. It does not return.
func (s *system) doShutdown(r shutdownRequest) {
	what := "reboot"
	if r.poweroff {
		what = "poweroff"
	}
	s.log.Info("shutting down", "action", what, "why", r.why)
	s.watchdogForShutdown(len(s.sup.Status()))
	s.sup.StopAll(context.Background(), serviceStopTimeout)
	// What is left (orphans, commands) gets TERM, then KILL.
	unix.Kill(-1, unix.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	unix.Kill(-1, unix.SIGKILL)
	s.saveClock()
	s.mu.Lock()
	db := s.db
	s.db = nil
	s.mu.Unlock()
	if db != nil {
		db.Close()
	}
	unix.Sync()
	infos, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	if err == nil {
		var targets []string
		for _, d := range datapart.PersistentDirs {
			targets = append(targets, d.Target)
		}
		targets = append(targets, datapart.MountPoint, "/run/ballast/boot")
		if err := mounts.UnmountUnder(s.mnt, infos, targets...); err != nil {
			s.log.Error("unmounting", "err", err)
		}
	}
	if err := s.mnt.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		s.log.Info("remount / read-only", "err", err) // squashfs is read-only already
	}
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if r.poweroff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	if r.poweroff {
		s.disarmWatchdogForPoweroff()
	}
	s.log.Info("bye", "action", what)
	if err := unix.Reboot(cmd); err != nil {
		s.log.Error("reboot(2) failed", "err", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}
