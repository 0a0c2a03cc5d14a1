package k3s

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ballast-os/ballast/runtime/agent"
	"github.com/ballast-os/ballast/runtime/bootstrap"
	"github.com/ballast-os/ballast/runtime/certs"
	"github.com/ballast-os/ballast/runtime/cloudprovider"
	"github.com/ballast-os/ballast/runtime/cniconf"
	"github.com/ballast-os/ballast/runtime/componentargs"
	"github.com/ballast-os/ballast/runtime/config"
	"github.com/ballast-os/ballast/runtime/containerdcfg"
	"github.com/ballast-os/ballast/runtime/datadir"
	"github.com/ballast-os/ballast/runtime/etcdcluster"
	"github.com/ballast-os/ballast/runtime/helmcontroller"
	"github.com/ballast-os/ballast/runtime/kubeapi"
	"github.com/ballast-os/ballast/runtime/nodecontroller"
	"github.com/ballast-os/ballast/runtime/packaged"
	"github.com/ballast-os/ballast/runtime/processes"
	"github.com/ballast-os/ballast/runtime/secretsencrypt"
	"github.com/ballast-os/ballast/runtime/servicelb"
	"github.com/ballast-os/ballast/runtime/supervisor"
	"github.com/ballast-os/ballast/runtime/token"
	"k8s.io/client-go/rest"
)

