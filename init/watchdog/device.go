package watchdog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoDevice: the machine has no watchdog device.
var ErrNoDevice = errors.New("no watchdog device")

// Device is an open watchdog. File is the Linux one; tests use a fake.
type Device interface {
	// Identity is the driver's name for the device (WDIOC_GETSUPPORT).
	Identity() (string, error)
	// Limits are the shortest and longest timeouts the device takes, in
	// seconds; 0 when unknown or unlimited.
	Limits() (min, max int)
	SetTimeout(seconds int) error // WDIOC_SETTIMEOUT
	Timeout() (int, error)        // WDIOC_GETTIMEOUT
	Keepalive() error             // WDIOC_KEEPALIVE
	// Disarm stops the timer (WDIOS_DISABLECARD, then the magic close).
	Disarm() error
}

// Find returns the first watchdog under devDir (/dev): watchdog0, the
// first one the kernel registered (also /dev/watchdog), as listed in
// sysClass (/sys/class/watchdog); else the legacy /dev/watchdog of a
// driver without the watchdog core. ErrNoDevice when there is none.
//
// Only one device is driven: on a machine with two (a PC's iTCO and an
// add-in card) the first is as good a proof of life as both.
func Find(devDir, sysClass string) (string, error) {
	ents, _ := os.ReadDir(sysClass)
	var nums []int
	for _, e := range ents {
		if n, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "watchdog")); err == nil && strings.HasPrefix(e.Name(), "watchdog") {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	for _, n := range nums {
		p := filepath.Join(devDir, "watchdog"+strconv.Itoa(n))
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if len(nums) == 0 {
		if _, err := os.Stat(filepath.Join(devDir, "watchdog")); err == nil {
			return filepath.Join(devDir, "watchdog"), nil
		}
	}
	return "", ErrNoDevice
}

// File is a Linux watchdog device, driven through the ioctls of
// Documentation/watchdog/watchdog-api.rst. Opening it starts the timer.
type File struct {
	f        *os.File
	sysClass string // /sys/class/watchdog/watchdogN, for the limits
}

// Open opens a watchdog device and checks that it is one. The descriptor
// is close-on-exec (os.OpenFile's default): a service that inherited it
// would hold the device, and its exit would be an unexpected close.
func Open(path, sysClass string) (*File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	d := &File{f: f, sysClass: filepath.Join(sysClass, filepath.Base(path))}
	if _, err := d.Identity(); err != nil {
		// Not disarmed: a real watchdog that fails GETSUPPORT is broken
		// anyway, and a "V" could stop one that was running already.
		f.Close()
		return nil, err
	}
	return d, nil
}

func (d *File) fd() int { return int(d.f.Fd()) }

func (d *File) Identity() (string, error) {
	info, err := unix.IoctlGetWatchdogInfo(d.fd())
	if err != nil {
		return "", fmt.Errorf("watchdog %s: WDIOC_GETSUPPORT: %w", d.f.Name(), err)
	}
	return unix.ByteSliceToString(info.Identity[:]), nil
}

// Limits reads min_timeout and max_timeout from sysfs. A driver whose
// hardware limit is short but that lets the kernel ping in between
// (bcm2835_wdt: 15 s in hardware) reports max_timeout 0: no limit.
func (d *File) Limits() (min, max int) {
	read := func(name string) int {
		b, err := os.ReadFile(filepath.Join(d.sysClass, name))
		if err != nil {
			return 0
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	return read("min_timeout"), read("max_timeout")
}

func (d *File) SetTimeout(seconds int) error {
	if err := unix.IoctlSetPointerInt(d.fd(), unix.WDIOC_SETTIMEOUT, seconds); err != nil {
		return fmt.Errorf("watchdog %s: WDIOC_SETTIMEOUT %d: %w", d.f.Name(), seconds, err)
	}
	return nil
}

func (d *File) Timeout() (int, error) {
	n, err := unix.IoctlGetInt(d.fd(), unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return 0, fmt.Errorf("watchdog %s: WDIOC_GETTIMEOUT: %w", d.f.Name(), err)
	}
	return n, nil
}

func (d *File) Keepalive() error {
	if err := unix.IoctlWatchdogKeepalive(d.fd()); err != nil {
		return fmt.Errorf("watchdog %s: WDIOC_KEEPALIVE: %w", d.f.Name(), err)
	}
	return nil
}

// Disarm stops the timer and closes the device. WDIOS_DISABLECARD stops
// it outright; the magic "V" before close is what the watchdog core asks
// of drivers with WDIOF_MAGICCLOSE, where a plain close leaves it running.
func (d *File) Disarm() error {
	err := unix.IoctlSetPointerInt(d.fd(), unix.WDIOC_SETOPTIONS, unix.WDIOS_DISABLECARD)
	if err != nil {
		err = fmt.Errorf("watchdog %s: WDIOS_DISABLECARD: %w", d.f.Name(), err)
	}
	if _, werr := d.f.Write([]byte("V")); werr != nil && err == nil {
		err = fmt.Errorf("watchdog %s: magic close: %w", d.f.Name(), werr)
	}
	if cerr := d.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("watchdog %s: %w", d.f.Name(), cerr)
	}
	return err
}
