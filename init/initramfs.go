package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	umount "github.com/u-root/u-root/pkg/mount"
	"github.com/u-root/u-root/pkg/mount/loop"
	"golang.org/x/sys/unix"

	"github.com/ballast-os/ballast/init/agent"
	"github.com/ballast-os/ballast/init/blockdev"
	"github.com/ballast-os/ballast/init/bootstep"
	"github.com/ballast-os/ballast/init/cmdline"
	"github.com/ballast-os/ballast/init/console"
	"github.com/ballast-os/ballast/init/kmod"
	"github.com/ballast-os/ballast/init/mounts"
)

const (
	sysroot      = "/sysroot"
	liveMount    = "/run/ballast/live"
	liveLabel    = "BALLAST_LIVE"
	rootWait     = 10 * time.Second
	etcOverlayAt = "/run/ballast/etc-overlay"
)

// rootInfo is what the initramfs found, handed to the system stage.
type rootInfo struct {
	Slot   string `json:"slot,omitempty"`
	Live   bool   `json:"live,omitempty"`
	Device string `json:"device"` // /dev/vda2, or the ISO's device
	Disk   string `json:"disk"`   // vda
}

type initramfs struct {
	log   *slog.Logger
	out   io.Writer
	ring  *console.Ring
	start time.Time
	mnt   mounts.Mounter
	root  rootInfo
	found string // devices seen, for the fatal message
}

