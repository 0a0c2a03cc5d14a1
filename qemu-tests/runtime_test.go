package qemutest

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ballast-os/ballast/init/agent"
	"github.com/ballast-os/ballast/init/kubenode"
	"golang.org/x/crypto/ssh"
)

// TestE2ERuntime boots the runtime image (the default image plus the test
// server's container image) with 4 GiB and 2 vCPUs, on a disk exactly the
// image's size, and no network beyond QEMU's own, and checks the issue's
// single-node promises: the node comes Ready on the image's own data
// partition (k3s started without a word about space), CoreDNS,
// local-path-provisioner and metrics-server run from the images shipped
// in the image (Traefik is disabled here: TestE2EPackaged, a long
// scenario, checks it), a Deployment and NodePort Service given in
// the cloud-config answer HTTP from the host through a port forward, a pod
// resolves kubernetes.default, a local-path PVC binds and keeps data,
// `k3s kubectl top node` answers, a killed component is restarted and the
// node returns to Ready, and after a reboot the objects and data are back.

// Environment variable naming the runtime image under test.
const ImageRuntimeEnv = "BALLAST_TEST_IMAGE_RUNTIME"

// runtimeDeadline bounds power-on to a Ready node with its pods under TCG.
const runtimeDeadline = 25 * time.Minute

const testServerNodePort = 30080

func runtimeUserData(hostname, authorizedKey string) []byte {
	return fmt.Appendf(nil, `#cloud-config
hostname: %s
ssh_authorized_keys:
  - %s
ballast:
  agent:
    privileged: true
manifests:
  - name: testserver.yaml
    content: |
      apiVersion: v1
      kind: PersistentVolumeClaim
      metadata:
        name: testserver-data
        namespace: default
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: local-path
        resources:
          requests:
            storage: 64Mi
      ---
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: testserver
        namespace: default
      spec:
        replicas: 1
        selector:
          matchLabels: {app: testserver}
        template:
          metadata:
            labels: {app: testserver}
          spec:
            containers:
            - name: testserver
              image: docker.io/ballast/testserver:v1
              imagePullPolicy: Never
              ports:
              - containerPort: 8080
              volumeMounts:
              - name: data
                mountPath: /data
            volumes:
            - name: data
              persistentVolumeClaim:
                claimName: testserver-data
      ---
      apiVersion: v1
      kind: Service
      metadata:
        name: testserver
        namespace: default
      spec:
        type: NodePort
        selector: {app: testserver}
        ports:
        - port: 80
          targetPort: 8080
          nodePort: %d
      ---
      apiVersion: networking.k8s.io/v1
      kind: Ingress
      metadata:
        name: testserver
        namespace: default
      spec:
        rules:
        - http:
            paths:
            - path: /
              pathType: Prefix
              backend:
                service:
                  name: testserver
                  port: {number: 80}
`, hostname, authorizedKey, testServerNodePort)
}

