package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	containertest "github.com/ballast-os/ballast/container-tests"
	qemutest "github.com/ballast-os/ballast/qemu-tests"
)

// QEMUOptions of a one-node cluster in QEMU.
type QEMUOptions struct {
	// Disk is a raw image whose runtime carries the suite's images in
	// agent/images (QuickSpec builds one).
	Disk   string
	Images []string // the same images as archives, served by the node's registry mirror
	Refs   []string // the references those images carry
	Dir    string   // where the kubeconfig and the console log are written
	Memory int      // MiB; 0 means 6144
	// Grow is how much larger than the image the disk is (the data
	// partition grows into it); 0 means 8 GiB.
	Grow int64
	Logf func(format string, args ...any)
}

// suiteTCGThread is the node's TCG threading: multi-threaded unless
// $BALLAST_QEMU_TCG_THREAD says otherwise. The harness's single-threaded
// default makes the sample take hours (a test a few minutes, pods timing
// out); with a thread per vCPU it ran in 51 minutes on a 2-core machine.
func suiteTCGThread() string {
	if v := os.Getenv(qemutest.TCGThreadEnv); v != "" {
		return v
	}
	return "multi"
}

// registryGuest is where the node reaches the registry on this machine
// (a guestfwd in QEMU's otherwise closed user network).
const registryGuest = "10.0.2.100:5000"

// nodeConfig lets the harness read k3s.yaml through the control agent and
// makes the registry the node's mirror.
func nodeConfig(registriesYAML string) string {
	var s strings.Builder
	s.WriteString("#cloud-config\nhostname: conformance\nballast:\n  agent:\n    privileged: true\nwrite_files:\n  - path: /etc/rancher/k3s/registries.yaml\n    content: |\n")
	for _, l := range strings.Split(strings.TrimRight(registriesYAML, "\n"), "\n") {
		s.WriteString("      " + l + "\n")
	}
	return s.String()
}

// QEMU boots o.Disk in QEMU (its network closed: the node reaches nothing
// beyond this machine) and waits until the node is Ready and has
// imported every image.
func QEMU(ctx context.Context, o QEMUOptions) (_ *Bed, err error) {
	if o.Memory == 0 {
		o.Memory = 6144
	}
	if o.Grow == 0 {
		o.Grow = 8 << 30
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	fi, err := os.Stat(o.Disk)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	reg, err := StartRegistry(ctx, "127.0.0.1:0", o.Images)
	if err != nil {
		return nil, err
	}
	console := filepath.Join(o.Dir, "console.log")
	m, err := qemutest.Start(ctx, qemutest.Options{
		Disk: o.Disk, DiskSize: fi.Size() + o.Grow, Memory: o.Memory, CPUs: 2, TCGThread: suiteTCGThread(),
		UserData:      []byte(nodeConfig(RegistriesYAML("http://"+registryGuest, RegistriesOf(o.Refs)))),
		Forwards:      map[int]int{6443: 0},
		GuestForwards: map[string]string{registryGuest: reg.Addr},
		ConsoleLog:    console,
	})
	if err != nil {
		reg.Close()
		return nil, err
	}
	accel, why := m.Accel()
	logf("QEMU with %s (%s); console: %s", accel, why, console)
	b := &Bed{close: func() { m.Close(); reg.Close() }, diagnose: func(ctx context.Context) string {
		out, err := m.Exec(ctx, "sh", "-c", "tail -n 40 /var/log/k3s.log; for f in /var/lib/rancher/k3s/*/logs/*.log; do echo \"== $f\"; tail -n 15 \"$f\"; done")
		if err != nil {
			return err.Error() + "\n" + strings.Join(m.Console(40), "\n")
		}
		return out.Stdout + out.Stderr
	}}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	if _, err := m.WaitReady(ctx); err != nil {
		return nil, err
	}
	exec := func(ctx context.Context, argv ...string) (string, error) {
		res, err := m.Exec(ctx, argv...)
		if err != nil {
			return "", err
		}
		if res.ExitCode != 0 {
			return "", fmt.Errorf("%s: exit %d: %s", strings.Join(argv, " "), res.ExitCode, res.Stderr)
		}
		return res.Stdout, nil
	}
	var kubeconfig string
	if err := containertest.WaitFor(ctx, 20*time.Minute, 5*time.Second, func() error {
		kubeconfig, err = exec(ctx, "cat", "/etc/rancher/k3s/k3s.yaml")
		return err
	}); err != nil {
		return nil, fmt.Errorf("the node wrote no k3s.yaml: %w", err)
	}
	url := fmt.Sprintf("https://127.0.0.1:%d", m.HostPort(6443))
	b.Kubeconfig = filepath.Join(o.Dir, "kubeconfig")
	if err := os.WriteFile(b.Kubeconfig, []byte(strings.ReplaceAll(kubeconfig, "https://127.0.0.1:6443", url)), 0o600); err != nil {
		return nil, err
	}
	if err := containertest.WaitFor(ctx, 25*time.Minute, 10*time.Second, func() error {
		out, err := exec(ctx, "k3s", "kubectl", "get", "nodes", "--no-headers")
		if err != nil {
			return err
		}
		if !strings.Contains(out, " Ready ") {
			return fmt.Errorf("node not Ready: %s", out)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := waitImages(ctx, "conformance", o.Refs, func(ctx context.Context) (string, error) {
		return exec(ctx, "k3s", "ctr", "-n", "k8s.io", "images", "ls", "-q")
	}); err != nil {
		return nil, err
	}
	logf("conformance node Ready, %d images imported; API at %s", len(o.Refs), url)
	return b, nil
}

// QuickSpec is the build spec of the quick sample's image: the default
// x86_64 image, its runtime carrying archives in agent/images.
func QuickSpec(name, outDir string, archives []string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "# Written by the conformance driver: the default image plus the suite's images.\nboard: x86_64\nformats: [raw]\nname: %s\noutput: %s\nruntime:\n  kind: ballast\n  images:\n", name, outDir)
	for _, a := range archives {
		fmt.Fprintf(&s, "  - %s\n", a)
	}
	return s.String()
}
