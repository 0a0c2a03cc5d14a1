// Package testbed brings up the ballast clusters the conformance suite
// runs against, with the suite's images preloaded (the nodes have no
// registry to pull from): a server and agents as containers on the
// container test bed (container-tests: the runtime image run under Docker
// on an internal network, at native speed), or one QEMU node booted from
// a raw image (the quick sample).
package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	containertest "github.com/ballast-os/ballast/container-tests"
)

// imagesDir is where k3s imports image archives from; the runtime's
// importer picks up files added while it runs.
const imagesDir = "/var/lib/rancher/k3s/agent/images/"

// Options of a container cluster.
type Options struct {
	// NodeImage is the runtime image as `ballast build --format oci`
	// writes it (make image-oci).
	NodeImage string
	// Images are OCI archives every node imports before the suite runs.
	Images []string
	// Refs are the references those archives carry: the bed is ready
	// when every node lists each of them.
	Refs   []string
	Agents int    // agents beside the server; 0 means 1
	Dir    string // where the kubeconfig is written
	Logf   func(format string, args ...any)
}

// Bed is a running cluster.
type Bed struct {
	Kubeconfig string // for the suite on this host: an address it reaches, not the node's 127.0.0.1
	close      func()
	diagnose   func(context.Context) string
}

// Close stops the cluster and removes what it made.
func (b *Bed) Close() { b.close() }

// Diagnose is each node's k3s output and component logs, for a failure.
func (b *Bed) Diagnose(ctx context.Context) string { return b.diagnose(ctx) }

// Containers starts a server and o.Agents agents joined with a token,
// copies o.Images into each and waits until every node is Ready and has
// imported every image.
func Containers(ctx context.Context, o Options) (_ *Bed, err error) {
	if o.Agents == 0 {
		o.Agents = 1
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	runtime, err := containertest.EnsureDaemon(ctx)
	if err != nil {
		return nil, err
	}
	id, err := containertest.LoadImage(ctx, o.NodeImage)
	if err != nil {
		return nil, err
	}
	c, err := containertest.NewCluster(ctx, id, runtime, logf)
	if err != nil {
		return nil, err
	}
	// The images are also served by a registry on this machine, the
	// nodes' mirror for the registries they name (a few tests pull with
	// imagePullPolicy Always); the nodes reach nothing else.
	hostIP, err := c.HostIP()
	if err != nil {
		c.Close()
		return nil, err
	}
	reg, err := StartRegistry(ctx, hostIP+":0", o.Images)
	if err != nil {
		c.Close()
		return nil, err
	}
	var nodes []*containertest.Node
	b := &Bed{close: func() { c.Close(); reg.Close() }, diagnose: func(ctx context.Context) string {
		var s strings.Builder
		for _, n := range nodes {
			fmt.Fprintf(&s, "=== %s: k3s output (last 40 lines)\n%s\n=== %s: component logs\n%s\n",
				n.Name, tail(n.Logs(ctx), 40), n.Name, n.ComponentLogs(ctx, 15))
		}
		return s.String()
	}}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	regFile := filepath.Join(o.Dir, "registries.yaml")
	if err := os.WriteFile(regFile, []byte(RegistriesYAML("http://"+reg.Addr, RegistriesOf(o.Refs))), 0o644); err != nil {
		return nil, err
	}
	c.RunArgs = append(c.RunArgs, "-v", regFile+":/etc/rancher/k3s/registries.yaml:ro")
	logf("registry for the nodes at http://%s (mirror of %s)", reg.Addr, strings.Join(RegistriesOf(o.Refs), ", "))
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	secret := hex.EncodeToString(token)
	server, err := c.Start(ctx, "server", map[string]string{"K3S_TOKEN": secret}, "server")
	if err != nil {
		return nil, err
	}
	nodes = append(nodes, server)
	url := "https://" + server.IP + ":6443"
	for i := 1; i <= o.Agents; i++ {
		a, err := c.Start(ctx, fmt.Sprintf("agent%d", i), map[string]string{"K3S_URL": url, "K3S_TOKEN": secret}, "agent")
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, a)
	}
	// The importer scans agent/images as it runs: copied now, the images
	// are imported while the nodes come up.
	for _, n := range nodes {
		if err := containertest.WaitFor(ctx, 2*time.Minute, time.Second, func() error {
			_, err := n.Exec(ctx, "mkdir", "-p", imagesDir)
			return err
		}); err != nil {
			return nil, err
		}
		for _, img := range o.Images {
			if err := n.CopyIn(ctx, img, imagesDir+filepath.Base(img)); err != nil {
				return nil, err
			}
		}
		logf("copied %d image archives into %s", len(o.Images), n.Name)
	}

	var kubeconfig string
	if err := containertest.WaitFor(ctx, 5*time.Minute, 2*time.Second, func() error {
		kubeconfig, err = server.Exec(ctx, "cat", "/etc/rancher/k3s/k3s.yaml")
		return err
	}); err != nil {
		return nil, fmt.Errorf("the server wrote no k3s.yaml: %w", err)
	}
	if !strings.Contains(kubeconfig, "https://127.0.0.1:6443") {
		return nil, fmt.Errorf("k3s.yaml: no server https://127.0.0.1:6443 to point at %s", server.IP)
	}
	b.Kubeconfig = filepath.Join(o.Dir, "kubeconfig")
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(b.Kubeconfig, []byte(strings.ReplaceAll(kubeconfig, "https://127.0.0.1:6443", url)), 0o600); err != nil {
		return nil, err
	}

	if err := containertest.WaitFor(ctx, 10*time.Minute, 5*time.Second, func() error {
		out, err := server.Kubectl(ctx, "get", "nodes", "--no-headers")
		if err != nil {
			return err
		}
		if n := strings.Count(out, " Ready "); n != len(nodes) {
			return fmt.Errorf("%d of %d nodes Ready:\n%s", n, len(nodes), out)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if err := waitImages(ctx, n.Name, o.Refs, func(ctx context.Context) (string, error) {
			return n.Exec(ctx, "k3s", "ctr", "-n", "k8s.io", "images", "ls", "-q")
		}); err != nil {
			return nil, err
		}
		logf("%s: Ready, %d images imported", n.Name, len(o.Refs))
	}
	return b, nil
}

// waitImages waits until list (`ctr images ls -q` on the node) shows
// every ref.
func waitImages(ctx context.Context, node string, refs []string, list func(context.Context) (string, error)) error {
	return containertest.WaitFor(ctx, 10*time.Minute, 5*time.Second, func() error {
		out, err := list(ctx)
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, l := range strings.Fields(out) {
			have[l] = true
		}
		var missing []string
		for _, r := range refs {
			if !have[r] {
				missing = append(missing, r)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s has not imported %s", node, strings.Join(missing, ", "))
		}
		return nil
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