// pseudoMounts are the initramfs's first mounts.
var pseudoMounts = []mounts.Mount{
	{Source: "proc", Target: "/proc", FSType: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
	{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
}

// sysrootMounts make the read-only system usable: tmpfs where it writes,
// an overlay for /etc (rebuilt from cloud-config every boot).
var sysrootMounts = []mounts.Mount{
	{Source: "tmpfs", Target: sysroot + "/tmp", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
	{Source: "tmpfs", Target: sysroot + "/var", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
	{Source: "overlay", Target: sysroot + "/etc", FSType: "overlay",
		Data: "lowerdir=" + sysroot + "/etc,upperdir=" + etcOverlayAt + "/upper,workdir=" + etcOverlayAt + "/work"},
}

func runInitramfs(ctx context.Context, s *initramfs) {
	s.mnt = mounts.System{}
	r := &bootstep.Runner{Phase: bootstep.PhaseInitramfs, Clock: bootstep.SystemClock{}, KernelStart: s.start, Log: s.log}
	steps := []bootstep.Step{
		{Name: "pseudo-fs", Fatal: true, Run: func(context.Context) error {
			if err := mounts.ApplyAll(s.mnt, "/", pseudoMounts); err != nil {
				return err
			}
			// Now that /proc is there, place the stages relative to the kernel's start.
			if ks, err := bootstep.KernelStart(s.start, "/proc/uptime"); err == nil {
				r.KernelStart = ks
			}
			return nil
		}},
		{Name: "modules", Run: s.loadModules},
		{Name: "find-root", Fatal: true, Run: s.findRoot},
		{Name: "mount-root", Fatal: true, Run: s.mountRoot},
		{Name: "mount-sysroot", Fatal: true, Run: func(context.Context) error {
			for _, d := range []string{"upper", "work"} {
				if err := os.MkdirAll(filepath.Join(etcOverlayAt, d), 0o755); err != nil {
					return err
				}
			}
			return mounts.ApplyAll(s.mnt, "/", sysrootMounts)
		}},
		{Name: "handoff", Fatal: true, Run: s.handoff},
	}
	if err := r.Run(ctx, steps); err != nil {
		fatal(s.out, s.log, err, s.found)
	}
	// The last stage record is written just before switching.
	writeJSON(stagesFile, r.Stages())
	s.log.Info("switching root", "init", systemInit)
	if err := umount.SwitchRoot(sysroot, systemInit); err != nil {
		fatal(s.out, s.log, fmt.Errorf("switch_root to %s: %w", sysroot, err), "")
	}
}

func (s *initramfs) loadModules(context.Context) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	n, err := kmod.LoadInitramfsList(kmod.System{}, initramfsMarker, "/etc/ballast/modules.paths", dir)
	s.log.Info("modules loaded", "count", n)
	return err
}

func (s *initramfs) findRoot(ctx context.Context) error {
	raw, _ := os.ReadFile("/proc/cmdline")
	args := cmdline.Parse(string(raw))
	s.root.Live = args["ballast.live"] == "1"
	slot := strings.ToUpper(args["ballast.slot"])
	if slot == "" && !s.root.Live {
		slot = "A"
	}
	if slot != "" && slot != "A" && slot != "B" {
		return fmt.Errorf("ballast.slot=%s: want A or B", slot)
	}
	s.root.Slot = slot
	want := "partition BALLAST_" + slot
	if s.root.Live {
		want = "ISO 9660 volume " + liveLabel
	}
	// MBR disks (the Raspberry Pi's) have no partition names: the command
	// line names the disk by its MBR signature and the slot is a number.
	// GPT disks are named by their disk GUID, so that a USB stick with
	// another ballast image (a BALLAST_A partition of its own) cannot take
	// the node at its next reboot.
	var (
		mbrSig   uint32
		mbrPart  int
		diskGUID string
	)
	if v, ok := args["ballast.disk"]; ok && !s.root.Live {
		if len(v) == 36 {
			g, err := blockdev.ParseDiskGUID(v)
			if err != nil {
				return fmt.Errorf("ballast.disk=%s: %w", v, err)
			}
			diskGUID = g
			want = fmt.Sprintf("partition BALLAST_%s of the disk with GPT GUID %s", slot, g)
		} else {
			sig, err := blockdev.ParseDiskSignature(v)
			if err != nil {
				return fmt.Errorf("ballast.disk=%s: %w", v, err)
			}
			mbrSig, mbrPart = sig, mbrSlotPartition[slot]
			want = fmt.Sprintf("partition %d (slot %s) of the disk with MBR signature %08x", mbrPart, slot, sig)
		}
	}
	s.log.Info("looking for the root", "want", want)
	warned := false
	d, err := blockdev.Wait(ctx, rootWait, 50*time.Millisecond, func() (blockdev.Device, bool, error) {
		devs, err := blockdev.Scan("/sys/class/block")
		if err != nil {
			return blockdev.Device{}, false, err
		}
		s.found = blockdev.Describe(devs)
		if s.root.Live {
			return findISO(devs, "/dev")
		}
		if mbrSig != 0 {
			if disk, ok := blockdev.DiskBySignature(devs, "/dev", mbrSig); ok {
				if p, ok := blockdev.Partition(devs, disk.Name, mbrPart); ok {
					return p, true, nil
				}
			}
			return blockdev.Device{}, false, nil
		}
		if diskGUID != "" {
			disk, n := blockdev.DiskByGUID(devs, "/dev", diskGUID)
			if n == 0 {
				return blockdev.Device{}, false, nil
			}
			if n > 1 && !warned {
				warned = true
				s.log.Warn("several disks have this image's GPT GUID (the same image flashed twice?): using the first", "guid", diskGUID, "disk", disk.Name)
			}
			for _, p := range blockdev.ByPartName(devs, "BALLAST_"+slot) {
				if p.Disk == disk.Name {
					return p, true, nil
				}
			}
			return blockdev.Device{}, false, nil
		}
		if ps := blockdev.ByPartName(devs, "BALLAST_"+slot); len(ps) > 0 {
			return ps[0], true, nil
		}
		return blockdev.Device{}, false, nil
	})
	if err != nil {
		return fmt.Errorf("no %s: %w", want, err)
	}
	s.root.Device, s.root.Disk = d.Path("/dev"), d.Disk
	s.log.Info("found root", "device", s.root.Device)
	return nil
}

// mbrSlotPartition numbers the slots on an MBR disk (docs/architecture.md,
// "Raspberry Pi SD card").
var mbrSlotPartition = map[string]int{"A": 2, "B": 3}

// findISO returns the device holding the live ISO: a CD drive or a whole
// disk (a USB stick written with the hybrid image).
func findISO(devs []blockdev.Device, devDir string) (blockdev.Device, bool, error) {
	for _, d := range devs {
		if d.IsPartition() || strings.HasPrefix(d.Name, "loop") || strings.HasPrefix(d.Name, "ram") {
			continue
		}
		f, err := os.Open(d.Path(devDir))
		if err != nil {
			continue // e.g. an empty CD drive
		}
		id, ok := blockdev.ISOVolumeID(f)
		f.Close()
		if ok && id == liveLabel {
			return d, true, nil
		}
	}
	return blockdev.Device{}, false, nil
}

func (s *initramfs) mountRoot(context.Context) error {
	image := s.root.Device
	if s.root.Live {
		iso := mounts.Mount{Source: s.root.Device, Target: liveMount, FSType: "iso9660", Flags: unix.MS_RDONLY}
		if err := iso.Apply(s.mnt, "/"); err != nil {
			return err
		}
		l, err := loop.New(filepath.Join(liveMount, "ballast/system.squashfs"), "squashfs", "")
		if err != nil {
			return fmt.Errorf("loop device for %s/ballast/system.squashfs: %w", liveMount, err)
		}
		image = l.Dev
	}
	m := mounts.Mount{Source: image, Target: sysroot, FSType: "squashfs", Flags: unix.MS_RDONLY}
	return m.Apply(s.mnt, "/")
}

// handoff leaves what the system stage needs in /run/ballast, which
// switch_root moves into the new root.
func (s *initramfs) handoff(context.Context) error {
	var errs []error
	for _, f := range []string{"baked.yaml", "build.json"} {
		b, err := os.ReadFile(filepath.Join("/etc/ballast", f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			// The baked config may hold the k3s token and password hashes.
			err = os.WriteFile(filepath.Join("/run/ballast", f), b, 0o600)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("handing over %s: %w", f, err))
		}
	}
	if err := writeJSON(rootFile, s.root); err != nil {
		errs = append(errs, err)
	}
	if _, err := os.Stat(filepath.Join(sysroot, systemInit)); err != nil {
		errs = append(errs, fmt.Errorf("system image has no init: %w", err))
	}
	return errors.Join(errs...)
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readStages(path string) []agent.Stage {
	var st []agent.Stage
	b, err := os.ReadFile(path)
	if err == nil {
		json.Unmarshal(b, &st)
	}
	return st
}
