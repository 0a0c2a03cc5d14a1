package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/ballast-os/ballast/init/kmod"
)

// baseModules load on every boot beside the coldplugged drivers: evdev
// gives the ACPI power button its input device, which the init watches.
var baseModules = []string{"evdev", "button"}

// coldplug loads the drivers for the devices present at boot, as udev
// would: every modalias in sysfs goes to modprobe, which matches it
// against modules.alias. Without it no network card driver loads.
func (s *system) coldplug(ctx context.Context) error {
	aliases, err := kmod.Modaliases(s.path("/sys/devices"))
	if err != nil {
		return fmt.Errorf("scanning devices: %w", err)
	}
	args := append([]string{"-a", "-q", "-b", "--"}, baseModules...)
	args = append(args, aliases...)
	out, err := exec.CommandContext(ctx, "modprobe", args...).CombinedOutput()
	s.log.Info("device drivers loaded", "devices", len(aliases))
	if err != nil {
		return fmt.Errorf("modprobe: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
