package qemutest

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/imagebuild"
	"github.com/ballast-os/ballast/imagebuild/spec"
)

// TestWiFiHwsim proves network.wifi end to end on x86_64: an image with
// wpa_supplicant, hostapd, iw and the mac80211_hwsim radios (kept with
// kernel.keep_modules) boots with a cloud-config that joins a WPA2 network.
// The access point is the second simulated radio, moved into its own
// network namespace so the node's ping really crosses the simulated air
// (two local addresses would be answered by the loopback).
func TestWiFiHwsim(t *testing.T) {
	useCores(t, prioShort, 1)
	if testing.Short() {
		t.Skip("builds an image and boots QEMU: not in -short (make unit)")
	}
	img := buildWiFiImage(t)

	const (
		ssid = "ballast-test"
		psk  = "ballast hwsim secret"
	)
	ud := `#cloud-config
hostname: wifi-node
ballast:
  runtime: none
  agent:
    privileged: true
network:
  wifi:
    ssid: ` + ssid + `
    psk: "` + psk + `"
    interface: wlan0
  interfaces:
    - name: wlan0
      addresses: [192.168.77.2/24]
write_files:
  - path: /etc/hostapd-test.conf
    content: |
      interface=wlan1
      driver=nl80211
      ssid=` + ssid + `
      hw_mode=g
      channel=6
      wpa=2
      wpa_key_mgmt=WPA-PSK
      rsn_pairwise=CCMP
      wpa_passphrase=` + psk + `
bootcmd:
  # Two simulated radios: wlan0 (the node's) and wlan1 (the access point's).
  - modprobe mac80211_hwsim radios=2
  - ip netns add ap
  - iw phy "$(cat /sys/class/net/wlan1/phy80211/name)" set netns name ap
  - ip -n ap link set lo up
  - ip -n ap addr add 192.168.77.1/24 dev wlan1
  - ip netns exec ap hostapd -B /etc/hostapd-test.conf
`
	m := startMachine(t, Options{Disk: img, UserData: []byte(ud)})
	st := waitReady(t, m)
	if len(st.Config.Errors) > 0 {
		t.Fatalf("config errors: %q", st.Config.Errors)
	}
	for _, s := range st.Boot.Stages {
		if s.Error != "" && (s.Name == "network" || s.Name == "bootcmd") {
			t.Errorf("stage %s failed: %s", s.Name, s.Error)
		}
	}

	// Association happens after bootcmd starts the access point: wait for it.
	link := pollNode(t, m, 2*time.Minute, func(out string) bool {
		return strings.Contains(out, "Connected to") && strings.Contains(out, "SSID: "+ssid)
	}, "iw", "dev", "wlan0", "link")
	t.Logf("iw dev wlan0 link:\n%s", link)

	// The static address comes right after association.
	pollNode(t, m, 30*time.Second, func(string) bool { return true }, "ping", "-c1", "-W2", "192.168.77.1")

	// The access point sees the node as an associated, authorized station.
	mac := strings.TrimSpace(nodeExec(t, m, "cat", "/sys/class/net/wlan0/address"))
	sta := nodeExec(t, m, "ip", "netns", "exec", "ap", "iw", "dev", "wlan1", "station", "dump")
	if !strings.Contains(sta, "Station "+mac) || !strings.Contains(sta, "authorized:\tyes") {
		t.Errorf("the access point's stations lack an authorized %s:\n%s", mac, sta)
	}

	// The supplicant's config holds the PMK, never the passphrase.
	const conf = "/run/ballast/wpa_supplicant-wlan0.conf"
	if got := strings.TrimSpace(nodeExec(t, m, "stat", "-c", "%a %U", conf)); got != "600 root" {
		t.Errorf("%s: mode and owner %q, want 600 root", conf, got)
	}
	text := nodeExec(t, m, "cat", conf)
	pmk, err := pbkdf2.Key(sha1.New, psk, []byte(ssid), 4096, 32)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text, psk) || strings.Contains(text, "ballast hwsim") {
		t.Errorf("%s holds the passphrase in clear:\n%s", conf, text)
	}
	if !strings.Contains(text, "psk="+hex.EncodeToString(pmk)) {
		t.Errorf("%s lacks the PMK:\n%s", conf, text)
	}

	st, err = m.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var running, addressed bool
	for _, s := range st.Services {
		if s.Name == "wpa_supplicant" && s.State == "running" {
			running = true
		}
	}
	for _, ifc := range st.Network {
		if ifc.Name == "wlan0" && ifc.Method == "static" && strings.Contains(strings.Join(ifc.Addresses, " "), "192.168.77.2/24") {
			addressed = true
		}
	}
	if !running {
		t.Errorf("wpa_supplicant is not a running service: %+v", st.Services)
	}
	if !addressed {
		t.Errorf("the agent does not report wlan0 with 192.168.77.2/24: %+v", st.Network)
	}
}

// buildWiFiImage builds the test image into a temporary directory, with the
// user's ballast cache (the Debian packages, depmod indexes and squashfs
// are reused from run to run).
func buildWiFiImage(t *testing.T) string {
	t.Helper()
	uc, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	s := spec.Default()
	s.Name = "wifi-test"
	s.Output = out
	s.Lock = filepath.Join(out, "wifi-test.lock")
	s.Formats = []string{"raw"}
	s.Packages = []string{"wpasupplicant", "hostapd", "iw"}
	s.Kernel.KeepModules = []string{"drivers/net/wireless/virtual", "net/mac80211", "net/wireless"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := imagebuild.Build(ctx, imagebuild.Options{Spec: s, CacheDir: filepath.Join(uc, "ballast")})
	if err != nil {
		t.Fatalf("building the Wi-Fi test image: %v", err)
	}
	t.Logf("built %s in %v (squashfs from cache: %v)", res.Images[0].Path, time.Since(start).Round(time.Millisecond), res.SquashfsCache)
	return res.Images[0].Path
}

// pollNode runs argv on the node until it exits 0 and ok accepts its
// output, or fails the test after d with the last result.
func pollNode(t *testing.T, m *Machine, d time.Duration, ok func(string) bool, argv ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := m.Exec(ctx, argv...)
		cancel()
		if err != nil {
			t.Fatalf("exec %q: %v", argv, err)
		}
		if res.ExitCode == 0 && ok(res.Stdout) {
			return res.Stdout
		}
		if time.Now().After(deadline) {
			lctx, lcancel := context.WithTimeout(context.Background(), 30*time.Second)
			wpa, _ := m.Exec(lctx, "tail", "-n", "30", "/var/log/wpa_supplicant.log")
			lcancel()
			var wpaLog string
			if wpa != nil {
				wpaLog = wpa.Stdout
			}
			t.Fatalf("%q after %v: exit %d\nstdout: %s\nstderr: %s\nwpa_supplicant.log:\n%s", argv, d, res.ExitCode, res.Stdout, res.Stderr, wpaLog)
		}
		time.Sleep(2 * time.Second)
	}
}