// server prepares everything k3s server prepares before it starts the
// components (data dir, PKI, tokens, kubeconfigs, containerd and kubelet
// configs, the node's kernel settings), then supervises them.
func (a *app) server(ctx context.Context, args []string) error {
	l, err := config.Load(config.Options{Command: "server", Args: args, LookupEnv: a.lookupEnv})
	if err != nil {
		return err
	}
	a.warn(l)
	if err := l.Unsupported(); err != nil {
		return err
	}
	s, err := l.ServerConfig()
	if err != nil {
		return err
	}
	nodeName, nodeIPs, err := nodeIdentity(s.NodeName, s.NodeIPs, s.WithNodeID)
	if err != nil {
		return err
	}
	lay := datadir.Layout{Root: s.DataDir}
	if err := lay.Create(true, !s.DisableAgent); err != nil {
		return err
	}
	var joinAPI *agent.ServerClient
	if embeddedEtcd(s) {
		if err := checkEtcdFlags(s); err != nil {
			return err
		}
		if joinAPI, err = a.joinServer(ctx, s); err != nil {
			return err
		}
	}
	// CA files `k3s certificate rotate-ca` staged here take effect now
	// (the cluster's record has them too); Ensure then issues again what
	// the old CAs signed.
	if backup, applied, err := certs.ApplyStagedCA(s.DataDir, time.Now()); err != nil {
		return fmt.Errorf("rotate-ca: applying the staged CA files: %w", err)
	} else if len(applied) > 0 {
		fmt.Fprintf(a.stderr, "rotate-ca: new CA files in place (%s; the old ones are backed up in %s)\n", strings.Join(applied, ", "), backup)
	}
	if joinAPI == nil && embeddedEtcd(s) && etcdcluster.HasData(s.DataDir) && !s.ClusterReset {
		// A member restarting: what another server changed comes first.
		if err := a.reconcileBootstrap(ctx, s, lay, etcdOptions(s, nodeName, advertiseAddress(s, nodeIPs))); err != nil {
			return err
		}
	}
	if s.SecretsEncryption {
		// After the join: a server joining a cluster got the cluster's.
		p := filepath.Join(lay.Cred(), "encryption-config.json")
		wrote, err := secretsencrypt.Ensure(p, s.SecretsEncryptionProvider)
		if err != nil {
			return fmt.Errorf("secrets-encryption: %w", err)
		}
		if wrote {
			fmt.Fprintf(a.stderr, "secrets-encryption: wrote %s (%s): Secrets are stored encrypted from now on\n", p, s.SecretsEncryptionProvider)
		}
	}
	certOpts := certs.Options{
		DataDir: s.DataDir, NodeName: nodeName, NodeIPs: nodeIPs, SANs: s.TLSSANs,
		ServiceCIDR: s.ServiceCIDRs[0], ClusterDomain: s.ClusterDomain,
		APIServerPort: s.APIServerPortOrDefault(), Agent: !s.DisableAgent,
	}
	rep, err := certs.Ensure(certOpts)
	if err != nil {
		return err
	}
	for path, why := range rep.Issued {
		fmt.Fprintf(a.stderr, "issued %s (%s)\n", path, why)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	ca, err := os.ReadFile(filepath.Join(lay.TLS(), "server-ca.crt"))
	if err != nil {
		return err
	}
	tok, err := valueOrFile(s.Token, s.TokenFile, "token-file")
	if err != nil {
		return err
	}
	agentTok, err := valueOrFile(s.AgentToken, s.AgentTokenFile, "agent-token-file")
	if err != nil {
		return err
	}
	if _, err := token.EnsureServer(token.Files{
		Token: lay.TokenFile(), NodeToken: lay.NodeTokenFile(), AgentToken: lay.AgentTokenFile(),
		Passwd: filepath.Join(lay.Cred(), "passwd"),
	}, ca, tok, agentTok); err != nil {
		return err
	}
	if err := certs.WriteAdminKubeconfig(s.DataDir, s.WriteKubeconfig, s.HTTPSListenPort, s.WriteKubeconfigMode); err != nil {
		return err
	}
	resolv := ""
	if !s.DisableAgent {
		if resolv, err = a.nodeResolvConf(s.ResolvConf, lay); err != nil {
			return err
		}
	}
	if err := extendNoProxy(a.lookupEnv, osSetenv, a.stderr, append(slices.Clone(s.ClusterCIDRs), s.ServiceCIDRs...), s.ClusterDomain); err != nil {
		return err
	}
	n := &componentargs.Node{Server: s, NodeName: nodeName, NodeIPs: nodeIPs, ResolvConf: resolv, CgroupV1: cgroupV1(realHost{}), CloudController: !s.DisableCloudController}
	if !s.DisableAgent {
		if err := a.writeAgentConfigs(s, lay, n); err != nil {
			return err
		}
	}
	if err := writeEgressSelectorConfig(s, lay); err != nil {
		return err
	}
	staged, err := packaged.StageServer(s)
	if err != nil {
		return err
	}
	for _, p := range staged.Written {
		fmt.Fprintf(a.stderr, "staged %s\n", p)
	}
	for _, w := range staged.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	adv := advertiseAddress(s, nodeIPs)
	var member *etcdMember
	if embeddedEtcd(s) {
		sqlite := sqliteToMigrate(s)
		if member, err = a.prepareEtcd(ctx, s, joinAPI, nodeName, adv); err != nil {
			return err
		}
		if sqlite != "" {
			if err := a.migrateSQLite(ctx, s, member, sqlite); err != nil {
				return err
			}
		}
		if a.resetPending(s) {
			return a.clusterReset(ctx, s, member)
		}
		if !s.EtcdDisableSnapshots {
			go a.scheduleSnapshots(ctx, s, nodeName)
		}
	}
	plan, err := a.controlPlane(s, lay, n, staged.DeployControllerArgs())
	if err != nil {
		return err
	}
	// The supervisor's identity, for the controllers that run as it.
	supAPI, err := localAPI(s, lay, "client-supervisor")
	if err != nil {
		return err
	}
	var record *recordSync
	if member != nil {
		cli, err := localEtcdClient(s.DataDir)
		if err != nil {
			return err
		}
		record = &recordSync{store: bootstrap.Store{KV: cli}, lay: lay, out: a.stderr}
		go record.run(ctx, 5*time.Minute)
	}
	enc := a.secretsEncryptController(ctx, s, lay, nodeName, supAPI, record)
	if err := a.startSupervisor(ctx, s, adv, enc, record); err != nil {
		return err
	}
	if member != nil {
		go a.promote(ctx, s, member)
	}
	if err := a.startControllers(ctx, s, lay, nodeName, supAPI); err != nil {
		return err
	}
	if !s.DisableAgent {
		for _, w := range setupNode(realHost{}) {
			fmt.Fprintln(a.stderr, "warning:", w)
		}
		pool, admin, err := serverTrust(lay)
		if err != nil {
			return err
		}
		go a.watchNode(ctx, httpsClient(pool, &admin), fmt.Sprintf("https://127.0.0.1:%d", s.APIServerPortOrDefault()), nodeName, serverNodeMeta(nodeName, nodeIPs, s.NodeExternalIPs, member))
	}
	up := fmt.Sprintf("k3s server is up: API on https://127.0.0.1:%d, kubeconfig %s", s.HTTPSListenPort, s.WriteKubeconfig)
	writeAdmin := func() error {
		return certs.WriteAdminKubeconfig(s.DataDir, s.WriteKubeconfig, s.HTTPSListenPort, s.WriteKubeconfigMode)
	}
	return a.runPlan(ctx, filepath.Join(s.DataDir, LogDir), plan, up, func(run *processes.Runner) {
		go watchCertificates(ctx, certCheckInterval(a.lookupEnv), certOpts, writeAdmin, run, a.stderr)
	})
}

// serverNodeMeta is a server node's metadata: the addresses, k3s's role
// labels (control-plane and master; etcd with embedded etcd), and with
// embedded etcd the member's name and address, by which the member is
// removed when the node is deleted.
func serverNodeMeta(name string, nodeIPs, external []netip.Addr, m *etcdMember) nodeMeta {
	meta := nodeMeta{
		Labels:      map[string]string{"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true"},
		Annotations: nodeAnnotations(name, nodeIPs, external),
	}
	if m != nil {
		meta.Labels["node-role.kubernetes.io/etcd"] = "true"
		meta.Annotations[etcdNodeNameAnnotation] = m.name
		meta.Annotations["etcd.k3s.cattle.io/node-address"] = m.opts.Address.String()
	}
	return meta
}

// startControllers runs, in this process, the node controller (CoreDNS's
// NodeHosts, deleted nodes' password secrets) and, unless disabled, the
// cloud controller (node addresses, the uninitialized taint), each as the
// identity k3s gives it, and ServiceLB (LoadBalancer Services, unless
// disable: servicelb; as the supervisor, api: it manages DaemonSets),
// against the local API server, and unless disable-helm-controller the Helm
// controller (as the supervisor too).
func (a *app) startControllers(ctx context.Context, s *config.ServerConfig, lay datadir.Layout, nodeName string, api *kubeapi.Client) error {
	logf := func(f string, args ...any) { fmt.Fprintf(a.stderr, f+"\n", args...) }
	nc := &nodecontroller.Controller{API: api, Logf: logf}
	if embeddedEtcd(s) {
		nc.Deleted = a.removeEtcdMember(s, nodeName)
	}
	go nc.Run(ctx)
	if !s.Disabled("servicelb") {
		go (&servicelb.Controller{API: api, Namespace: s.ServiceLBNamespace, Registry: s.SystemDefaultRegistry, Identity: nodeName, Logf: logf}).Run(ctx)
	} else {
		go servicelb.DeleteAll(ctx, api, s.ServiceLBNamespace, logf)
	}
	if !s.DisableHelmController {
		cfg, err := localRESTConfig(s, lay, "client-supervisor")
		if err != nil {
			return err
		}
		image := s.HelmJobImage
		if image == "" {
			image = helmcontroller.DefaultImage(s.SystemDefaultRegistry)
		}
		go helmcontroller.Run(ctx, helmcontroller.Options{Config: cfg, JobImage: image, Identity: nodeName, Logf: logf})
	}
	if s.DisableCloudController {
		return nil
	}
	ccm, err := localAPI(s, lay, "client-k3s-cloud-controller")
	if err != nil {
		return err
	}
	go (&cloudprovider.Controller{API: ccm, Logf: logf}).Run(ctx)
	return nil
}

// secretsEncryptController is the server side of `k3s secrets-encrypt`,
// as the supervisor: it rewrites every Secret and patches this server's
// node. With secrets-encryption it records the rotation stage once the
// node exists; without, it answers status (disabled) and refuses changes.
func (a *app) secretsEncryptController(ctx context.Context, s *config.ServerConfig, lay datadir.Layout, nodeName string, api *kubeapi.Client, record *recordSync) *secretsencrypt.Controller {
	c := &secretsencrypt.Controller{
		API:        api,
		ConfigPath: filepath.Join(lay.Cred(), "encryption-config.json"),
		StatePath:  filepath.Join(lay.Cred(), "encryption-state.json"),
		NodeName:   nodeName,
		Provider:   s.SecretsEncryptionProvider,
		Logf:       func(f string, args ...any) { fmt.Fprintf(a.stderr, f+"\n", args...) },
	}
	if s.DisableAgent {
		c.NodeName = ""
	}
	if record != nil {
		// The other servers take each change from the cluster's record
		// when they restart.
		c.Recorded = func(ctx context.Context) {
			if err := record.once(ctx); err != nil {
				fmt.Fprintf(a.stderr, "bootstrap data: the new encryption config is not in the datastore yet (%v); this server tries again every 5 minutes\n", err)
			}
		}
	}
	if s.SecretsEncryption {
		go c.Start(ctx)
	}
	return c
}

// localRESTConfig is localAPI for client-go: the certificate files are
// read again at each handshake, so a rotation needs no restart.
func localRESTConfig(s *config.ServerConfig, lay datadir.Layout, cert string) (*rest.Config, error) {
	c := &rest.Config{
		Host: fmt.Sprintf("https://127.0.0.1:%d", s.APIServerPortOrDefault()),
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   filepath.Join(lay.TLS(), "server-ca.crt"),
			CertFile: filepath.Join(lay.TLS(), cert+".crt"),
			KeyFile:  filepath.Join(lay.TLS(), cert+".key"),
		},
		UserAgent: "k3s-" + cert,
	}
	if _, err := os.Stat(c.CertFile); err != nil {
		return nil, err
	}
	return c, nil
}

