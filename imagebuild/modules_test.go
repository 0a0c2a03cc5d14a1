package imagebuild

import "testing"

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
