package containertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"
)

// Cluster is a private Docker network and the node containers on it.
type Cluster struct {
	Image   string // image ID
	Runtime string // the OCI runtime nodes run with ("": the daemon's default)
	Network string
	prefix  string
	bridge  string // the network's bridge device on the host
	nodes   []*Node
	// Logf receives progress lines (t.Logf).
	Logf func(format string, args ...any)
	// RunArgs are more `docker run` arguments for every node started
	// from now on (a file bound in: "-v", "/host/f:/etc/f:ro").
	RunArgs []string
}

// HostIP is this machine's address on the cluster's network: a service
// the test runs on the host (a registry) is reached there by the nodes,
// and nothing beyond the network is.
func (c *Cluster) HostIP() (string, error) {
	ifc, err := net.InterfaceByName(c.bridge)
	if err != nil {
		return "", fmt.Errorf("the network's bridge %s: %w", c.bridge, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "", fmt.Errorf("the network's bridge %s has no IPv4 address", c.bridge)
}

// NewCluster creates an --internal network: the nodes reach each other
// and the host, and nothing beyond, as an air-gapped site.
//
// The network is one L2 segment, as flannel's host-gw backend needs: a
// node routes another node's pod subnet via that node's address. Docker
// isolates an internal network with host FORWARD rules that drop any
// packet on its bridge whose address is outside the network's subnet,
// and with br_netfilter loaded (bridge-nf-call-iptables=1) frames bridged
// between two containers pass those rules too, so pod addresses would be
// dropped on the wire. A DOCKER-USER rule (evaluated first) accepts what
// stays on this bridge; traffic leaving it is still dropped.
func NewCluster(ctx context.Context, image, runtime string, logf func(string, ...any)) (*Cluster, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	prefix := "ballast-" + id
	c := &Cluster{Image: image, Runtime: runtime, Network: prefix, prefix: prefix, bridge: "bl" + id, Logf: logf}
	// A subnet of its own (a random 10.199.x.0/24, another one when it is
	// taken), so that a node may be run again at its address (RunOnce).
	var err error
	for try := 0; try < 8; try++ {
		sub := make([]byte, 1)
		_, _ = rand.Read(sub)
		_, err = docker(ctx, "network", "create", "--internal", "--label", "ballast-test=1",
			"--subnet", fmt.Sprintf("10.199.%d.0/24", sub[0]),
			"-o", "com.docker.network.bridge.name="+c.bridge, prefix)
		if err == nil || !strings.Contains(err.Error(), "overlap") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if err := c.bridgeRule(ctx, "-I"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// bridgeRule inserts (-I) or deletes (-D) the DOCKER-USER rule that lets
// traffic between this network's nodes through whatever its addresses.
// A daemon without the chain (--iptables=false) filters nothing.
func (c *Cluster) bridgeRule(ctx context.Context, op string) error {
	if exec.CommandContext(ctx, "iptables", "-w", "-n", "-L", "DOCKER-USER").Run() != nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, "iptables", "-w", op, "DOCKER-USER", "-i", c.bridge, "-o", c.bridge, "-j", "ACCEPT").CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s DOCKER-USER for %s: %v: %s", op, c.bridge, err, out)
	}
	return nil
}

// Close removes every node (with its volumes) and the network.
func (c *Cluster) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range c.nodes {
		_, _ = docker(ctx, "rm", "-f", "-v", n.Container)
	}
	_ = c.bridgeRule(ctx, "-D")
	_, _ = docker(ctx, "network", "rm", c.Network)
}

// Node is one node container.
type Node struct {
	Name      string // the hostname, hence the Kubernetes node name
	Container string
	IP        string
	c         *Cluster
}

// Start runs a node: `docker run --privileged --tmpfs /run --tmpfs
// /var/run IMAGE args...` as the k3s documentation shows, with the given
// environment (K3S_URL, K3S_TOKEN...). Each node gets its own cgroup
// namespace, so that on a cgroup v1 host the kubelets of several nodes do
// not share the host's /kubepods.
func (c *Cluster) Start(ctx context.Context, name string, env map[string]string, args ...string) (*Node, error) {
	return c.StartHost(ctx, name, name, env, args...)
}

// StartHost is Start with a hostname (the node name) other than the
// container's name: two machines that claim one node name.
func (c *Cluster) StartHost(ctx context.Context, container, name string, env map[string]string, args ...string) (*Node, error) {
	return c.start(ctx, container, name, nil, env, args...)
}

// StartFrom replaces the stopped node old with a new container of the
// same machine (its disks, address and hostname) run with other
// arguments: the machine's k3s restarted with a changed config.
func (c *Cluster) StartFrom(ctx context.Context, old *Node, container string, env map[string]string, args ...string) (*Node, error) {
	return c.start(ctx, container, old.Name, []string{"--volumes-from", old.Container, "--ip", old.IP}, env, args...)
}

func (c *Cluster) start(ctx context.Context, container, name string, opts []string, env map[string]string, args ...string) (*Node, error) {
	n := &Node{Name: name, Container: c.prefix + "-" + container, c: c}
	run := append([]string{"run", "-d", "--privileged", "--cgroupns=private", "--name", n.Container, "--hostname", name,
		"--network", c.Network, "--tmpfs", "/run", "--tmpfs", "/var/run", "--label", "ballast-test=1"}, opts...)
	if c.Runtime != "" {
		run = append(run, "--runtime", c.Runtime)
	}
	run = append(run, c.RunArgs...)
	for k, v := range env {
		run = append(run, "-e", k+"="+v)
	}
	run = append(append(run, c.Image), args...)
	c.nodes = append(c.nodes, n)
	if _, err := docker(ctx, run...); err != nil {
		return nil, err
	}
	ip, err := docker(ctx, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", n.Container)
	if err != nil {
		return nil, err
	}
	n.IP = ip
	c.logf("started %s (%s) at %s: %s", name, n.Container, ip, strings.Join(args, " "))
	return n, nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// Exec runs a command in the node.
func (n *Node) Exec(ctx context.Context, args ...string) (string, error) {
	return docker(ctx, append([]string{"exec", n.Container}, args...)...)
}

// CopyIn copies the host's file or directory src into the node at dst
// (`docker cp`: a directory's contents with src ending in "/.").
func (n *Node) CopyIn(ctx context.Context, src, dst string) error {
	_, err := docker(ctx, "cp", src, n.Container+":"+dst)
	return err
}

// Kubectl runs `k3s kubectl` in the node (a server: k3s.yaml is there).
func (n *Node) Kubectl(ctx context.Context, args ...string) (string, error) {
	return n.Exec(ctx, append([]string{"k3s", "kubectl"}, args...)...)
}

// Logs is the container's output (k3s's own lines).
func (n *Node) Logs(ctx context.Context) string {
	out, err := docker(ctx, "logs", n.Container)
	if err != nil {
		return err.Error()
	}
	return out
}

// State is what a failed test needs to see of the cluster, asked of the
// first node whose API answers (a server): every node's conditions and
// taints, the pods that are not Running, the last events, and the disk the
// nodes share (a full host disk puts every kubelet under DiskPressure).
func (c *Cluster) State(ctx context.Context) string {
	const script = `k3s kubectl get nodes -o wide
k3s kubectl get nodes -o 'custom-columns=NODE:.metadata.name,TAINTS:.spec.taints[*].key,PRESSURE:.status.conditions[?(@.status=="True")].type'
k3s kubectl get pods -A -o wide --field-selector=status.phase!=Running
k3s kubectl get events -A --sort-by=.lastTimestamp | tail -n 40
df -h /var/lib/rancher /`
	for _, n := range c.nodes {
		if _, err := n.Kubectl(ctx, "version"); err != nil {
			continue
		}
		out, err := n.Exec(ctx, "sh", "-c", script)
		if err != nil {
			out += "\n" + err.Error()
		}
		return "(asked of " + n.Name + ")\n" + out
	}
	return "no node's API answered"
}

// ComponentLogs is the tail of every component log in the node.
func (n *Node) ComponentLogs(ctx context.Context, lines int) string {
	out, _ := n.Exec(ctx, "sh", "-c", fmt.Sprintf("for f in /var/lib/rancher/k3s/*/logs/*.log; do echo \"== $f\"; tail -n %d \"$f\"; done", lines))
	return out
}

// Stop stops the container (SIGTERM, then SIGKILL after 30 s); its
// volumes stay, as a powered-off machine keeps its disk.
func (n *Node) Stop(ctx context.Context) error {
	_, err := docker(ctx, "stop", "-t", "30", n.Container)
	return err
}

// Kill stops the container at once (SIGKILL to every process): the
// machine loses power.
func (n *Node) Kill(ctx context.Context) error {
	_, err := docker(ctx, "kill", n.Container)
	return err
}

// Remove deletes the container and its volumes: the machine is gone.
func (n *Node) Remove(ctx context.Context) error {
	_, err := docker(ctx, "rm", "-f", "-v", n.Container)
	return err
}

// Restart starts a stopped node again.
func (n *Node) Restart(ctx context.Context) error {
	_, err := docker(ctx, "start", n.Container)
	return err
}

// RunOnce runs the node's image once as the node itself while the node's
// container is stopped: its volumes (the data dir), address and hostname,
// with args; an entrypoint other than k3s when entrypoint is set. It is
// `systemctl stop k3s; k3s server --cluster-reset ...` on a machine.
func (n *Node) RunOnce(ctx context.Context, entrypoint string, args ...string) (string, error) {
	run := []string{"run", "--rm", "--privileged", "--cgroupns=private", "--volumes-from", n.Container,
		"--hostname", n.Name, "--network", n.c.Network, "--ip", n.IP, "--tmpfs", "/run", "--tmpfs", "/var/run", "--label", "ballast-test=1"}
	if n.c.Runtime != "" {
		run = append(run, "--runtime", n.c.Runtime)
	}
	if entrypoint != "" {
		run = append(run, "--entrypoint", entrypoint)
	}
	return docker(ctx, append(append(run, n.c.Image), args...)...)
}

// WaitFor polls f every interval until it returns nil or the deadline,
// and returns its last error.
func WaitFor(ctx context.Context, timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
