package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ballast-os/ballast/cloud-config"
	"github.com/ballast-os/ballast/init/agent"
	"github.com/ballast-os/ballast/init/datapart"
	"github.com/ballast-os/ballast/init/kubenode"
)

// imagesDir holds the container images the build put in the system image
// (OCI archives); k3sImagesDir is where k3s imports archives from. The
// latter lives on the data partition, so the init links each shipped
// archive into it at every boot (and drops links to archives an update
// removed).
const (
	imagesDir    = "/usr/lib/ballast/images"
	k3sImagesDir = "/var/lib/rancher/k3s/agent/images"
	k3sAdminKC   = "/etc/rancher/k3s/k3s.yaml"
	// k3sAgentKC is an agent's kubelet identity, which may read its own
	// Node (an agent has no k3s.yaml); it points at the agent's load balancer.
	k3sAgentKC = "/var/lib/rancher/k3s/agent/kubelet.kubeconfig"
)

// The data partition's room for k3s, checked before it starts.
const (
	// k3sImagesSize is what importing the packaged images takes on the
	// data partition: their zstd layers copied into containerd's content
	// store and unpacked into its snapshotter, with the file system's
	// rounding. Measured 2026-12-07 on the default image: 44 MB of layers
	// and 175 MB unpacked for pause, CoreDNS, local-path-provisioner,
	// busybox, metrics-server and svclb (TestE2ERuntime found 227 MiB used
	// once they were imported); the Helm controller's job image adds 15
	// and 61 MB (helm), Traefik 43 and 178 MB.
	k3sImagesSize = 544 << 20
	// k3sDataMin is the smallest data file system (statfs's size) k3s is
	// started on: the images, the datastore and the components' first
	// logs, under the 85% use at which the kubelet starts collecting
	// images. Smaller, the import fills it: the kubelet reports
	// DiskPressure, the images are only partly there, and the packaged
	// pods stay ContainerCreating, pulling from the internet.
	k3sDataMin = 672 << 20
	// k3sFreeMin is the free space under which the boot warns: the
	// kubelet evicts pods under 5% free (componentargs' evictionHard).
	k3sFreeMin = 128 << 20
)

// dataSpace decides whether k3s starts on a data file system of size
// bytes with free bytes available; imported tells whether containerd
// already holds the images (a later boot). An error refuses k3s and says
// what is needed; a warning starts it anyway, since a node that fills its
// disk must come back once the space is freed.
func dataSpace(size, free uint64, imported bool) (warning string, err error) {
	mib := func(n uint64) uint64 { return n >> 20 }
	switch {
	case size < k3sDataMin:
		return "", fmt.Errorf("the data partition is %d MiB; k3s needs at least %d MiB (its images alone take %d MiB): give the VM a larger disk or flash a larger card (the partition grows to fill the disk at the next boot)",
			mib(size), mib(k3sDataMin), mib(k3sImagesSize))
	case !imported && free < k3sImagesSize:
		return "", fmt.Errorf("the data partition has %d MiB free of %d MiB; importing k3s's images needs %d MiB free: free some space (/var/lib/rancher, /var/log, /home) or grow the disk",
			mib(free), mib(size), mib(k3sImagesSize))
	case free < k3sFreeMin || free < size/10:
		return fmt.Sprintf("the data partition has %d MiB free of %d MiB: the kubelet reports DiskPressure and evicts pods under 5%% free; free some space (pods' hostPath volumes, /var/log) or grow the disk",
			mib(free), mib(size)), nil
	}
	return "", nil
}

// containerdRoot is where k3s's containerd keeps images and snapshots.
const containerdRoot = "/var/lib/rancher/k3s/agent/containerd"

// checkDataSpace applies dataSpace to the mounted data partition; a live
// boot on tmpfs is not checked.
func (s *system) checkDataSpace() (string, error) {
	s.mu.Lock()
	tmpfs := s.data.TmpFS
	s.mu.Unlock()
	if tmpfs {
		return "", nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.path(datapart.MountPoint), &st); err != nil {
		return "", fmt.Errorf("the data partition's free space: %w", err)
	}
	_, err := os.Stat(s.path(containerdRoot))
	return dataSpace(st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize), err == nil)
}

// linkImages symlinks every archive in src into dst, and removes links in
// dst that point into src at files no longer there.
func linkImages(src, dst string) error {
	entries, err := os.ReadDir(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		// The link's target is the path inside the running system.
		target := filepath.Join(imagesDir, e.Name())
		link := filepath.Join(dst, e.Name())
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			errs = append(errs, err)
		}
	}
	old, _ := os.ReadDir(dst)
	for _, e := range old {
		link := filepath.Join(dst, e.Name())
		if cur, err := os.Readlink(link); err == nil && strings.HasPrefix(cur, imagesDir+"/") {
			if _, err := os.Stat(filepath.Join(src, filepath.Base(cur))); errors.Is(err, os.ErrNotExist) {
				os.Remove(link)
			}
		}
	}
	return errors.Join(errs...)
}

// nodeIDFile is where k3s keeps the id that with-node-id appends.
const nodeIDFile = "/etc/rancher/node/id"

