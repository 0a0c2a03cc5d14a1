package qemutest

import "testing"

// ImageARM64Env names the arm64-efi raw image under test (default
// out/ballast-arm64-efi.img, from `ballast build --board arm64-efi`).
const ImageARM64Env = "BALLAST_TEST_IMAGE_ARM64"

// TestE2EARM64UEFI boots the arm64-efi image in qemu-system-aarch64's virt
// machine with AAVMF through the same scenario as the x86_64 raw disk: two
// boots, cloud-config, SSH, the data partition grown, a clean poweroff.
func TestE2EARM64UEFI(t *testing.T) {
	useCores(t, prioShort, 1)
	testRawDiskImage(t, ARM64, UEFI, testImage(t, ImageARM64Env, "ballast-arm64-efi.img"))
}