func TestE2ERuntime(t *testing.T) {
	useCores(t, prioLong, 1)
	img := testImage(t, ImageRuntimeEnv, "ballast-runtime-e2e-x86_64.img")
	sc := newScenario(t, "node1")
	proxy := startProxiedRegistry(t)
	// DiskSize 0: a disk exactly the image's size, as a VM given the
	// file gets; the image's own data partition must run k3s.
	m := startMachine(t, Options{
		Disk: img, DiskSize: 0, Memory: 4096, CPUs: 2,
		UserData:      append(runtimeUserData("node1", sc.pubkey), proxyUserData()...),
		Forwards:      map[int]int{testServerNodePort: 0, 22: 0, 6443: 0},
		GuestForwards: map[string]string{guestProxyAddr: proxy.Addr},
	})
	if p := writeLoginKey(sc, m); p != "" {
		t.Logf("log in: ssh -i %s -p %d -o StrictHostKeyChecking=no root@127.0.0.1", p, m.HostPort(22))
	}
	first := waitReady(t, m)
	if first.Config.Confirmed || first.Config.TrialBoots != 1 {
		t.Errorf("the first config is confirmed before the node is Ready: %+v", first.Config)
	}
	st := waitNodeReady(t, m, runtimeDeadline)
	logNode(t, st)
	// The status names the runtime's first certificate to expire: a leaf,
	// issued at this first start for a year (the guest's clock is the host's).
	if left := time.Until(st.Node.CertExpires); st.Node.CertFile == "" || left < 300*24*time.Hour || left > 366*24*time.Hour {
		t.Errorf("agent status: first certificate to expire %q on %s, want one of this boot's, a year away", st.Node.CertFile, st.Node.CertExpires)
	}
	api := apiClient(t, m)
	// A Ready node confirms the config on trial: it is now the last good one.
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	if err := m.WaitFor(cctx, "config confirmed", time.Second, func(ctx context.Context) (bool, error) {
		s, err := m.Status(ctx)
		return err == nil && s.Config.Confirmed, nil
	}); err != nil {
		t.Errorf("the node is Ready and its config is still on trial: %v", err)
	}
	ccancel()

	waitPodsRunning(t, m, api, runtimeDeadline, map[string]string{
		"kube-system/coredns":                "k8s-app=kube-dns",
		"kube-system/local-path-provisioner": "app=local-path-provisioner",
		"kube-system/metrics-server":         "k8s-app=metrics-server",
		"default/testserver":                 "app=testserver",
	})
	checkDataPartition(t, m)
	url := fmt.Sprintf("http://127.0.0.1:%d", m.HostPort(testServerNodePort))
	body := httpGet(t, m, url+"/", 3*time.Minute)
	if !strings.Contains(body, "hello from ballast testserver") {
		t.Fatalf("GET / through the NodePort: %q", body)
	}
	if got := httpGet(t, m, url+"/resolve?name=kubernetes.default.svc.cluster.local", time.Minute); !strings.Contains(got, "10.43.0.1") {
		t.Errorf("kubernetes.default resolved in the pod to %q; want 10.43.0.1", got)
	}
	var pvc struct{ Status struct{ Phase string } }
	if err := json.Unmarshal(apiGet(t, api, "/api/v1/namespaces/default/persistentvolumeclaims/testserver-data"), &pvc); err != nil || pvc.Status.Phase != "Bound" {
		t.Errorf("PVC phase %q (%v); want Bound", pvc.Status.Phase, err)
	}
	marker := fmt.Sprintf("kept %d", time.Now().UnixNano())
	httpPut(t, url+"/file?path=marker", marker)
	if got := httpGet(t, m, url+"/file?path=marker", time.Minute); got != marker {
		t.Errorf("read back %q; want %q", got, marker)
	}
	// metrics-server answers through the API server's aggregation while
	// k3s runs with HTTPS_PROXY set: NO_PROXY carries the service CIDR.
	waitTopNode(t, m, "node1", 10*time.Minute)
	checkProxyScenario(t, m, api, proxy)

	// The Helm controller runs (its CRDs are served) with nothing to
	// install: the cloud-config disables Traefik (TestE2EPackaged, a long
	// scenario, checks it), and `disable` leaves its HelmCharts out.
	var charts struct {
		Items []struct{ Metadata struct{ Name string } }
	}
	if err := json.Unmarshal(apiGet(t, api, "/apis/helm.cattle.io/v1/helmcharts"), &charts); err != nil {
		t.Errorf("HelmCharts: %v", err)
	} else if len(charts.Items) != 0 {
		t.Errorf("HelmCharts %+v with Traefik disabled; want none", charts.Items)
	}

	// A killed component comes back and the node returns to Ready.
	nodeExec(t, m, "pkill", "-KILL", "-f", "^/usr/bin/k3s kubelet")
	time.Sleep(3 * time.Second)
	waitNodeReady(t, m, 10*time.Minute)
	waitLog(t, m, "kubelet restarted", func() bool {
		out := tryExec(m, "pgrep", "-f", "^/usr/bin/k3s kubelet")
		return strings.TrimSpace(out) != ""
	}, 5*time.Minute)

	// After a reboot the cluster comes back with its objects and data.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := m.Reboot(ctx); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	waitReady(t, m)
	st = waitNodeReady(t, m, runtimeDeadline)
	logNode(t, st)
	waitPodsRunning(t, m, api, runtimeDeadline, map[string]string{"default/testserver": "app=testserver", "kube-system/coredns": "k8s-app=kube-dns"})
	// The pods' statuses can still be the previous boot's: what proves the
	// cluster came back is the service answering through the NodePort with
	// the data the volume kept, and CoreDNS answering the pod.
	if got := httpGet(t, m, url+"/file?path=marker", 10*time.Minute); got != marker {
		t.Errorf("after reboot read back %q; want %q", got, marker)
	}
	if got := httpGet(t, m, url+"/resolve?name=kubernetes.default.svc.cluster.local", 3*time.Minute); !strings.Contains(got, "10.43.0.1") {
		t.Errorf("after reboot kubernetes.default resolved in the pod to %q; want 10.43.0.1", got)
	}
}

