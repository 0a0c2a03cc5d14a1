package boards

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestEveryBoardLoads(t *testing.T) {
	names := Names()
	if len(names) == 0 {
		t.Fatal("no boards embedded")
	}
	for _, n := range names {
		b, err := Get(n)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if b.Name != n {
			t.Errorf("%s.yaml names itself %q", n, b.Name)
		}
	}
}

func TestX86Board(t *testing.T) {
	b, err := Get("x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if b.Arch != "amd64" || !b.HasBootChain("uefi") || !b.HasBootChain("bios") {
		t.Fatalf("unexpected x86_64 board: %+v", b)
	}
	if !strings.HasSuffix(b.CmdlineString(), "console=ttyS0,115200 panic=10") {
		t.Fatalf("cmdline %q: serial console must be last so it is /dev/console", b.CmdlineString())
	}
}

func TestUnknownBoard(t *testing.T) {
	_, err := Get("pdp11")
	if !errors.Is(err, ErrUnknownBoard) || !strings.Contains(err.Error(), "x86_64") {
		t.Fatalf("err = %v; want ErrUnknownBoard listing known boards", err)
	}
}

func TestParseRejectsUnknownKeysAndBadValues(t *testing.T) {
	_, err := Parse("b.yaml", []byte("name: x\narch: amd64\nkernel_package: k\npartition_scheme: gpt\ncmdlin: [a]\n"))
	if err == nil || !strings.Contains(err.Error(), "cmdlin") || !strings.Contains(err.Error(), "line 5") {
		t.Fatalf("unknown key: err = %v", err)
	}
	_, err = Parse("b.yaml", []byte("name: x\narch: sparc\nkernel_package: k\npartition_scheme: zfs\n"))
	if err == nil || !strings.Contains(err.Error(), "sparc") || !strings.Contains(err.Error(), "zfs") {
		t.Fatalf("bad values: err = %v", err)
	}
}

// TestPiBoardsCarryWiFi: network.wifi needs wpa_supplicant, the BCM43xx
// firmware and the brcmfmac/cfg80211/mac80211 modules on every Pi; the
// x86_64 image stays without them.
func TestPiBoardsCarryWiFi(t *testing.T) {
	for _, n := range []string{"rpi3", "rpi4", "rpi5"} {
		b, err := Get(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"firmware-brcm80211", "wpasupplicant"} {
			if !slices.Contains(b.Packages, p) {
				t.Errorf("%s: packages lack %s", n, p)
			}
		}
		for _, dir := range []string{"drivers/net/wireless/broadcom/brcm80211/brcmfmac", "net/wireless", "net/mac80211"} {
			for _, x := range b.ModuleExcludes {
				if dir == x || strings.HasPrefix(dir, x+"/") {
					t.Errorf("%s: module_excludes %s drops %s, which Wi-Fi needs", n, x, dir)
				}
			}
		}
	}
	x, err := Get("x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(x.Packages, "wpasupplicant") {
		t.Error("x86_64 carries wpasupplicant: the default image must not grow")
	}
}

// TestBoardsKeepWatchdogDrivers: the init arms the board's hardware
// watchdog with the driver the devices step loads from the system image
// (i6300esb in QEMU, iTCO_wdt on PCs, bcm2835_wdt on a Pi 3 and 4, where
// the bcm2835-pm MFD is built into Debian's kernel and creates the
// device the module binds to); no board may leave drivers/watchdog out.
func TestBoardsKeepWatchdogDrivers(t *testing.T) {
	for _, n := range Names() {
		b, err := Get(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range b.ModuleExcludes {
			if dir := "drivers/watchdog"; dir == x || strings.HasPrefix(dir, x+"/") || strings.HasPrefix(x, dir+"/") {
				t.Errorf("%s: module_excludes %s drops watchdog drivers", n, x)
			}
		}
	}
}

// TestKernelSuite: the Pi 5 takes its kernel from trixie-backports, the
// other boards from the build's suite; a suite name that cannot be a
// path segment of the mirror is refused.
func TestKernelSuite(t *testing.T) {
	for _, n := range Names() {
		b, err := Get(n)
		if err != nil {
			t.Fatal(err)
		}
		want := ""
		if n == "rpi5" {
			want = "trixie-backports"
		}
		if b.KernelSuite != want {
			t.Errorf("%s: kernel_suite %q, want %q", n, b.KernelSuite, want)
		}
	}
	const base = "name: x\narch: amd64\nkernel_package: k\npartition_scheme: gpt\n"
	if b, err := Parse("b.yaml", []byte(base+"kernel_suite: trixie-backports\n")); err != nil || b.KernelSuite != "trixie-backports" {
		t.Errorf("kernel_suite: %+v, %v", b, err)
	}
	for _, bad := range []string{"../trixie", "trixie/updates", "a b"} {
		if _, err := Parse("b.yaml", []byte(base+"kernel_suite: "+bad+"\n")); err == nil || !strings.Contains(err.Error(), "kernel_suite") {
			t.Errorf("kernel_suite %q: err = %v", bad, err)
		}
	}
}
