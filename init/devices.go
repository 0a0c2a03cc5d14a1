package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/ballast-os/ballast/init/bootstep"
	"github.com/ballast-os/ballast/init/kmod"
)

// baseModules load on every boot beside the coldplugged drivers: evdev
// gives the ACPI power button its input device, which the init watches.
var baseModules = []string{"evdev", "button"}

// coldplug loads the drivers for the devices present at boot, as udev
// would: every modalias in sysfs goes to modprobe, which matches it
// against modules.alias. Without it no network card driver loads.
func (s *system) coldplug(ctx context.Context) error {
	if out, err := exec.CommandContext(ctx, "modprobe", append([]string{"-a", "-b", "--"}, baseModules...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("modprobe %s: %w: %s", strings.Join(baseModules, " "), err, strings.TrimSpace(string(out)))
	}
	// Only now does the power button have an input device to watch.
	go s.watchPowerButton(ctx)
	all, err := kmod.Modaliases(s.path("/sys/devices"))
	if err != nil {
		return fmt.Errorf("scanning devices: %w", err)
	}
	// The CPU's feature list matches every accelerated crypto module and
	// kvm. The crypto API loads the ones it needs on first use; loading
	// them all at boot costs memory and, under emulation, seconds of
	// self-tests. So coldplug leaves the cpu: alias out.
	var aliases []string
	for _, a := range all {
		if !strings.HasPrefix(a, "cpu:") {
			aliases = append(aliases, a)
		}
	}
	out, err := exec.CommandContext(ctx, "modprobe", append([]string{"-a", "-q", "-b", "--"}, aliases...)...).CombinedOutput()
	s.log.Info("device drivers loaded", "devices", len(aliases))
	if err != nil {
		// Like udev, tolerate drivers that refuse the machine (ENODEV from
		// a CPU-specific driver is the usual case): the rest loaded.
		return bootstep.Warn(fmt.Errorf("some drivers did not load (%v): %s", err, strings.TrimSpace(string(out))))
	}
	return nil
}