// writeLoginKey writes the scenario's private key into m's directory, so
// that a developer watching a slow run can log in while the test holds the
// control agent; "" when it could not.
func writeLoginKey(sc scenario, m *Machine) string {
	key, err := ssh.MarshalPrivateKey(sc.priv, "qemutest")
	if err != nil {
		return ""
	}
	p := filepath.Join(m.Dir(), "id_ed25519")
	if os.WriteFile(p, pem.EncodeToMemory(key), 0o600) != nil {
		return ""
	}
	return p
}

// apiClient talks to the guest's API server through the 6443 forward as
// the admin k3s.yaml gives (read once through the agent).
func apiClient(t *testing.T, m *Machine) *kubenode.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := apiClientFor(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func apiClientFor(ctx context.Context, m *Machine) (*kubenode.Client, error) {
	res, err := m.Exec(ctx, "cat", "/etc/rancher/k3s/k3s.yaml")
	if err != nil {
		return nil, err
	}
	if res.ExitCode != 0 {
		return nil, fmt.Errorf("cat k3s.yaml: exit %d: %s", res.ExitCode, res.Stderr)
	}
	c, err := kubenode.ParseKubeconfig("k3s.yaml", []byte(res.Stdout))
	if err != nil {
		return nil, err
	}
	c.Server = fmt.Sprintf("https://127.0.0.1:%d", m.HostPort(6443))
	return c, nil
}

func apiGet(t *testing.T, api *kubenode.Client, path string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := api.Get(ctx, path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return b
}

// waitNodeReady polls the agent's status until the node is Ready.
func waitNodeReady(t *testing.T, m *Machine, d time.Duration) *agent.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	st, err := waitNode(ctx, m)
	if err != nil {
		t.Fatalf("%v\nk3s log tail:\n%s\nconsole:\n%s", err, tryExec(m, "tail", "-n", "40", "/var/log/k3s.log"), strings.Join(m.Console(40), "\n"))
	}
	return st
}

// waitNode polls the agent's status until the node is Ready, ctx ends,
// or the machine dies (a panic fails at once, with the console).
func waitNode(ctx context.Context, m *Machine) (*agent.Status, error) {
	var last string
	var ready *agent.Status
	err := m.WaitFor(ctx, "node Ready", 5*time.Second, func(ctx context.Context) (bool, error) {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		st, err := m.Status(sctx)
		cancel()
		switch {
		case err != nil:
			last = err.Error()
		case st.Node == nil:
			last = "no node in the agent's status (no runtime started?)"
		case st.Node.Ready:
			ready = st
			return true, nil
		default:
			last = fmt.Sprintf("node %s not Ready: %s", st.Node.Name, st.Node.Error)
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w (last: %s)", err, last)
	}
	return ready, nil
}

func logNode(t *testing.T, st *agent.Status) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "node %s Ready; boot ready %d ms after kernel start", st.Node.Name, st.Boot.ReadyAfterMS)
	for _, s := range st.Node.Stages {
		fmt.Fprintf(&b, "\n  %-16s at %7d ms  (+%d ms)", s.Name, s.StartMS, s.DurationMS)
	}
	t.Log(b.String())
}

// tryExec runs argv in the guest and returns its output, or the error text.
func tryExec(m *Machine, argv ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := m.Exec(ctx, argv...)
	if err != nil {
		return "exec: " + err.Error()
	}
	return res.Stdout + res.Stderr
}

func waitLog(t *testing.T, m *Machine, what string, ok func() bool, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := m.WaitFor(ctx, what, 5*time.Second, func(context.Context) (bool, error) { return ok(), nil }); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

type podList struct {
	Items []struct {
		Metadata struct{ Name, Namespace string }
		Status   struct {
			Phase             string
			ContainerStatuses []struct {
				Ready bool
			}
		}
	}
}

// waitPodsRunning waits until, for each "namespace/name" with its label
// selector, a pod is Running with every container ready.
func waitPodsRunning(t *testing.T, m *Machine, api *kubenode.Client, d time.Duration, want map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := podsRunning(ctx, m, api, want, t.Logf); err != nil {
		t.Fatalf("%v\n%s\nevents:\n%s", err,
			tryExec(m, "k3s", "kubectl", "get", "pods", "-A", "-o", "wide"),
			tryExec(m, "k3s", "kubectl", "get", "events", "-A", "--sort-by=.lastTimestamp"))
	}
}

func podsRunning(ctx context.Context, m *Machine, api *kubenode.Client, want map[string]string, logf func(string, ...any)) error {
	pending := map[string]string{}
	for k, v := range want {
		pending[k] = v
	}
	var last string
	err := m.WaitFor(ctx, "pods running", 10*time.Second, func(ctx context.Context) (bool, error) {
		for key, sel := range pending {
			ns, _, _ := strings.Cut(key, "/")
			gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			out, err := api.Get(gctx, "/api/v1/namespaces/"+ns+"/pods?labelSelector="+url.QueryEscape(sel))
			cancel()
			var pl podList
			if err == nil {
				err = json.Unmarshal(out, &pl)
			}
			if err != nil {
				last = key + ": " + err.Error()
				continue
			}
			for _, p := range pl.Items {
				ready := p.Status.Phase == "Running" && len(p.Status.ContainerStatuses) > 0
				for _, c := range p.Status.ContainerStatuses {
					ready = ready && c.Ready
				}
				if ready {
					logf("%s running (pod %s)", key, p.Metadata.Name)
					delete(pending, key)
					break
				}
				last = fmt.Sprintf("%s: pod %s %s", key, p.Metadata.Name, p.Status.Phase)
			}
		}
		return len(pending) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("pods not running: %v (last: %s): %w", pending, last, err)
	}
	return nil
}

func waitTopNode(t *testing.T, m *Machine, node string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out string
	err := m.WaitFor(ctx, "kubectl top node", 10*time.Second, func(ctx context.Context) (bool, error) {
		out = tryExec(m, "k3s", "kubectl", "top", "node", node, "--no-headers")
		f := strings.Fields(out)
		return len(f) >= 5 && f[0] == node && strings.HasSuffix(f[1], "m"), nil
	})
	if err != nil {
		t.Fatalf("kubectl top node did not answer: %v: %s", err, out)
	}
	t.Logf("kubectl top node: %s", strings.TrimSpace(out))
}

// httpGet waits until url answers 200 and returns the body; the machine
// dying ends the wait at once.
func httpGet(t *testing.T, m *Machine, url string, d time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var last, body string
	err := m.WaitFor(ctx, "GET "+url, 3*time.Second, func(ctx context.Context) (bool, error) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, b)
			return false, nil
		}
		body = string(b)
		return true, nil
	})
	if err != nil {
		t.Fatalf("GET %s: %v (last: %s)", url, err, last)
	}
	return body
}

func httpPut(t *testing.T, url, body string) {
	t.Helper()
	if err := tryPut(url, body); err != nil {
		t.Fatalf("PUT %s: %v", url, err)
	}
}

func tryPut(url, body string) error {
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// checkHelmInstalls checks that the Helm controller installed each
// packaged HelmChart in kube-system: its helm-install-<name> Job
// succeeded (k3s's `kubectl get pods -A` shows the pod Completed).
func checkHelmInstalls(t *testing.T, api *kubenode.Client, charts ...string) {
	t.Helper()
	for _, name := range charts {
		var job struct {
			Status struct{ Succeeded int }
		}
		if err := json.Unmarshal(apiGet(t, api, "/apis/batch/v1/namespaces/kube-system/jobs/helm-install-"+name), &job); err != nil || job.Status.Succeeded < 1 {
			t.Errorf("job kube-system/helm-install-%s: succeeded %d (%v); want the chart installed", name, job.Status.Succeeded, err)
		}
	}
}