// localAPI is a client of this server's kube-apiserver with the client
// certificate server/tls/<cert>.crt.
func localAPI(s *config.ServerConfig, lay datadir.Layout, cert string) (*kubeapi.Client, error) {
	ca, err := os.ReadFile(filepath.Join(lay.TLS(), "server-ca.crt"))
	if err != nil {
		return nil, err
	}
	// Read again after a rotation (watchCertificates).
	pair, err := certs.LoadKeyPair(filepath.Join(lay.TLS(), cert+".crt"), filepath.Join(lay.TLS(), cert+".key"))
	if err != nil {
		return nil, err
	}
	return kubeapi.NewWithClientCert(fmt.Sprintf("https://127.0.0.1:%d", s.APIServerPortOrDefault()), ca, pair.GetClientCertificate)
}

// startSupervisor opens the supervisor listener on bind-address:
// https-listen-port (the join API, and the Kubernetes API passed to the
// apiserver on 127.0.0.1:apiserver-port) and serves it until ctx ends.
// Nothing when apiserver-port is https-listen-port: the apiserver serves
// that port itself and agents cannot join.
func (a *app) startSupervisor(ctx context.Context, s *config.ServerConfig, adv netip.Addr, enc *secretsencrypt.Controller, record *recordSync) error {
	if s.APIServerPortOrDefault() == s.HTTPSListenPort {
		fmt.Fprintf(a.stderr, "warning: apiserver-port is https-listen-port (%d): no supervisor listener, agents cannot join this server\n", s.HTTPSListenPort)
		return nil
	}
	bind := s.BindAddress
	if bind == "" {
		bind = "0.0.0.0"
	}
	sup := &supervisor.Server{
		DataDir:          s.DataDir,
		Listen:           net.JoinHostPort(bind, strconv.Itoa(s.HTTPSListenPort)),
		Port:             s.HTTPSListenPort,
		AdvertiseAddress: adv,
		APIServer:        fmt.Sprintf("https://127.0.0.1:%d", s.APIServerPortOrDefault()),
		Cluster:          supervisor.ClusterConfigOf(s),
		AgentTokenSet:    s.AgentToken != "" || s.AgentTokenFile != "",
		Logf:             func(f string, args ...any) { fmt.Fprintf(a.stderr, f+"\n", args...) },
		EncryptStatus:    enc.ServeStatus,
		EncryptConfig:    enc.ServeConfig,
	}
	if embeddedEtcd(s) {
		sup.DBInfo = etcdDBInfo(s.DataDir)
	}
	if record != nil {
		sup.Record = &record.store
	}
	if err := sup.Load(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", sup.Listen)
	if err != nil {
		return fmt.Errorf("supervisor: https-listen-port: %w", err)
	}
	go func() {
		if err := sup.Serve(ctx, ln); err != nil {
			fmt.Fprintln(a.stderr, "k3s:", err)
		}
	}()
	return nil
}

// advertiseAddress is the address other nodes reach this server at:
// advertise-address, else the first node IP.
func advertiseAddress(s *config.ServerConfig, nodeIPs []netip.Addr) netip.Addr {
	if p, err := netip.ParseAddr(s.AdvertiseAddress); err == nil {
		return p
	}
	return nodeIPs[0]
}

// writeEgressSelectorConfig writes server/etc/egress-selector-config.yaml,
// which the apiserver reads unless egress-selector-mode is disabled. k3s
// routes "cluster" egress through its supervisor's tunnel; this runtime has
// no tunnel yet, so every mode connects directly (what k3s's "disabled"
// mode does), keeping the apiserver flags the same as k3s's.
func writeEgressSelectorConfig(s *config.ServerConfig, lay datadir.Layout) error {
	if s.EgressSelectorMode == "disabled" {
		return nil
	}
	const body = `apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: Direct
`
	p := filepath.Join(lay.ServerEtc(), "egress-selector-config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		return fmt.Errorf("egress selector config: %w", err)
	}
	return nil
}

func (a *app) writeAgentConfigs(s *config.ServerConfig, lay datadir.Layout, n *componentargs.Node) error {
	if s.Snapshotter == "stargz" && s.ContainerRuntimeEndpoint == "" {
		if err := stargzSupported(realHost{}); err != nil {
			return err
		}
	}
	kc, err := n.KubeletConfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(lay.KubeletConfigDir(), componentargs.KubeletConfigFileName), kc, 0o600); err != nil {
		return err
	}
	// crictl's config, as k3s writes it: `k3s crictl` (and crictl with
	// CRI_CONFIG_FILE) talks to this node's runtime with no flags.
	if err := os.WriteFile(lay.CrictlConfig(), []byte("runtime-endpoint: "+n.CRIEndpoint()+"\n"), 0o600); err != nil {
		return err
	}
	cc := &containerdcfg.Config{
		Root: lay.ContainerdRoot(), State: componentargs.ContainerdState, Address: componentargs.ContainerdSocket,
		Snapshotter: s.Snapshotter, SandboxImage: s.PauseImage, CNIBinDir: "/usr/lib/ballast/cni",
		CNIConfDir: lay.CNIConf(), CertsDir: lay.ContainerdCertsD(), SELinux: s.SELinux,
		RestrictOOMScoreAdj: s.Rootless || !hasCapability(realHost{}, capSysResource),
		DefaultRuntime:      s.DefaultRuntime, Runtimes: containerdcfg.FindNVIDIARuntimes(os.Getenv("PATH"), os.Stat),
		// Not in the base config; templates written for k3s read them.
		PrivateRegistry: s.PrivateRegistry, NodeName: n.NodeName, NodeIPs: n.NodeIPs,
		NoFlannel: s.FlannelBackend == "none", InUserNS: inUserNS(realHost{}),
	}
	if s.Snapshotter == "stargz" {
		cc.ImageServiceSocket = componentargs.StargzImageSocket
	}
	if data, err := os.ReadFile(s.PrivateRegistry); err == nil {
		if cc.Registry, err = containerdcfg.ParseRegistries(s.PrivateRegistry, data); err != nil {
			return err
		}
		for rel, body := range containerdcfg.HostsFiles(cc.Registry) {
			p := filepath.Join(lay.ContainerdCertsD(), rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(p, body, 0o600); err != nil {
				return err
			}
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	if s.FlannelBackend != "none" {
		if _, err := cniconf.WriteConflist(lay.CNIConf(), s.FlannelCNIConf); err != nil {
			return err
		}
		if s.FlannelConf == "" {
			if err := cniconf.WriteNetConf(n.FlannelNetConf(), cniconf.NetConf{ClusterCIDRs: s.ClusterCIDRs, Backend: s.FlannelBackend}); err != nil {
				return err
			}
		}
	}
	out, _, err := containerdcfg.Render(cc, lay.ContainerdEtc())
	if err != nil {
		return err
	}
	return os.WriteFile(lay.ContainerdConfig(), out, 0o600)
}

// defaultNodeIP is the first global unicast IPv4 address, as the kubelet
// would pick; 127.0.0.1 on a machine with none.
func defaultNodeIP() netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() && ip.IsGlobalUnicast() {
				return ip.Unmap()
			}
		}
	}
	return netip.MustParseAddr("127.0.0.1")
}
