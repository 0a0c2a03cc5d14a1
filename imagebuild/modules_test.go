package imagebuild

import (
	"testing"

	"github.com/ballast-os/ballast/boards"
)

func TestModuleFilterKeepsUnderExcluded(t *testing.T) {
	f := moduleFilter{
		excludes: []string{"drivers/net/wireless", "net/mac80211", "sound"},
		keeps:    []string{"drivers/net/wireless/virtual", "net/mac80211"},
	}
	cases := map[string]bool{
		"drivers/net/wireless":                                false, // above a keep
		"drivers/net":                                         false,
		"drivers/net/wireless/virtual":                        false,
		"drivers/net/wireless/virtual/mac80211_hwsim.ko.xz":   false,
		"drivers/net/wireless/ath":                            true,
		"drivers/net/wireless/ath/ath9k/ath9k.ko.xz":          true,
		"drivers/net/wireless/virtualx/y.ko":                  true, // a sibling, not the kept dir
		"net/mac80211/mac80211.ko.xz":                         false,
		"sound/core/snd.ko.xz":                                true,
		"fs/ext4/ext4.ko.xz":                                  false,
		"drivers/net/wireless/broadcom/brcm80211/brcmfmac.ko": true,
	}
	for rel, want := range cases {
		if got := f.excluded(rel); got != want {
			t.Errorf("excluded(%q) = %v, want %v", rel, got, want)
		}
	}
}

func TestModuleFilterKeyUnchangedWithoutKeeps(t *testing.T) {
	plain := moduleFilter{excludes: []string{"sound", "drivers/gpu"}}
	if plain.key() != "sound\ndrivers/gpu" {
		t.Errorf("key without keeps = %q: the depmod cache of earlier builds would be lost", plain.key())
	}
	kept := moduleFilter{excludes: plain.excludes, keeps: []string{"sound/core"}}
	if kept.key() == plain.key() {
		t.Error("keeping modules does not change the cache key")
	}
}

// runtimeModulePaths are where Debian's 6.12 kernels (amd64 and arm64)
// keep the modules the runtime loads, under kernel/.
var runtimeModulePaths = map[string]string{
	"overlay": "fs/overlayfs", "br_netfilter": "net/bridge", "bridge": "net/bridge",
	"veth": "drivers/net", "vxlan": "drivers/net/vxlan", "udp_tunnel": "net/ipv4",
	"nf_reject_ipv4": "net/ipv4/netfilter", "ip_tables": "net/ipv4/netfilter",
	"iptable_nat": "net/ipv4/netfilter", "iptable_filter": "net/ipv4/netfilter", "ipt_REJECT": "net/ipv4/netfilter",
	"ip6_tables": "net/ipv6/netfilter", "ip6table_nat": "net/ipv6/netfilter", "ip6table_filter": "net/ipv6/netfilter",
	"ip_set": "net/netfilter/ipset", "ip_set_hash_ip": "net/netfilter/ipset", "ip_set_hash_net": "net/netfilter/ipset",
	"sch_tbf": "net/sched", "ifb": "drivers/net", "fuse": "fs/fuse",
}

// Every board keeps the runtime's modules in its system image (the build
// checks the real tree too; this catches a module_excludes edit early).
func TestBoardsKeepRuntimeModules(t *testing.T) {
	for _, name := range boards.Names() {
		b, err := boards.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		f := moduleFilter{excludes: b.ModuleExcludes}
		for _, m := range RuntimeModules {
			dir, ok := runtimeModulePaths[m]
			if !ok {
				dir = "net/netfilter" // nf_*, nft_*, xt_*
			}
			if p := dir + "/" + m + ".ko.xz"; f.excluded(p) {
				t.Errorf("board %s: module_excludes drop %s (kernel/%s), which the runtime loads", name, m, p)
			}
		}
	}
}