// nodeName is the node name k3s registers: the k3s config's node-name,
// else the hostname in lower case; with with-node-id, "-<id>" from
// /etc/rancher/node/id after it, which k3s writes at its first start: ""
// until then.
func nodeName(cfg *cloudconfig.Config, hostname string, readFile func(string) ([]byte, error)) string {
	name := ""
	if v, ok := cfg.K3s["node-name"].(string); ok && v != "" {
		name = v
	} else {
		if hostname == "" {
			hostname, _ = os.Hostname()
		}
		name = strings.ToLower(hostname)
	}
	if on, _ := cfg.K3s["with-node-id"].(bool); on {
		id, err := readFile(nodeIDFile)
		if err != nil || strings.TrimSpace(string(id)) == "" {
			return ""
		}
		name += "-" + strings.TrimSpace(string(id))
	}
	return name
}

// watchNode records the runtime's milestones for the agent's status (the
// API answering, the node registered, the node Ready) and whether the
// node is Ready now: every 2 s until Ready, then every 10 s. It closes
// ready when the node is first Ready.
func (s *system) watchNode(ctx context.Context, ready chan<- struct{}, nodeName func() string, kubeconfig string) {
	start := time.Now()
	name := nodeName()
	s.mu.Lock()
	ks := s.boot.KernelStart
	s.node = &agent.Node{Name: name}
	s.mu.Unlock()
	last := start
	mark := func(stage string, at time.Time) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, st := range s.node.Stages {
			if st.Name == stage {
				return
			}
		}
		s.node.Stages = append(s.node.Stages, agent.Stage{Name: stage, Phase: "runtime", StartMS: at.Sub(ks).Milliseconds(), DurationMS: at.Sub(last).Milliseconds()})
		last = at
		s.log.Info("runtime: "+stage, "node", name, "after_kernel_start", at.Sub(ks).Round(time.Millisecond))
	}
	mark("runtime-start", start)
	var c *kubenode.Client
	var certsChecked, warned time.Time
	for {
		// Until the node is Ready the runtime may still be issuing its
		// certificates (the CAs come first): look at every poll; then
		// hourly.
		if time.Since(certsChecked) >= time.Hour || !s.nodeIsReady() {
			certsChecked = time.Now()
			e := kubenode.EarliestExpiry(s.path(k3sDataDir))
			s.mu.Lock()
			s.node.CertExpires, s.node.CertFile = e.NotAfter, e.File
			s.mu.Unlock()
			if msg := certWarning(e, time.Now()); msg != "" && time.Since(warned) >= 24*time.Hour {
				warned = time.Now()
				s.log.Warn(msg)
			}
		}
		if name == "" {
			// with-node-id: the name is known once k3s wrote the id.
			if name = nodeName(); name != "" {
				s.mu.Lock()
				s.node.Name = name
				s.mu.Unlock()
			}
		}
		isReady, err := s.pollNode(ctx, &c, kubeconfig, name, start, mark)
		if isReady && ready != nil {
			close(ready)
			ready = nil
		}
		s.mu.Lock()
		s.node.Ready = isReady
		s.node.Error = ""
		if err != nil {
			s.node.Error = err.Error()
		}
		s.mu.Unlock()
		wait := 2 * time.Second
		if isReady {
			wait = 10 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (s *system) nodeIsReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.Ready
}

// k3sDataDir is the runtime's data dir, whose certificates the status
// reports.
const k3sDataDir = "/var/lib/rancher/k3s"

// certWarning is the console's line when a certificate of the runtime
// expires within 30 days ("" otherwise).
func certWarning(e kubenode.Expiry, now time.Time) string {
	if e.File == "" {
		return ""
	}
	left := e.NotAfter.Sub(now)
	switch {
	case left <= 0:
		return fmt.Sprintf("certificate %s EXPIRED on %s: the node cannot reach its cluster; run k3s certificate check, and rotate the CA (k3s certificate rotate-ca) if it is the CA", e.File, e.NotAfter.UTC().Format(time.DateOnly))
	case left < 30*24*time.Hour:
		return fmt.Sprintf("certificate %s expires in %d days (%s); the runtime renews leaf certificates by itself, so this is a CA or a failed renewal: run k3s certificate check", e.File, int(left.Hours()/24), e.NotAfter.UTC().Format(time.DateOnly))
	}
	return ""
}

func (s *system) pollNode(ctx context.Context, c **kubenode.Client, kubeconfig, name string, since time.Time, mark func(string, time.Time)) (bool, error) {
	if *c == nil {
		kc, err := kubenode.FromKubeconfig(s.path(kubeconfig))
		if err != nil {
			return false, err
		}
		*c = kc
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := (*c).APIReady(ctx); err != nil {
		return false, err
	}
	mark("api", time.Now())
	if name == "" {
		return false, errors.New("waiting for k3s to write " + nodeIDFile + " (with-node-id)")
	}
	ready, err := (*c).NodeReady(ctx, name, since)
	if err != nil {
		return false, err
	}
	mark("node-registered", time.Now())
	if ready {
		mark("node-ready", time.Now())
	}
	return ready, nil
}
