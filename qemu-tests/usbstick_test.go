package qemutest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// cidataStick writes a USB stick image at p: a whole-disk FAT volume
// labelled CIDATA with user-data doc (what cloud-localds makes).
func cidataStick(t *testing.T, p, doc string) {
	t.Helper()
	const size = 64 << 20
	os.Remove(p)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	b, err := file.OpenFromPath(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fs, err := fat32.Create(b, size, 0, 512, "CIDATA", false)
	if err != nil {
		t.Fatal(err)
	}
	w, err := fs.OpenFile("/user-data", os.O_CREATE|os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(doc)); err != nil {
		t.Fatal(err)
	}
	w.Close()
}

// TestE2EUSBStick: a NoCloud stick at the first boot configures the node;
// at a later reboot, a stranger's CIDATA stick and a stick holding another
// ballast image (its own BALLAST_A, named sda: before the node's vda) take
// nothing: the root stays on the node's disk (ballast.disk=<GUID>) and the
// config is the first boot's (ballast.nocloud=first-boot), with the boot
// partition's user-data read from the node's own disk.
func TestE2EUSBStick(t *testing.T) {
	useCores(t, prioShort, 1)
	img := testImage(t, ImageRawEnv, "ballast-x86_64.img")
	other := testImage(t, ImageRuntimeEnv, "ballast-runtime-e2e-x86_64.img")
	dir := t.TempDir()
	cidata, stick := filepath.Join(dir, "cidata.img"), filepath.Join(dir, "stick.img")
	cidataStick(t, cidata, "#cloud-config\nhostname: usb-first\nballast:\n  runtime: none\n  agent: {privileged: true}\n")
	if err := os.WriteFile(stick, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startMachine(t, Options{Disk: img, ExtraArgs: []string{
		"-device", "qemu-xhci,id=xhci",
		// The other ballast image first: sda, ahead of the node's vda.
		"-drive", "file=" + stick + ",format=raw,if=none,id=stick,snapshot=on",
		"-device", "usb-storage,bus=xhci.0,drive=stick",
		"-drive", "file=" + cidata + ",format=raw,if=none,id=cidata,snapshot=on",
		"-device", "usb-storage,bus=xhci.0,drive=cidata",
	}})
	st := waitReady(t, m)
	if st.Hostname != "usb-first" {
		t.Fatalf("first boot: hostname %q, want the CIDATA stick's usb-first (sources %+v)", st.Hostname, st.Config.Sources)
	}

	// The stranger's sticks.
	cidataStick(t, cidata, "#cloud-config\nhostname: stranger\nssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr6c2RlxsTb6mDEmOIGKkSA0dKDtj3Ua8OvZMOrpGCN stranger\"]\nballast:\n  runtime: none\n  agent: {privileged: true}\n")
	if out, err := exec.Command("cp", "--sparse=always", other, stick).CombinedOutput(); err != nil {
		t.Fatalf("copying %s: %v: %s", other, err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := m.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	st = waitReady(t, m)
	if st.Hostname != "usb-first" {
		t.Errorf("after the stranger's stick: hostname %q, want usb-first", st.Hostname)
	}
	for _, d := range st.Disks {
		if strings.HasPrefix(d.Source, "/dev/sd") {
			t.Errorf("%s is mounted from the stick (%s)", d.Target, d.Source)
		}
	}
	if keys := nodeExec(t, m, "sh", "-c", "cat /root/.ssh/authorized_keys 2>/dev/null; true"); strings.Contains(keys, "stranger") {
		t.Error("the stranger's SSH key was installed")
	}
	if _, err := m.WaitConsole(ctx, regexp.MustCompile(`CIDATA volume /dev/sd[a-z]+ not read`)); err != nil {
		t.Errorf("the console does not say the stick was left unread: %v", err)
	}
	if _, err := m.WaitConsole(ctx, regexp.MustCompile(`found root device=/dev/vda2`)); err != nil {
		t.Errorf("the root is not the node's own disk: %v", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
