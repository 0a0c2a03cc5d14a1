package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	qemutest "github.com/ballast-os/ballast/qemu-tests"
)

func runRun(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "run", "[--config FILE] [--uefi] [--memory MiB] [--cpus N] [--forward GUEST:HOST,...] [--disk-size SIZE] IMAGE")
	config := fs.String("config", "", "cloud-config `file` passed through QEMU fw_cfg (wins over the image's)")
	uefi := fs.Bool("uefi", false, "boot with UEFI firmware (OVMF) instead of SeaBIOS")
	memory := fs.Int("memory", 2048, "guest memory in MiB")
	cpus := fs.Int("cpus", 2, "guest CPUs")
	forward := fs.String("forward", "", "extra port forwards GUEST:HOST (HOST 0 picks a free port); SSH and 6443 are always forwarded")
	diskGiB := fs.Int("disk-size", 8, "disk size the guest sees, in GiB (the data partition grows into it); 0 keeps the image's size")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: name one image (.img or .iso)", errUsage)
	}
	image := fs.Arg(0)
	st, err := os.Stat(image)
	if err != nil {
		return err
	}
	opts := qemutest.Options{Memory: *memory, CPUs: *cpus, Forwards: map[int]int{}, OpenNetwork: true}
	if strings.HasSuffix(image, ".iso") {
		opts.ISO = image
	} else {
		opts.Disk = image
		opts.DiskSize = int64(*diskGiB) << 30
		if opts.DiskSize > 0 && opts.DiskSize < st.Size() {
			// The guest would lose the image's end: the backup GPT, and
			// the data partition of an image with a runtime.
			return fmt.Errorf("%w: --disk-size %d is smaller than %s (%.1f GiB): give at least %d, or 0 for the image's own size",
				errUsage, *diskGiB, image, float64(st.Size())/(1<<30), (st.Size()+1<<30-1)>>30)
		}
	}
	if *uefi {
		opts.Firmware = qemutest.UEFI
	}
	if *config != "" {
		data, err := os.ReadFile(*config)
		if err != nil {
			return err
		}
		opts.UserData = data
	}
	if *forward != "" {
		for _, f := range strings.Split(*forward, ",") {
			g, h, ok := strings.Cut(f, ":")
			gp, err1 := strconv.Atoi(g)
			hp, err2 := strconv.Atoi(h)
			if !ok || err1 != nil || err2 != nil {
				return fmt.Errorf("%w: --forward %q: want GUEST:HOST", errUsage, f)
			}
			opts.Forwards[gp] = hp
		}
	}
	return qemutest.RunInteractive(ctx, opts, env.Stdin, env.Stdout)
}
