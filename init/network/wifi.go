package network

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	cloudconfig "github.com/ballast-os/ballast/cloud-config"
)

// Wi-Fi: the init joins network.wifi with wpa_supplicant (Debian's
// wpasupplicant, in the Raspberry Pi images), run as a supervised service
// on the wireless interface, then configures that interface like any other
// (network.interfaces, else DHCP) once it is associated. The interface may
// appear late (brcmfmac loads its firmware after coldplug), so everything
// after the configuration check runs in the background; Configure waits
// for it no longer than Options.WiFiWait.

// DefaultWiFiWait is how long Configure waits for Wi-Fi to be associated
// and addressed when it is the only interface waited for.
const DefaultWiFiWait = 20 * time.Second

// ErrNoSupplicant means the image has no wpa_supplicant.
var ErrNoSupplicant = errors.New("wpa_supplicant not found: the image needs Debian's wpasupplicant package")

// ErrWiFiNotReady is returned (wrapped) by Configure when Wi-Fi was not
// associated and addressed within the wait; it carries on in the background.
var ErrWiFiNotReady = errors.New("wifi not associated yet")

// supplicantBinaries are where wpa_supplicant may be, under Options.Root.
var supplicantBinaries = []string{"usr/sbin/wpa_supplicant", "sbin/wpa_supplicant"}

// SupplicantConfPath is the supplicant's config for iface, under the root.
func SupplicantConfPath(iface string) string {
	return "run/ballast/wpa_supplicant-" + iface + ".conf"
}

var hex64 = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// PMK is the WPA2-Personal pairwise master key of a passphrase and SSID:
// PBKDF2-HMAC-SHA1(passphrase, ssid, 4096 rounds, 32 bytes) (IEEE 802.11i
// H.4). A psk of 64 hex digits is already the PMK and is decoded.
func PMK(psk, ssid string) ([]byte, error) {
	if hex64.MatchString(psk) {
		return hex.DecodeString(psk)
	}
	if len(psk) < 8 || len(psk) > 63 {
		return nil, fmt.Errorf("network.wifi.psk: a WPA2 passphrase is 8 to 63 characters (or 64 hex digits), got %d", len(psk))
	}
	return pbkdf2.Key(sha1.New, psk, []byte(ssid), 4096, 32)
}

// RenderSupplicantConf is wpa_supplicant's config for w. The SSID is written
// in hex (any bytes, no quoting) and the key as the derived PMK, so the
// passphrase itself is never written; an empty PSK joins an open network.
func RenderSupplicantConf(w cloudconfig.WiFi) (string, error) {
	if w.SSID == "" || len(w.SSID) > 32 {
		return "", fmt.Errorf("network.wifi.ssid: an SSID is 1 to 32 bytes, got %d", len(w.SSID))
	}
	var b strings.Builder
	b.WriteString("# Written by the ballast init from network.wifi at every boot.\n")
	b.WriteString("ctrl_interface=DIR=/run/wpa_supplicant GROUP=root\n")
	b.WriteString("update_config=0\n")
	if w.Country != "" {
		// wpa_supplicant passes it to cfg80211 (NL80211_CMD_REQ_SET_REG):
		// the channels and powers the country allows.
		if len(w.Country) != 2 || strings.ToUpper(w.Country) != w.Country || strings.ContainsAny(w.Country, "\n\r \t") {
			return "", fmt.Errorf("network.wifi.country: %q is not an ISO 3166 country code", w.Country)
		}
		fmt.Fprintf(&b, "country=%s\n", w.Country)
	}
	b.WriteString("\nnetwork={\n")
	fmt.Fprintf(&b, "\tssid=%s\n", hex.EncodeToString([]byte(w.SSID)))
	// Hidden networks answer only probes that name them.
	b.WriteString("\tscan_ssid=1\n")
	if w.PSK == "" {
		b.WriteString("\tkey_mgmt=NONE\n")
	} else {
		pmk, err := PMK(w.PSK, w.SSID)
		if err != nil {
			return "", err
		}
		b.WriteString("\tkey_mgmt=WPA-PSK\n")
		fmt.Fprintf(&b, "\tpsk=%s\n", hex.EncodeToString(pmk))
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// ChooseWiFiLink picks the wireless link: the one named want, else the
// first wireless link by name. ok is false when there is none (yet).
func ChooseWiFiLink(want string, links []Link) (Link, bool) {
	for _, l := range links {
		if want != "" && l.Name == want || want == "" && l.Wireless {
			return l, true
		}
	}
	return Link{}, false
}

// wifiInterfaceName is the interface network.wifi names; "" for any.
func wifiInterfaceName(cfg *cloudconfig.Network) string {
	if cfg == nil || cfg.WiFi == nil {
		return ""
	}
	return cfg.WiFi.Interface
}

// isWiFiEntry reports whether ic describes the Wi-Fi interface named in
// network.wifi.interface, which may appear after the plan is made.
func isWiFiEntry(cfg *cloudconfig.Network, ic cloudconfig.Interface) bool {
	return cfg != nil && cfg.WiFi != nil && ic.Name != "" && ic.Name == cfg.WiFi.Interface
}

// supplicant finds wpa_supplicant under the root; the path returned is the
// one to run (root-relative when Root is "/").
func (s *State) supplicant() (string, error) {
	for _, b := range supplicantBinaries {
		if st, err := os.Stat(filepath.Join(s.opts.Root, b)); err == nil && !st.IsDir() {
			return "/" + b, nil
		}
	}
	return "", ErrNoSupplicant
}

// runWiFi waits for the wireless interface, starts wpa_supplicant on it,
// waits for association, then configures the interface as planned. ready
// gets a value once the interface is addressed (static) or leased (DHCP).
func (s *State) runWiFi(ctx context.Context, cfg *cloudconfig.Network, conf string, ready chan<- struct{}) {
	w := cfg.WiFi
	log := s.log.With("ssid", w.SSID)
	var link Link
	for waited := time.Duration(0); ; waited += wifiPoll {
		links, err := s.listLinks()
		if err == nil {
			var ok bool
			if link, ok = ChooseWiFiLink(w.Interface, links); ok {
				break
			}
		}
		if waited == 10*time.Second {
			log.Warn("wifi: still waiting for a wireless interface", "interface", w.Interface)
		}
		if !sleepCtx(ctx, wifiPoll) {
			return
		}
	}
	log = log.With("iface", link.Name)
	p, err := planWiFi(cfg, link)
	if err == nil {
		err = writeAtomic(filepath.Join(s.opts.Root, SupplicantConfPath(link.Name)), []byte(conf), 0o600)
	}
	if err != nil {
		s.setWiFiErr(err)
		log.Error("wifi", "err", err)
		return
	}
	if err := s.startSupplicant(link.Name, conf); err != nil {
		s.setWiFiErr(err)
		log.Error("wifi", "err", err)
		return
	}
	log.Info("wifi: wpa_supplicant started; waiting for association")
	s.setWiFiErr(fmt.Errorf("%s: %w (wpa_supplicant is running: see /var/log/wpa_supplicant.log)", link.Name, ErrWiFiNotReady))
	// wpa_supplicant keeps the link dormant until the 4-way handshake is
	// done (RFC 2863 operstate): "up" means associated and keyed.
	oper := filepath.Join(s.opts.SysClassNet, link.Name, "operstate")
	for {
		b, _ := os.ReadFile(oper)
		if strings.TrimSpace(string(b)) == "up" {
			break
		}
		if !sleepCtx(ctx, wifiPoll) {
			return
		}
	}
	log.Info("wifi: associated")
	s.mu.Lock()
	s.plans = append(s.plans, p)
	s.mu.Unlock()
	if err := applyLink(p); err != nil {
		s.setWiFiErr(err)
		log.Error("wifi", "err", err)
		return
	}
	s.setWiFiErr(nil)
	if p.Method == MethodDHCP {
		s.runDHCP(ctx, p, ready)
		return
	}
	select {
	case ready <- struct{}{}:
	default:
	}
}

// wifiPoll is how often runWiFi looks for the interface and association.
const wifiPoll = 250 * time.Millisecond

// planWiFi is the Wi-Fi link's plan: its network.interfaces entry, else
// DHCP (unless network.dhcp is false).
func planWiFi(cfg *cloudconfig.Network, link Link) (Plan, error) {
	link.Wired = false
	sub := *cfg
	sub.Interfaces = nil
	for _, ic := range cfg.Interfaces {
		if ic.Name == link.Name || ic.Name == "" && ic.MAC != "" && strings.EqualFold(normalMAC(ic.MAC), link.MAC) {
			sub.Interfaces = append(sub.Interfaces, ic)
		}
	}
	sub.WiFi = nil
	plans, err := PlanLinks(&sub, []Link{link})
	if len(sub.Interfaces) == 0 {
		m := MethodDHCP
		if cfg.DHCP != nil && !*cfg.DHCP {
			m = MethodNone
		}
		plans = []Plan{{Name: link.Name, MAC: link.MAC, Method: m}}
	}
	if len(plans) != 1 {
		return Plan{}, fmt.Errorf("network.wifi: no plan for %s: %w", link.Name, err)
	}
	p := plans[0]
	p.WiFi = true
	return p, err
}

func (s *State) startSupplicant(iface, conf string) error {
	if s.opts.StartService == nil {
		return fmt.Errorf("network.wifi: no service supervisor to run wpa_supplicant")
	}
	bin, err := s.supplicant()
	if err != nil {
		return fmt.Errorf("network.wifi: %w", err)
	}
	argv := []string{bin, "-i", iface, "-c", "/" + SupplicantConfPath(iface), "-D", "nl80211"}
	if err := s.opts.StartService("wpa_supplicant", argv); err != nil {
		return fmt.Errorf("network.wifi: starting wpa_supplicant: %w", err)
	}
	return nil
}

func (s *State) setWiFiErr(err error) {
	s.mu.Lock()
	s.wifiErr = err
	s.mu.Unlock()
}

// WiFiError is why Wi-Fi is not configured yet; nil once it is, or when
// the config has none.
func (s *State) WiFiError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wifiErr
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
